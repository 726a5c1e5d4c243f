package coordinator

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The work stream's keeper. When the last block of a file-stored stream
// loses its last message, the server creates a new block file (to keep the
// last sequence) and deletes the old one. In the work queue every batch's
// last ack does that: about a quarter of a millisecond of server CPU, an
// eighth of a 10-item batch's whole cost (docs/performance.md). A message
// that nobody consumes, stored in the last block, keeps the block from
// emptying.
//
// The keeper goes to Names.WorkKeeper, which no activity's consumer takes,
// with a rollup header, so the stream holds one keeper whatever the
// number of coordinators. A coordinator sends one with a batch's work at
// most every keeperEvery: the server starts a new block every few
// megabytes, and the new block needs a keeper of its own. An idle system
// sends none.
const keeperEvery = 100 * time.Millisecond

// jsErrCodeRollupFailed is the server's "rollup not permitted".
const jsErrCodeRollupFailed jetstream.ErrorCode = 10111

type workKeeper struct {
	every    atomic.Int64 // nanoseconds, keeperEvery; tests set it shorter
	last     atomic.Int64 // unix nanoseconds of the last keeper sent
	mu       sync.Mutex
	pending  jetstream.PubAckFuture
	disabled atomic.Bool
}

// keepWorkStream sends a keeper if the last one is older than keeperEvery.
// It never blocks and never fails the caller: a keeper only saves CPU.
func (c *Coordinator) keepWorkStream() {
	k := &c.keeper
	now := time.Now().UnixNano()
	last := k.last.Load()
	if now-last < k.every.Load() || k.disabled.Load() || !k.last.CompareAndSwap(last, now) {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pending != nil {
		select {
		case err := <-k.pending.Err():
			// A stream made without rollups (by an operator, with
			// coordinators not allowed to update it) refuses keepers:
			// stop sending them. Other errors pass; the next one tries.
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeRollupFailed {
				k.disabled.Store(true)
				c.log.Warn().Err(err).Str("subject", c.names.WorkKeeper()).
					Msg("the work stream refuses rollups, so its keeper message; going on without (each batch costs a little more server CPU): allow rollups on the stream to save it")
				return
			}
		default:
		}
	}
	msg := &nats.Msg{Subject: c.names.WorkKeeper(), Header: nats.Header{jetstream.MsgRollup: []string{jetstream.MsgRollupSubject}}}
	fut, err := c.js.PublishMsgAsync(msg)
	if err != nil {
		return // too many publishes pending: the next batch sends it
	}
	k.pending = fut
}
