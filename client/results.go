package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/objects"
)

// Results returns the per-item results of a batch in item order, from its
// aggregate: the results it carries, or, for a batch too large for one
// message, the object they were stored in, read as it is iterated (memory
// does not grow with the batch).
//
// A batch still running is waited for, like Wait does; bound the wait with
// ctx. A batch that does not exist yields an *Error with CodeNotFound, no
// coordinator answering ErrNoCoordinator. An error ends the iteration: it
// is yielded once, with a zero ItemResult.
//
//	for r, err := range c.Results(ctx, id) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(r.Item, r.OK)
//	}
func (c *Client) Results(ctx context.Context, batchID string) iter.Seq2[ItemResult, error] {
	return func(yield func(ItemResult, error) bool) {
		agg, err := c.finalAggregate(ctx, batchID)
		if err != nil {
			yield(ItemResult{}, err)
			return
		}
		errStop := errors.New("stop")
		err = objects.Results(ctx, c.js, agg, func(r ItemResult) error {
			if err := c.claimOutput(ctx, &r); err != nil {
				return err
			}
			if !yield(r, nil) {
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			yield(ItemResult{}, fmt.Errorf("results of %s: %w", batchID, err))
		}
	}
}

// finalAggregate returns a batch's aggregate without loading results
// stored in the object store: at once when the batch has ended, after
// waiting for it when it is running, or the status request's error (not
// found, no coordinator).
func (c *Client) finalAggregate(ctx context.Context, batchID string) (*Aggregate, error) {
	if !messages.ValidToken(batchID) {
		return nil, messages.Errorf(messages.CodeInvalidRequest, "batch_id: %q is not a batch id", batchID)
	}
	agg, err := c.storedAggregate(ctx, batchID)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, err
	}
	if agg != nil {
		return agg, nil
	}
	// No aggregate yet: ask whether the batch exists before waiting for it.
	if _, err := c.Status(ctx, batchID); err != nil {
		return nil, err
	}
	return c.awaitAggregate(ctx, batchID)
}

// awaitAggregate reads a batch's aggregate from the done stream, waiting
// for it to be published.
func (c *Client) awaitAggregate(ctx context.Context, batchID string) (*Aggregate, error) {
	// Subscribe first, then look in the done stream: an aggregate stored
	// before the subscription is in the stream, one stored after reaches
	// the subscription, which is to the aggregate the stream republishes
	// once stored (a subscription to the done subject itself could get it
	// before the stream has stored it, and a status asked then would not
	// see it yet). The server handles a connection's SUB before its next
	// request, so nothing falls between the two. No consumer is created per
	// wait.
	arrived := make(chan *nats.Msg, 1)
	sub, err := c.nc.ChanSubscribe(c.names.Aggregate(batchID), arrived)
	if err != nil {
		return nil, fmt.Errorf("wait for %s: %w", batchID, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Look in the stream again now and then: core NATS does not redeliver
	// what a reconnect lost, and a done stream set up by an older
	// coordinator does not republish.
	wait := 250 * time.Millisecond
	recheck := time.NewTimer(wait)
	defer recheck.Stop()
	for {
		agg, err := c.storedAggregate(ctx, batchID)
		if err != nil {
			return nil, err
		}
		if agg != nil {
			return agg, nil
		}
		select {
		case m := <-arrived:
			// Anyone in this connection's account can have a message
			// delivered on this subject (a reply aimed at it): only the
			// done stream's republish of this batch's aggregate counts.
			if m.Header.Get(jetstream.StreamHeader) == c.names.DoneStream() && m.Header.Get(jetstream.SubjectHeader) == c.names.Done(batchID) {
				if agg := decodeAggregate(batchID, m.Data); agg != nil {
					return agg, nil
				}
			}
		case <-recheck.C:
			wait = min(2*wait, 2*time.Second)
			recheck.Reset(wait)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// storedAggregate returns the batch's aggregate from the done stream, or
// nil if it is not there yet.
func (c *Client) storedAggregate(ctx context.Context, batchID string) (*Aggregate, error) {
	done, err := c.doneStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("aggregate of %s: %w", batchID, err)
	}
	msg, err := done.GetLastMsgForSubject(ctx, c.names.Done(batchID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("aggregate of %s: %w", batchID, err)
	}
	return decodeAggregate(batchID, msg.Data), nil
}

// doneStream looks up the done stream once per client.
func (c *Client) doneStream(ctx context.Context) (jetstream.Stream, error) {
	return c.stream(ctx, c.names.DoneStream())
}

// stream looks up a stream once per client.
func (c *Client) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.streams[name]; ok {
		return s, nil
	}
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	if c.streams == nil {
		c.streams = map[string]jetstream.Stream{}
	}
	c.streams[name] = s
	return s, nil
}

// decodeAggregate returns the aggregate of batchID that data holds, or
// nil if it holds none: whoever may publish on the done subject (or aim a
// JetStream API reply at it) can put anything there, and the coordinator
// publishes the batch's aggregate in its place.
func decodeAggregate(batchID string, data []byte) *Aggregate {
	var agg Aggregate
	if messages.Decode(data, &agg) != nil || agg.Check(batchID) != nil {
		return nil
	}
	return &agg
}
