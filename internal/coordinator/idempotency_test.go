package coordinator_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

// Submitting the same id twice returns the same batch (existing the second
// time, with the first request's total, whatever the second one held), runs
// its items once, and publishes one aggregate; so does a third submit after
// the batch has finished.
func TestSubmitSameIDTwice(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	g := newGate()
	var calls [10]atomic.Int32
	env.Worker(func(w *worker.Worker) {
		w.HandleFunc("gate", g.handle)
		w.Use(func(next worker.Handler) worker.Handler {
			return worker.HandlerFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
				if info, ok := worker.InfoFrom(ctx); ok && info.Item < len(calls) {
					calls[info.Item].Add(1)
				}
				return next.Handle(ctx, in)
			})
		})
	})
	t.Cleanup(g.open)
	dc := countDone(t, env)

	req := client.BatchRequest{ID: "order-42", Activity: "gate", Items: echoItems(10)}
	first := env.Submit(req)
	if first.BatchID != "order-42" || first.Total != 10 || first.Existing || first.Status != client.StatusRunning {
		t.Fatalf("first submit: %+v", first)
	}
	g.waitEntered(t, 1, 30*time.Second) // it is running

	again := req
	again.Items = echoItems(3) // a different body under the same id
	second := env.Submit(again)
	if second.BatchID != "order-42" || !second.Existing || second.Total != 10 || second.Status != client.StatusRunning {
		t.Fatalf("second submit while running: %+v", second)
	}

	g.open()
	agg := env.Wait("order-42", 30*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, 10, 10, 0)

	third := env.Submit(req)
	if third.BatchID != "order-42" || !third.Existing || third.Total != 10 || third.Status != client.StatusCompleted {
		t.Fatalf("submit after the batch finished: %+v", third)
	}
	if got := env.Wait("order-42", 10*time.Second); got.FinishedAt != agg.FinishedAt {
		t.Fatalf("a second aggregate: finished at %s, then %s", agg.FinishedAt, got.FinishedAt)
	}
	for i := range calls {
		if n := calls[i].Load(); n != 1 {
			t.Errorf("item %d ran %d times", i, n)
		}
	}
	if st := batchState(t, env, "order-42"); st.Epoch != 1 || st.Total != 10 {
		t.Errorf("state %+v: driven more than once", st)
	}
	dc.check(t, env, "order-42")
}

// Many clients submitting the same id at once all get that one batch; it
// runs once.
func TestConcurrentSubmitsOfOneID(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Coordinator(nil)
	env.Worker(nil)
	dc := countDone(t, env)

	const n = 8
	replies := make([]*client.SubmitReply, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			replies[i], errs[i] = env.Client.Submit(ctx, client.BatchRequest{ID: "same", Activity: "echo", Items: echoItems(25)})
		}()
	}
	close(start)
	wg.Wait()
	created := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("submit %d: %v", i, errs[i])
		}
		if r := replies[i]; r.BatchID != "same" || r.Total != 25 {
			t.Fatalf("submit %d: %+v", i, r)
		}
		if !replies[i].Existing {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d of %d concurrent submits were told they created the batch, want exactly 1", created, n)
	}
	agg := env.Wait("same", 30*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, 25, 25, 0)
	for i := range agg.Results {
		if string(agg.Results[i].Output) != string(echoItems(25)[i]) {
			t.Fatalf("item %d output %s", i, agg.Results[i].Output)
		}
	}
	if st := batchState(t, env, "same"); st.Epoch != 1 {
		t.Errorf("batch driven %d times", st.Epoch)
	}
	dc.check(t, env, "same")
}
