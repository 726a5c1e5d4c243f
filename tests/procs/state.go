package procs

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
)

// BatchState reads the batch's entry in the KV bucket FANOUT_BATCHES (its
// checkpoint: counts, stream position, owner and epoch). It returns the
// error rather than failing the test, so that it can be polled.
func (e *Env) BatchState(ctx context.Context, batchID string) (*messages.BatchState, error) {
	kv, err := e.JS.KeyValue(ctx, e.Names.BatchesBucket())
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", e.Names.BatchesBucket(), err)
	}
	entry, err := kv.Get(ctx, batchID)
	if err != nil {
		return nil, fmt.Errorf("state of %s: %w", batchID, err)
	}
	var st messages.BatchState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		return nil, fmt.Errorf("state of %s: %w", batchID, err)
	}
	return &st, nil
}

// AwaitBatchState polls the batch's KV state (every 25ms) until cond holds,
// and returns it; the test fails if ctx ends first.
func (e *Env) AwaitBatchState(ctx context.Context, batchID string, cond func(*messages.BatchState) bool) *messages.BatchState {
	e.T.Helper()
	var lastErr error
	var last *messages.BatchState
	for {
		st, err := e.BatchState(ctx, batchID)
		if err == nil && cond(st) {
			return st
		}
		last, lastErr = st, err
		select {
		case <-ctx.Done():
			e.T.Fatalf("batch %s: state condition not reached: last state %+v, error %v", batchID, last, lastErr)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// WorkCount is how many messages stream FANOUT_WORK holds for the batch
// (subjects fanout.work.*.<batch>, any activity), acked or not.
func (e *Env) WorkCount(ctx context.Context, batchID string) (uint64, error) {
	s, err := e.JS.Stream(ctx, e.Names.WorkStream())
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", e.Names.WorkStream(), err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(e.Names.PurgeBatchWork(batchID)))
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", e.Names.WorkStream(), err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// AwaitNoWork polls (every 25ms) until FANOUT_WORK holds no message of the
// batch; the test fails if ctx ends first. It polls because a worker's ack
// (which removes a message from the work queue) raises no event.
func (e *Env) AwaitNoWork(ctx context.Context, batchID string) {
	e.T.Helper()
	var n uint64
	var err error
	for {
		if n, err = e.WorkCount(ctx, batchID); err == nil && n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			e.T.Fatalf("stream %s still holds %d messages of batch %s (%v)", e.Names.WorkStream(), n, batchID, err)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// ResultCounter counts the distinct items of every batch whose results it
// has seen (a core NATS subscription on fanout.result.>): an event source
// for tests that act on progress across many batches. Refused duplicate
// publishes are seen too but count once.
type ResultCounter struct {
	sub     *nats.Subscription
	names   messages.Names
	mu      sync.Mutex
	seen    map[string]map[int]bool
	n       int
	changed chan struct{}
}

// CountResults subscribes to every result of every batch.
func (e *Env) CountResults() *ResultCounter {
	e.T.Helper()
	c := &ResultCounter{names: e.Names, seen: map[string]map[int]bool{}, changed: make(chan struct{})}
	c.sub = e.subscribeAll(e.Names.ResultAll(), func(m *nats.Msg) {
		batch, item, ok := c.names.ParseResultSubject(m.Subject)
		if !ok {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		items := c.seen[batch]
		if items == nil {
			items = map[int]bool{}
			c.seen[batch] = items
		}
		if items[item] {
			return
		}
		items[item] = true
		c.n++
		close(c.changed)
		c.changed = make(chan struct{})
	})
	return c
}

// Count is the number of distinct items (over all batches) seen so far.
func (c *ResultCounter) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// Await waits until at least n distinct items have been seen, and returns
// the count; it returns ctx's error if ctx ends first.
func (c *ResultCounter) Await(ctx context.Context, n int) (int, error) {
	for {
		c.mu.Lock()
		got, changed := c.n, c.changed
		c.mu.Unlock()
		if got >= n {
			return got, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return got, fmt.Errorf("%d distinct results seen, want %d: %w", got, n, ctx.Err())
		}
	}
}
