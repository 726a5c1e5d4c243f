package coordinator_test

import (
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
)

// A new small batch is watched (hints, then direct gets of its stored
// results): no consumer is created for it.
func TestSmallBatchCreatesNoResultsConsumer(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil)
	items, _ := sha256Items(10)
	for range 3 {
		r := env.Submit(client.BatchRequest{Activity: "sha256", Items: items})
		if agg := env.Wait(r.BatchID, 30*time.Second); agg.Succeeded != 10 {
			t.Fatalf("aggregate %+v", agg)
		}
	}
	ctx := ctxFor(t, 10*time.Second)
	s, err := jsOf(t, env).Stream(ctx, names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Fatalf("%d consumers on %s after three small batches, want none", info.State.Consumers, names.ResultsStream())
	}
}

// checkCounted asserts an aggregate of n count items: all succeeded, in
// item order, each item run once, and the stored state agreeing.
func checkCounted(t *testing.T, env *testenv.Env, c *counter, agg *client.Aggregate, n int) {
	t.Helper()
	if agg.Status != client.StatusCompleted || agg.Succeeded != n || agg.Failed != 0 || len(agg.Results) != n {
		t.Fatalf("aggregate: status %s, %d succeeded, %d failed, %d results; want %d succeeded", agg.Status, agg.Succeeded, agg.Failed, len(agg.Results), n)
	}
	for i, r := range agg.Results {
		if r.Item != i || !r.OK {
			t.Fatalf("result %d: %+v", i, r)
		}
		if calls := c.calls[i].Load(); calls != 1 {
			t.Errorf("item %d ran %d times", i, calls)
		}
	}
	st := batchState(t, env, agg.BatchID)
	if st.Succeeded != n || st.Failed != 0 {
		t.Fatalf("final state: %d succeeded, %d failed; want %d succeeded", st.Succeeded, st.Failed, n)
	}
}

// A watched batch's checkpoints hold exact counts and a stream position,
// read from the stored results, like a consumer's.
func TestWatchedBatchCheckpointsExactCounts(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	const n, fast = 10, 5
	c := newCounter(n)
	release := c.holdFrom(t, fast)
	env.Worker(c.register)
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(n)})
	st := waitState(t, env, r.BatchID, 10*time.Second, "5 results counted", func(st *messages.BatchState) bool {
		return st.Succeeded == fast
	})
	if st.LastSeq == 0 || st.Failed != 0 {
		t.Fatalf("checkpoint: %d succeeded, %d failed, last_seq %d", st.Succeeded, st.Failed, st.LastSeq)
	}
	release()
	checkCounted(t, env, c, env.Wait(r.BatchID, 30*time.Second), n)
}

// Hints can be lost on the way (a slow subscriber, a reconnect, a cluster
// route); here every hint after the fifth item's is dropped. The driver
// reads the stored results anyway, at least every second.
func TestLostHintsDoNotStallABatch(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	coord := env.Coordinator(nil)
	coordinator.DropHints(coord, func(item int) bool { return item >= 5 })
	const n = 20
	c := newCounter(n)
	env.Worker(c.register)
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(n)})
	checkCounted(t, env, c, env.Wait(r.BatchID, 30*time.Second), n)
}

// When direct gets fail (here the results stream stops allowing them), a
// watched batch goes on with a consumer from its position, and counts each
// item once.
func TestWatchedBatchFallsBackToAConsumer(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	const n, fast = 20, 5
	c := newCounter(n)
	release := c.holdFrom(t, fast)
	env.Worker(c.register)
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(n)})
	waitState(t, env, r.BatchID, 10*time.Second, "5 results counted", func(st *messages.BatchState) bool {
		return st.Succeeded == fast
	})
	ctx := ctxFor(t, 10*time.Second)
	js := jsOf(t, env)
	s, err := js.Stream(ctx, names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.AllowDirect = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	release()
	checkCounted(t, env, c, env.Wait(r.BatchID, 30*time.Second), n)
}

// A coordinator that stops while it watches a batch hands it over at its
// checkpoint; the next one counts the rest once.
func TestWatchedBatchHandedOver(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	first := env.Coordinator(func(c *coordinator.Config) { c.Name = "coord-a" })
	const n, fast = 10, 5
	c := newCounter(n)
	release := c.holdFrom(t, fast)
	env.Worker(c.register)
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(n)})
	waitState(t, env, r.BatchID, 10*time.Second, "5 results counted", func(st *messages.BatchState) bool {
		return st.Succeeded == fast
	})
	if err := first.Stop(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	env.Coordinator(func(c *coordinator.Config) { c.Name = "coord-b" })
	waitState(t, env, r.BatchID, 10*time.Second, "taken over", func(st *messages.BatchState) bool { return st.Owner == "coord-b" })
	release()
	checkCounted(t, env, c, env.Wait(r.BatchID, 30*time.Second), n)
}
