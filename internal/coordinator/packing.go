package coordinator

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Auto packing. Every work message costs the server and the clients about
// the same whatever its size, so for items that take microseconds the
// messages, not the items, are the work. A batch that does not set
// items_per_message starts with one item per message; once the driver has
// seen enough results to know the items are fast, it packs the rest of
// the batch several items per message (recorded in the state before the
// first group goes out, so a driver that takes over publishes the same
// groups; only the driver that has had the batch since its acceptance
// decides). An auto-packed group that is delivered a second time (its
// worker crashed or stopped answering, or an item asked for a retry) is
// not run again as a group: the worker asks for it to be unpacked, and the
// driver publishes each of its items that has no result yet as a message
// of its own. An item that crashes its worker thus costs the items packed
// with it one attempt, never their results.
const (
	// DefaultAutoPack is the default of Config.AutoPack.
	DefaultAutoPack = 16
	// autoPackSample is how many results a driver sees before it judges
	// how fast the batch's items are.
	autoPackSample = 64
	// autoPackGroupMS is the time one packed message aims at: the group
	// size is this over the mean item time (as workers report it: the
	// handler's wall time, which includes waiting for a CPU on a busy
	// machine), so items slower than half of it are not packed.
	autoPackGroupMS = 5.0
	// autoPackInFlight is the fewest messages a window of max_in_flight
	// items keeps out once packed, so packing costs workers little
	// parallelism (16 for the default window of 256).
	autoPackInFlight = 16
	// autoPackMinLeft: fewer items left to publish are not worth the
	// checkpoint that starts packing.
	autoPackMinLeft = 512
	// autoPackMaxBytes: an auto-packed group whose message would be larger
	// goes out one message per item instead (as if it had been unpacked).
	autoPackMaxBytes = 64 << 10
)

// groupEnd returns where the group of items that item belongs to ends
// (exclusive), and whether that group is auto packed. Groups are a pure
// function of the state, so a republished group is the same message.
func groupEnd(st *messages.BatchState, item int) (end int, auto bool) {
	if n := st.Options.ItemsPerMessage; n > 1 {
		return min((item/n+1)*n, st.Total), false
	}
	if st.PackSize > 1 && item >= st.PackFrom {
		k := (item - st.PackFrom) / st.PackSize
		return min(st.PackFrom+(k+1)*st.PackSize, st.Total), true
	}
	return min(item+1, st.Total), false
}

// isAutoGroupStart reports whether item starts an auto-packed group of
// more than one item.
func isAutoGroupStart(st *messages.BatchState, item int) bool {
	end, auto := groupEnd(st, item)
	return auto && end-item > 1 && (item-st.PackFrom)%st.PackSize == 0
}

// observe records a counted result's handler time for the packing decision.
func (d *driver) observe(res *messages.ResultMessage) {
	if d.packDecided {
		return
	}
	d.sampled++
	d.sampledMS += max(res.DurationMS, 0)
}

// maybeAutoPack decides, once per driver and once enough results are in,
// whether the rest of the batch goes out packed, and records it.
func (d *driver) maybeAutoPack(ctx context.Context) {
	st := d.st
	if d.packDecided || d.sampled < autoPackSample {
		return
	}
	d.packDecided = true
	switch {
	case st.PackSize > 0, st.Options.ItemsPerMessage != 0, d.c.cfg.AutoPack < 2:
		return // packed already, or the batch or the deployment decides
	case !d.fresh:
		// A driver that took the batch over cannot know how far its
		// predecessor published one item per message past the checkpoint:
		// a group starting at such an item would share its message id and
		// be dropped as a duplicate, with the rest of the group's items.
		return
	case st.Options.MaxAttempts < 2:
		// Unpacking a group costs its items an attempt: with one attempt
		// an item that crashes its worker would fail the others.
		return
	case st.Phase != messages.PhaseItems && st.Phase != "":
		return
	case st.Total-d.next < autoPackMinLeft:
		return
	}
	n := min(d.c.cfg.AutoPack, st.Window()/autoPackInFlight)
	if mean := d.sampledMS / float64(d.sampled); mean > 0 {
		n = min(n, int(autoPackGroupMS/mean))
	}
	if n < 2 {
		return
	}
	st.PackFrom, st.PackSize = d.next, n
	if err := d.checkpoint(ctx); err != nil {
		// Not recorded: stay unpacked. (A later driver that finds it
		// recorded after all publishes some items in both forms; each is
		// counted once.)
		st.PackFrom, st.PackSize = 0, 0
		d.log.Warn().Err(err).Msg("auto packing not recorded; items stay one per message")
		return
	}
	d.log.Debug().Int("from", st.PackFrom).Int("size", st.PackSize).Float64("mean_ms", d.sampledMS/float64(d.sampled)).Msg("auto packing")
}

// unpackRequest is an unpack request read from the results stream.
type unpackRequest struct {
	first   int
	attempt int
	seq     uint64
}

// handleUnpacks publishes the items of each requested group that have no
// result as messages of their own, then counts the requests as read. It
// runs before anything later in the results stream is counted, so a
// checkpoint never covers a request that was not handled.
func (d *driver) handleUnpacks(ctx context.Context) error {
	for len(d.unpacks) > 0 {
		u := d.unpacks[0]
		if err := d.retry(ctx, "unpack a group", func(ctx context.Context) error { return d.unpack(ctx, u) }); err != nil {
			return err
		}
		d.unpacks = d.unpacks[1:]
		d.st.LastSeq = max(d.st.LastSeq, u.seq)
		d.sinceSave++
		d.dirty = true
	}
	return nil
}

func (d *driver) unpack(ctx context.Context, u unpackRequest) error {
	st := d.st
	if !isAutoGroupStart(st, u.first) {
		d.log.Warn().Int("item", u.first).Msg("ignoring an unpack request for a group this batch did not auto pack")
		return nil
	}
	end, _ := groupEnd(st, u.first)
	var futures []jetstream.PubAckFuture
	for i := u.first; i < end; i++ {
		has, err := d.hasResult(ctx, i)
		if err != nil {
			return err
		}
		if has {
			continue
		}
		msg, err := d.workMessage(i, i+1, max(u.attempt, 1), formUnpacked)
		if err != nil {
			return err
		}
		f, err := d.c.js.PublishMsgAsync(msg)
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	d.log.Debug().Int("item", u.first).Int("published", len(futures)).Int("attempt", u.attempt).Msg("unpacked a group")
	return nil
}

// hasResult reports whether an item's result is stored.
func (d *driver) hasResult(ctx context.Context, item int) (bool, error) {
	if d.results != nil && d.results.Has(item) {
		return true, nil
	}
	_, err := d.c.stores.Results.GetLastMsgForSubject(ctx, d.c.names.Result(d.batch, item))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	default:
		return false, err
	}
}
