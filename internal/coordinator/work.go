package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
)

// autoPackMaxBytes: an auto-packed group whose message would be larger
// goes out one message per item instead, as if it had been unpacked.
const autoPackMaxBytes = 64 << 10

// pendingPub is a work publish not yet acknowledged.
type pendingPub struct {
	to  int // the publish covers items up to here
	msg *nats.Msg
	fut jetstream.PubAckFuture
}

// workMessage encodes the work message of items [from, to) in a form,
// first delivered as attempt.
func (d *driver) workMessage(from, to, attempt int, form aggregate.WorkForm) (*nats.Msg, error) {
	wm := messages.NewWorkMessage(d.batch, d.req.Activity, d.m.State().Options)
	wm.Item, wm.Attempt = from, attempt
	if to-from == 1 {
		input, ref, err := d.input(from)
		if err != nil {
			return nil, err
		}
		wm.Input, wm.InputRef = input, ref
	} else {
		wm.Unpack = form == aggregate.FormAutoPack
		wm.Items = make([]messages.WorkItem, 0, to-from)
		for i := from; i < to; i++ {
			input, ref, err := d.input(i)
			if err != nil {
				return nil, err
			}
			wm.Items = append(wm.Items, messages.WorkItem{Item: i, Input: input, InputRef: ref})
		}
	}
	id := messages.WorkMsgID(d.batch, from)
	if form == aggregate.FormUnpacked {
		id = messages.UnpackedMsgID(d.batch, from)
	}
	return d.encodeWork(&wm, id)
}

// encodeWork makes the message of a work message (items and steps alike)
// with its de-duplication id (a republish after a crash is a no-op within
// the stream's duplicate window) and the batch span's trace context.
func (d *driver) encodeWork(wm *messages.WorkMessage, id string) (*nats.Msg, error) {
	c := d.c
	data, err := messages.Encode(wm)
	if err != nil {
		return nil, fmt.Errorf("encode work of %s: %w", wm.BatchID, err)
	}
	msg := nats.NewMsg(c.names.Work(wm.Activity, wm.BatchID))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, id)
	d.traceHd.Set(msg.Header)
	return msg, nil
}

// input returns item i's input, or, for one larger than the claim-check
// threshold, stores it in the object store and returns a reference.
func (d *driver) input(i int) (json.RawMessage, *messages.ObjectRef, error) {
	input, err := d.items.Item(i)
	if err != nil || len(input) <= d.c.cfg.ClaimCheckBytes {
		return input, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := messages.PayloadObject(d.batch, i, "in")
	info, err := d.c.blobs.PutBytes(ctx, name, input)
	if err != nil {
		return nil, nil, fmt.Errorf("claim check of item %d: %w", i, err)
	}
	return nil, &messages.ObjectRef{Bucket: d.c.names.BlobBucket(), Name: name, Size: info.Size, Digest: info.Digest}, nil
}

// publishWork publishes the work of items [a.From, a.To) without waiting
// for the acknowledgements (confirm retires them).
func (d *driver) publishWork(ctx context.Context, a aggregate.Action) error {
	msg, err := d.workMessage(a.From, a.To, 1, a.Form)
	if err == nil && a.Form == aggregate.FormAutoPack && len(msg.Data) > autoPackMaxBytes {
		for i := a.From; i < a.To && err == nil; i++ {
			if msg, err = d.workMessage(i, i+1, 1, aggregate.FormUnpacked); err == nil {
				err = d.publish(ctx, msg, i+1)
			}
		}
		return d.itemsFailed(ctx, err)
	}
	if err == nil {
		err = d.publish(ctx, msg, a.To)
	}
	return d.itemsFailed(ctx, err)
}

// itemsFailed ends the batch when its items cannot be read; it passes on
// only the driver's own errors.
func (d *driver) itemsFailed(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	d.feed(aggregate.ItemsUnreadable{Err: err.Error()})
	return nil
}

func (d *driver) publish(ctx context.Context, msg *nats.Msg, to int) error {
	d.c.keepWorkStream()
	var fut jetstream.PubAckFuture
	err := d.retry(ctx, "publish work", func(ctx context.Context) (err error) {
		fut, err = d.c.publishAsync(ctx, msg)
		return err
	})
	if err != nil {
		return err
	}
	n := to - d.published()
	d.pending = append(d.pending, pendingPub{to: to, msg: msg, fut: fut})
	d.inFlight += n
	d.c.cfg.Metrics.Published(d.req.Activity, n)
	return nil
}

// published is where the last publish made ends.
func (d *driver) published() int {
	if len(d.pending) > 0 {
		return d.pending[len(d.pending)-1].to
	}
	return d.stored
}

// confirm retires acknowledged publishes in order and publishes failed
// ones again, so that the checkpoint's published watermark only covers
// items the work stream has stored. With wait, it waits until every
// publish is stored.
func (d *driver) confirm(ctx context.Context, wait bool) error {
	defer func() { d.feed(aggregate.WorkStored{Through: d.stored}) }()
	for len(d.pending) > 0 {
		p := d.pending[0]
		done, err := pubResult(ctx, p.fut, wait)
		if !done {
			return ctx.Err()
		}
		if err != nil {
			d.log.Warn().Err(err).Int("items_to", p.to).Msg("work publish failed; publishing again")
			if err := d.retry(ctx, "publish work again", func(ctx context.Context) error {
				_, err := d.c.js.PublishMsg(ctx, p.msg)
				return err
			}); err != nil {
				return err
			}
		}
		d.stored = p.to
		d.pending[0] = pendingPub{}
		d.pending = d.pending[1:]
	}
	return nil
}

// pubResult reports whether a publish is acknowledged or failed, and its
// error; with wait it waits for that until ctx ends.
func pubResult(ctx context.Context, fut jetstream.PubAckFuture, wait bool) (done bool, err error) {
	if wait {
		select {
		case <-fut.Ok():
			return true, nil
		case err := <-fut.Err():
			return true, err
		case <-ctx.Done():
			return false, nil
		}
	}
	select {
	case <-fut.Ok():
		return true, nil
	case err := <-fut.Err():
		return true, err
	default:
		return false, nil
	}
}

// unpack publishes each item of an auto-packed group that has no result
// yet as a message of its own, and waits until they are stored.
func (d *driver) unpack(ctx context.Context, a aggregate.Action) error {
	return d.retry(ctx, "unpack a group", func(ctx context.Context) error {
		var futures []jetstream.PubAckFuture
		for i := a.From; i < a.To; i++ {
			_, err := d.c.stores.Results.GetLastMsgForSubject(ctx, d.c.names.Result(d.batch, i))
			if err == nil {
				continue
			} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
				return err
			}
			msg, err := d.workMessage(i, i+1, a.Attempt, aggregate.FormUnpacked)
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
		d.log.Debug().Int("item", a.From).Int("published", len(futures)).Int("attempt", a.Attempt).Msg("unpacked a group")
		return nil
	})
}

// publishAsync publishes without waiting for the acknowledgement, waiting
// only while the connection has too many publishes unacknowledged.
func (c *Coordinator) publishAsync(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	for {
		fut, err := c.js.PublishMsgAsync(msg, opts...)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return fut, err
		}
		select {
		case <-c.js.PublishAsyncComplete():
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
