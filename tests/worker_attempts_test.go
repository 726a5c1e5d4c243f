package tests

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/tests/procs"
)

// A worker that drains on SIGTERM hands the items waiting in its buffer
// back; that must not cost them an attempt. With max_attempts 1 the items
// handed back must still run once and succeed.
func TestWorkerSIGTERMKeepsAttempts(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	victim := e.Worker("--concurrency", "2")
	e.Worker("--concurrency", "2")
	ctx := e.Context(60 * time.Second)

	const total = 20
	watch := e.WatchResults("e2e-sigterm-attempts")
	r := e.Submit(ctx, client.BatchRequest{ID: "e2e-sigterm-attempts", Activity: "sleep", Items: sleepItems(t, total, 500),
		Options: client.Options{MaxAttempts: 1}})
	if _, err := watch.Await(ctx, func(seen []procs.SeenResult) bool { return countWorker(seen, victim.Name) >= 2 }); err != nil {
		t.Fatal(err)
	}
	if code := victim.Stop(30 * time.Second); code != 0 {
		t.Errorf("%s exited %d after SIGTERM, want 0", victim.Name, code)
	}
	agg := e.Wait(ctx, r.BatchID, nil)
	checkExact(t, agg, r.BatchID, total, checkSlept(500))
	checkRecorded(t, e, r.BatchID, total)
}

// An item a worker has taken but not started (all its slots busy) must not
// be delivered again, run twice or failed as "crashed" because it waited
// longer than the ack wait. Here one 3s item holds the only slot of one
// worker while the item buffered behind it waits; the other worker is idle.
func TestItemWaitingForASlotKeepsAttempts(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	e.Worker("--concurrency", "1", "--ack-wait", "1s")
	e.Worker("--concurrency", "1", "--ack-wait", "1s")
	ctx := e.Context(60 * time.Second)

	items := []json.RawMessage{json.RawMessage(`{"ms":3000}`)}
	for range 11 {
		items = append(items, json.RawMessage(`{"ms":100}`))
	}
	watch := e.WatchResults("e2e-slot-wait")
	r := e.Submit(ctx, client.BatchRequest{ID: "e2e-slot-wait", Activity: "sleep", Items: items, Options: client.Options{MaxAttempts: 1}})
	agg := e.Wait(ctx, r.BatchID, nil)
	checkExact(t, agg, r.BatchID, len(items), func(int, json.RawMessage) error { return nil })
	checkRecorded(t, e, r.BatchID, len(items))
	runs := map[int]int{}
	for _, s := range watch.Seen() {
		if runs[s.Item]++; runs[s.Item] == 2 {
			t.Errorf("item %d: a second result was published (attempt %d on %s: %q)", s.Item, s.Attempts, s.Worker, s.Error)
		}
	}
}

// Every item a worker has taken ahead of its slots (--prefetch) is kept
// with heartbeats, not only the next one: here one worker with one slot
// takes four items of 1.5 s each (each longer than the 1 s ack wait), so
// the last one waits 4.5 s in the worker. None may be delivered again:
// with max_attempts 1 a second delivery would fail it as crashed.
func TestItemsQueuedBehindBusySlotsKeepAttempts(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	e.Worker("--concurrency", "1", "--prefetch", "3", "--ack-wait", "1s")
	ctx := e.Context(60 * time.Second)

	const total = 4
	watch := e.WatchResults("e2e-queued-wait")
	r := e.Submit(ctx, client.BatchRequest{ID: "e2e-queued-wait", Activity: "sleep", Items: sleepItems(t, total, 1500),
		Options: client.Options{MaxAttempts: 1}})
	agg := e.Wait(ctx, r.BatchID, nil)
	checkExact(t, agg, r.BatchID, total, checkSlept(1500))
	checkRecorded(t, e, r.BatchID, total)
	runs := map[int]int{}
	for _, s := range watch.Seen() {
		if s.Attempts != 1 {
			t.Errorf("item %d: result of attempt %d (%q), want every item's first attempt", s.Item, s.Attempts, s.Error)
		}
		if runs[s.Item]++; runs[s.Item] == 2 {
			t.Errorf("item %d: a second result was published", s.Item)
		}
	}
}
