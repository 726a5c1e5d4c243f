package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
)

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
	st := finalState(t, env, agg.BatchID)
	if st.Succeeded != n || st.Failed != 0 {
		t.Fatalf("final state: %d succeeded, %d failed; want %d succeeded", st.Succeeded, st.Failed, n)
	}
}

// heldBatch submits a batch of n count items whose items from fast on are
// held until release, on a worker of its own, and waits until the first
// fast are counted in the stored state.
func heldBatch(t *testing.T, env *testenv.Env, n, fast int) (c *counter, batch string, st *messages.BatchState, release func()) {
	t.Helper()
	c = newCounter(n)
	release = c.holdFrom(t, fast)
	env.Worker(c.register)
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(n)})
	st = waitState(t, env, r.BatchID, 10*time.Second, fmt.Sprintf("%d results counted", fast), func(st *messages.BatchState) bool {
		return st.Succeeded == fast
	})
	return c, r.BatchID, st, release
}

// A batch's checkpoints hold exact counts and a stream position, read
// from the stored results.
func TestCheckpointsHoldExactCounts(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	const n = 10
	c, batch, st, release := heldBatch(t, env, n, 5)
	if st.LastSeq == 0 || st.Failed != 0 {
		t.Fatalf("checkpoint: %d succeeded, %d failed, last_seq %d", st.Succeeded, st.Failed, st.LastSeq)
	}
	release()
	checkCounted(t, env, c, env.Wait(batch, 30*time.Second), n)
}

