package coordinator_test

import (
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
)

// A new small batch follows its results through the results stream's
// republish: no consumer is created for it.
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
	if st.Succeeded != n || st.Failed != 0 || st.Unconfirmed != nil {
		t.Fatalf("final state: %d succeeded, %d failed, unconfirmed %+v; want %d succeeded", st.Succeeded, st.Failed, st.Unconfirmed, n)
	}
}

// While a batch counts republished results, its checkpoints keep those
// counts apart (a driver taking over recounts them), and status shows them.
func TestPushCountsAreUnconfirmedUntilTheEnd(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(func(c *coordinator.Config) { c.PushWindow = time.Minute })
	const n, fast = 10, 5
	c := newCounter(n)
	release := c.holdFrom(t, fast)
	env.Worker(c.register)
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(n)})
	st := waitState(t, env, r.BatchID, 10*time.Second, "5 unconfirmed results", func(st *messages.BatchState) bool {
		return st.Unconfirmed != nil && st.Unconfirmed.Succeeded == fast
	})
	if st.Succeeded != 0 || st.Failed != 0 || st.LastSeq != 0 {
		t.Fatalf("checkpoint while pushed: %d succeeded, %d failed, last_seq %d; want all 0", st.Succeeded, st.Failed, st.LastSeq)
	}
	p, err := env.Client.Status(ctxFor(t, 10*time.Second), r.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	if p.Done != fast || p.Succeeded != fast {
		t.Fatalf("status: %d done, %d succeeded; want %d", p.Done, p.Succeeded, fast)
	}
	release()
	checkCounted(t, env, c, env.Wait(r.BatchID, 30*time.Second), n)
}

// Republished results can be lost on the way (here: the stream stops
// republishing mid-batch). After its push window the driver recounts
// every result from the stream, and counts each item once.
func TestLostPushesAreRecounted(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(func(c *coordinator.Config) { c.PushWindow = 1500 * time.Millisecond })
	const n, fast = 20, 5
	c := newCounter(n)
	release := c.holdFrom(t, fast)
	env.Worker(c.register)
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(n)})
	waitState(t, env, r.BatchID, 10*time.Second, "5 unconfirmed results", func(st *messages.BatchState) bool {
		return st.Unconfirmed != nil && st.Unconfirmed.Succeeded == fast
	})
	ctx := ctxFor(t, 10*time.Second)
	js := jsOf(t, env)
	s, err := js.Stream(ctx, names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.RePublish = nil
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	release()
	checkCounted(t, env, c, env.Wait(r.BatchID, 30*time.Second), n)
}

// A coordinator that stops while its batch counts republished results
// hands it over with the counts unconfirmed: the next one recounts them
// once, not on top of them.
func TestPushedBatchHandedOverIsRecounted(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	first := env.Coordinator(func(c *coordinator.Config) { c.PushWindow = time.Minute; c.Name = "coord-a" })
	const n, fast = 10, 5
	c := newCounter(n)
	release := c.holdFrom(t, fast)
	env.Worker(c.register)
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(n)})
	waitState(t, env, r.BatchID, 10*time.Second, "5 unconfirmed results", func(st *messages.BatchState) bool {
		return st.Unconfirmed != nil && st.Unconfirmed.Succeeded == fast
	})
	if err := first.Stop(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	env.Coordinator(func(c *coordinator.Config) { c.Name = "coord-b" })
	waitState(t, env, r.BatchID, 10*time.Second, "taken over", func(st *messages.BatchState) bool { return st.Owner == "coord-b" })
	release()
	checkCounted(t, env, c, env.Wait(r.BatchID, 30*time.Second), n)
}
