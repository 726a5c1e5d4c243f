package worker

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// numDelivered must read what msg.Metadata reads, in both forms of the ack
// subject, and fail where it fails.
func TestNumDeliveredMatchesMetadata(t *testing.T) {
	for _, reply := range []string{
		"$JS.ACK.FANOUT_WORK.work-sha256.3.120.118.1733340000000000000.5",
		"$JS.ACK.hub.ACCHASH.FANOUT_WORK.work-sha256.1.7.7.1733340000000000000.0.xyz",
		"$JS.ACK.hub.ACCHASH.FANOUT_WORK.work-sha256.12.7.7.1733340000000000000.0",
		"$JS.ACK.FANOUT_WORK.work-sha256.x.120.118.1733340000000000000.5",
		"$JS.ACK.too.short",
		"_INBOX.abc",
		"",
	} {
		msg := &nats.Msg{Subject: "fanout.work.sha256.b", Reply: reply, Sub: &nats.Subscription{}}
		got, err := numDelivered(msg)
		meta, metaErr := msg.Metadata()
		if (err == nil) != (metaErr == nil) {
			t.Errorf("%q: numDelivered error %v, Metadata error %v", reply, err, metaErr)
			continue
		}
		if err == nil && got != meta.NumDelivered {
			t.Errorf("%q: numDelivered %d, Metadata %d", reply, got, meta.NumDelivered)
		}
	}
}