// A coordinator that stops while it drives a batch hands it over at its
// checkpoint; the next one counts the rest once.
func TestBatchHandedOverOnStop(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	first := env.Coordinator(func(c *coordinator.Config) { c.Name = "coord-a" })
	const n = 10
	c, batch, _, release := heldBatch(t, env, n, 5)
	if err := first.Stop(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	env.Coordinator(func(c *coordinator.Config) { c.Name = "coord-b" })
	waitState(t, env, batch, 10*time.Second, "taken over", func(st *messages.BatchState) bool { return st.Owner == "coord-b" })
	release()
	checkCounted(t, env, c, env.Wait(batch, 30*time.Second), n)
}

// publishAggregateAhead publishes an aggregate for a running batch, as a
// driver that then lost the batch (or died before saving its final state)
// would have.
func publishAggregateAhead(t *testing.T, env *testenv.Env, batch string, failed int) {
	t.Helper()
	results := make([]messages.ItemResult, 10)
	for i := range results {
		results[i] = messages.ItemResult{Item: i, OK: i >= failed}
	}
	body, err := json.Marshal(messages.Aggregate{
		BatchID: batch, Activity: "count", Status: messages.StatusFailed, Reason: "decided elsewhere",
		Total: 10, Succeeded: 10 - failed, Failed: failed, Results: results, FinishedAt: time.Now().UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jsOf(t, env).Publish(ctxFor(t, 10*time.Second), names.Done(batch), body, jetstream.WithMsgID(messages.DoneMsgID(batch))); err != nil {
		t.Fatal(err)
	}
}

// checkOutcome asserts that status and the stored state both report the
// aggregate published ahead.
func checkOutcome(t *testing.T, env *testenv.Env, batch string, failed int) {
	t.Helper()
	st := waitState(t, env, batch, 30*time.Second, "final", func(st *messages.BatchState) bool { return st.Status.Final() })
	if st.Status != messages.StatusFailed || st.Failed != failed || st.Succeeded != 10-failed || st.Reason != "decided elsewhere" {
		t.Fatalf("final state %s (%q), %d succeeded, %d failed; want the published aggregate's failed, %d failed", st.Status, st.Reason, st.Succeeded, st.Failed, failed)
	}
	p, err := env.Client.Status(ctxFor(t, 10*time.Second), batch)
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != client.StatusFailed || p.Failed != failed {
		t.Fatalf("status %+v, want the published aggregate's", p)
	}
}

// The aggregate is published before the final state is saved, so once one
// is out it is the outcome: a status request reports it, and a driver that
// finds one out when it finishes saves its outcome, not its own.
func TestPublishedAggregateDecides(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	_, batch, _, release := heldBatch(t, env, 10, 5)
	publishAggregateAhead(t, env, batch, 3)
	p, err := env.Client.Status(ctxFor(t, 10*time.Second), batch)
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != client.StatusFailed || p.Failed != 3 {
		t.Fatalf("status with the aggregate out and the batch still running: %+v", p)
	}
	listed, err := env.Client.List(ctxFor(t, 10*time.Second), 0)
	if err != nil || len(listed) != 1 || listed[0].BatchID != batch || listed[0].Status != client.StatusFailed || listed[0].Failed != 3 {
		t.Fatalf("list with the aggregate out and the batch still running: %+v, %v", listed, err)
	}
	release()
	checkOutcome(t, env, batch, 3)
}

// A coordinator that takes over a batch whose aggregate is out takes its
// outcome instead of running the batch on.
func TestTakeoverFindsTheAggregateOut(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	first := env.Coordinator(func(c *coordinator.Config) { c.Name = "coord-a" })
	_, batch, _, release := heldBatch(t, env, 10, 5)
	defer release() // before the worker stops: it waits for held items
	publishAggregateAhead(t, env, batch, 4)
	if err := first.Stop(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	env.Coordinator(func(c *coordinator.Config) { c.Name = "coord-b" })
	checkOutcome(t, env, batch, 4)
}

// A memory-stored results stream made anew under a running coordinator
// starts its sequences again from 1: the batches submitted after it are
// all counted.
func TestResultsStreamMadeAnewUnderACoordinator(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(func(c *coordinator.Config) { c.Topology.Memory = true })
	env.Worker(nil)
	small, _ := sha256Items(5)
	big, _ := sha256Items(300)
	for range 3 {
		r := env.Submit(client.BatchRequest{Activity: "sha256", Items: big})
		env.Wait(r.BatchID, 30*time.Second)
	}
	ctx := ctxFor(t, 60*time.Second)
	js := jsOf(t, env)
	cfg := resultsStreamConfig(ctx, t, js)
	if err := js.DeleteStream(ctx, cfg.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for i, items := range [][]json.RawMessage{small, small, big, small} {
		r := env.Submit(client.BatchRequest{Activity: "sha256", Items: items})
		if agg := env.Wait(r.BatchID, 20*time.Second); agg.Succeeded != len(items) || agg.Failed != 0 {
			t.Fatalf("batch %d (%d items) after the stream was made anew: aggregate %+v", i, len(items), agg)
		}
	}
}

// resultsStreamConfig returns the results stream's configuration.
func resultsStreamConfig(ctx context.Context, t *testing.T, js jetstream.JetStream) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(ctx, names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

// A work publish lost without a reply (on a cluster: forwarded to a stream
// leader that died, the coordinator's own connection still up) is
// published again once its acknowledgement is overdue, and the batch
// completes. Without the wait's limit the batch would never publish the
// item, and hang.
func TestLostWorkPublishIsPublishedAgain(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	const batch, lost = "lost-publish", 7
	var once sync.Once
	proxy := startDropProxy(t, env.Server.Addr().String(), func(subject string, msg []byte) bool {
		dropped := false
		if subject == names.Work("count", batch) && hasHeader(msg, "Nats-Msg-Id", messages.WorkMsgID(batch, lost)) {
			once.Do(func() { dropped = true })
		}
		return dropped
	})
	nc, err := nats.Connect(proxy.url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	env.Coordinator(func(c *coordinator.Config) { c.Conn, c.PublishAckTimeout = nc, 300*time.Millisecond })
	const n = 20
	c := newCounter(n)
	env.Worker(c.register)
	env.Submit(client.BatchRequest{ID: batch, Activity: "count", Items: echoItems(n)})
	checkCounted(t, env, c, env.Wait(batch, 20*time.Second), n)
}

// A coordinator that takes over a batch whose aggregate is out leaves a
// state whose fields keep their definitions: every item published (it
// completed), last_seq where the aggregate's counts reach (its
// Fanout-Last-Seq), updated_at the time of that last write.
func TestTakeoverStateAgreesWithTheAggregate(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	first := env.Coordinator(func(c *coordinator.Config) { c.Name = "coord-a" })
	_, batch, held, release := heldBatch(t, env, 10, 5)
	defer release()
	results := make([]messages.ItemResult, 10)
	for i := range results {
		results[i] = messages.ItemResult{Item: i, OK: true}
	}
	finished := time.Now().UTC()
	body, err := json.Marshal(messages.Aggregate{BatchID: batch, Activity: "count", Status: messages.StatusCompleted,
		Total: 10, Succeeded: 10, Results: results, FinishedAt: finished})
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := held.LastSeq + 5 // the five held items' results, counted by the decider
	msg := nats.NewMsg(names.Done(batch))
	msg.Data = body
	msg.Header.Set(messages.LastSeqHeader, strconv.FormatUint(lastSeq, 10))
	if _, err := jsOf(t, env).PublishMsg(ctxFor(t, 10*time.Second), msg, jetstream.WithMsgID(messages.DoneMsgID(batch))); err != nil {
		t.Fatal(err)
	}
	if err := first.Stop(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	env.Coordinator(func(c *coordinator.Config) { c.Name = "coord-b" })
	st := waitState(t, env, batch, 30*time.Second, "final", func(st *messages.BatchState) bool { return st.Status.Final() })
	if st.Status != messages.StatusCompleted || st.Succeeded != 10 || st.Published != 10 || st.LastSeq != lastSeq ||
		st.Owner != "coord-b" || st.UpdatedAt.Before(finished) {
		t.Fatalf("state after the takeover: %+v; want completed, published 10, last_seq %d, updated after %s", st, lastSeq, finished)
	}
}
