package worker

import (
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// numDelivered is the delivery count of a work message, read from its
// JetStream ack subject without building the whole metadata (which
// msg.Metadata does: a split, five numbers and a time, per item, for one
// number). The count is the fifth token of the short form
// ($JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>)
// and the seventh of the long one ($JS.ACK.<domain>.<account>.<stream>...,
// 11 tokens or more). Anything else is read by msg.Metadata.
func numDelivered(msg *nats.Msg) (uint64, error) {
	reply := msg.Reply
	if strings.HasPrefix(reply, "$JS.ACK.") {
		n := strings.Count(reply, ".") + 1
		pos := -1
		switch {
		case n == 9:
			pos = 4
		case n >= 11:
			pos = 6
		}
		if pos >= 0 {
			tok := reply
			for range pos {
				tok = tok[strings.IndexByte(tok, '.')+1:]
			}
			if i := strings.IndexByte(tok, '.'); i >= 0 {
				tok = tok[:i]
			}
			if v, err := strconv.ParseUint(tok, 10, 64); err == nil {
				return v, nil
			}
		}
	}
	meta, err := msg.Metadata()
	if err != nil {
		return 0, err
	}
	return meta.NumDelivered, nil
}
