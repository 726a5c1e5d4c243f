package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
)

// List returns the most recent batches, newest first: at most limit of
// them (all when limit <= 0), as the progress view of their state
// (Options included). Batches are kept as long as the deployment's
// retention (7 days by default).
//
// List reads the batch-state bucket (FANOUT_BATCHES) directly, not through
// a coordinator, so the connection's user must be allowed to read it: the
// least-privilege client role of docs/security.md is not (it sees batches
// only through the coordinators' status requests); the coordinator's role
// or an administrator's is. Memory is bounded by limit, not by the number
// of batches. A batch whose aggregate is out is listed with its outcome
// even if its state does not say so yet (the coordinator saves the final
// state just after publishing the aggregate).
func (c *Client) List(ctx context.Context, limit int) ([]Progress, error) {
	newestFirst := func(a, b *messages.BatchState) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		if a.BatchID < b.BatchID {
			return -1
		}
		return 1
	}
	var states []*messages.BatchState
	trim := func() {
		slices.SortFunc(states, newestFirst)
		if limit > 0 && len(states) > limit {
			states = states[:limit]
		}
	}
	err := c.eachValue(ctx, c.names.BatchesBucket(), " (listing batches needs read access to it)", func(v []byte) {
		var st messages.BatchState
		if json.Unmarshal(v, &st) != nil || st.BatchID == "" {
			return
		}
		states = append(states, &st)
		if limit > 0 && len(states) >= 2*limit+64 {
			trim()
		}
	})
	if err != nil {
		return nil, err
	}
	trim()
	now := time.Now()
	out := make([]Progress, 0, len(states))
	for _, st := range states {
		if !st.Status.Final() {
			data, err := c.storedAggregate(ctx, st.BatchID)
			if err != nil {
				return nil, err
			}
			var o aggregate.Outcome
			if data != nil && messages.Decode(data, &o) == nil {
				o.Apply(st)
			}
		}
		out = append(out, st.ProgressWithOptions(now))
	}
	return out, nil
}

// eachValue calls fn with every current value of a KV bucket (none if the
// bucket does not exist yet), reading them with one watch. openHint is
// added to the error of opening the bucket.
func (c *Client) eachValue(ctx context.Context, bucket, openHint string, fn func([]byte)) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	kv, err := c.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil // nothing has written here yet
	}
	if err != nil {
		return fmt.Errorf("open bucket %s%s: %w", bucket, openHint, err)
	}
	watch, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read bucket %s: %w", bucket, err)
	}
	defer func() { _ = watch.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("read bucket %s: %w", bucket, ctx.Err())
		case e, ok := <-watch.Updates():
			if !ok {
				return fmt.Errorf("read bucket %s: the watch ended early", bucket)
			}
			if e == nil { // every current value has been delivered
				return nil
			}
			fn(e.Value())
		}
	}
}

// withTimeout bounds ctx by the request timeout when it has no deadline.
func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}
