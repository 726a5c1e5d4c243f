package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	var states []*messages.BatchState
	trim := func() {
		states = latestOf(states)
		// Stable: a batch's two states keep their order for the next trim.
		slices.SortStableFunc(states, compareNewestFirst)
		if limit > 0 && len(states) > limit {
			states = states[:limit]
		}
	}
	err := c.eachValue(ctx, c.names.BatchesBucket(), " (listing batches needs read access to it)", true, func(v []byte) {
		var st messages.BatchState
		if json.Unmarshal(v, &st) != nil || st.BatchID == "" || st.Check(st.BatchID) != nil {
			return // not a batch's state
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
		if err := c.applyOutcome(ctx, st); err != nil {
			return nil, err
		}
		out = append(out, st.ProgressWithOptions(now))
	}
	return out, nil
}

// latestOf keeps the last of each batch's states (a batch written again
// while listed comes twice, the newer after the older).
func latestOf(states []*messages.BatchState) []*messages.BatchState {
	at := make(map[string]int, len(states))
	out := states[:0]
	for _, st := range states {
		if i, ok := at[st.BatchID]; ok {
			out[i] = st
			continue
		}
		at[st.BatchID] = len(out)
		out = append(out, st)
	}
	return out
}

// eachValue calls fn with every current value of a KV bucket (none if the
// bucket does not exist yet), reading them with one watch; a value written
// while it reads may come twice. openHint is added to the error of opening
// the bucket.
//
// The watch's end of the current values can come early while keys are
// written (the pending count it is told from is not monotonic). With
// everyKey, for a bucket of one value per key that deletes none, the read
// goes on until it has seen as many keys as the bucket holds.
func (c *Client) eachValue(ctx context.Context, bucket, openHint string, everyKey bool, fn func([]byte)) error {
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
	seen := map[string]struct{}{}
	ended := false
	// Once ended, a key still missing is waited for at most this long (a
	// deleted one would never come).
	var idle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("read bucket %s: %w", bucket, ctx.Err())
		case <-idle:
			return nil
		case e, ok := <-watch.Updates():
			if !ok {
				return fmt.Errorf("read bucket %s: the watch ended early", bucket)
			}
			if e != nil {
				seen[e.Key()] = struct{}{}
				fn(e.Value())
			}
			ended = ended || e == nil
			if !ended {
				continue
			}
			if !everyKey {
				return nil
			}
			st, err := kv.Status(ctx)
			if err != nil {
				return fmt.Errorf("read bucket %s: %w", bucket, err)
			}
			if uint64(len(seen)) >= st.Values() {
				return nil
			}
			idle = time.After(time.Second)
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
