package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/worker"
)

// WorkerPresence is a live worker as its last heartbeat describes it.
type WorkerPresence = worker.Presence

// Workers returns the live workers, sorted by name: those whose heartbeat
// in the workers bucket (FANOUT_WORKERS) has not expired (see
// worker.Presence). A worker that crashed is listed until its last
// heartbeat expires, worker.PresenceTTL after it was written.
func (c *Client) Workers(ctx context.Context) ([]WorkerPresence, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	bucket := c.names.WorkersBucket()
	kv, err := c.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil // no worker has started here yet
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	watch, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", bucket, err)
	}
	defer func() { _ = watch.Stop() }()
	var out []WorkerPresence
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read bucket %s: %w", bucket, ctx.Err())
		case e, ok := <-watch.Updates():
			if !ok {
				return nil, fmt.Errorf("read bucket %s: the watch ended early", bucket)
			}
			if e == nil {
				slices.SortFunc(out, func(a, b WorkerPresence) int {
					if c := strings.Compare(a.Name, b.Name); c != 0 {
						return c
					}
					return strings.Compare(a.Key, b.Key)
				})
				return out, nil
			}
			var p WorkerPresence
			if json.Unmarshal(e.Value(), &p) == nil && p.Name != "" {
				out = append(out, p)
			}
		}
	}
}
