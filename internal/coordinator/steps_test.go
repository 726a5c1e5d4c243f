package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

type rangeIn struct {
	N     int    `json:"n"`
	Ref   bool   `json:"ref"`
	Fail  string `json:"fail"`
	Store string `json:"store"`
}

// stepWorker serves: "numbers" (a source making n items, inline or as a
// JSON Lines object), "square", and "sum" (a reduce adding the outputs).
func stepWorker(env *testenv.Env) func(*worker.Worker) {
	return func(w *worker.Worker) {
		worker.Handle(w, "numbers", func(ctx context.Context, in rangeIn) (json.RawMessage, error) {
			if info, _ := worker.InfoFrom(ctx); info.Step != "source" {
				return nil, worker.Permanent(fmt.Errorf("numbers ran as step %q", info.Step))
			}
			if in.Fail != "" {
				return nil, worker.Permanent(fmt.Errorf("%s", in.Fail))
			}
			items := make([]string, in.N)
			for i := range items {
				items[i] = fmt.Sprintf(`{"x":%d}`, i)
			}
			if !in.Ref {
				return json.RawMessage("[" + strings.Join(items, ",") + "]"), nil
			}
			js, _ := jetstream.New(env.Conn)
			obs, err := js.ObjectStore(ctx, "FANOUT_BLOBS")
			if err != nil {
				return nil, err
			}
			if _, err := obs.PutBytes(ctx, in.Store, []byte(strings.Join(items, "\n")+"\n")); err != nil {
				return nil, err
			}
			return json.RawMessage(fmt.Sprintf(`{"items_ref":{"bucket":"FANOUT_BLOBS","name":%q}}`, in.Store)), nil
		})
		worker.Handle(w, "square", func(_ context.Context, in struct{ X int }) (int, error) { return in.X * in.X, nil })
		worker.Handle(w, "sum", func(ctx context.Context, agg client.Aggregate) (map[string]int, error) {
			if info, _ := worker.InfoFrom(ctx); info.Step != "reduce" {
				return nil, worker.Permanent(fmt.Errorf("sum ran as step %q", info.Step))
			}
			total := 0
			for _, r := range agg.Results {
				var v int
				if err := json.Unmarshal(r.Output, &v); err != nil {
					return nil, worker.Permanent(err)
				}
				total += v
			}
			return map[string]int{"sum": total, "count": len(agg.Results)}, nil
		})
	}
}

func sumOfSquares(n int) int {
	s := 0
	for i := range n {
		s += i * i
	}
	return s
}

// Dynamic fan-out and a fan-in step: a source makes the items, the items
// run, a reduce step combines the aggregate into the batch's output.
func TestSourceAndReduce(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(stepWorker(env))
	for _, ref := range []bool{false, true} {
		input, _ := json.Marshal(rangeIn{N: 250, Ref: ref, Store: "items/test.jsonl"})
		r := env.Submit(client.BatchRequest{
			Activity: "square",
			Source:   &client.StepSpec{Activity: "numbers", Input: input},
			Reduce:   &client.StepSpec{Activity: "sum"},
		})
		agg := env.Wait(r.BatchID, 30*time.Second)
		if agg.Status != client.StatusCompleted || agg.Total != 250 || agg.Succeeded != 250 {
			t.Fatalf("ref=%v: aggregate %s %d/%d (%s)", ref, agg.Status, agg.Succeeded, agg.Total, agg.Reason)
		}
		var out struct{ Sum, Count int }
		if err := json.Unmarshal(agg.Output, &out); err != nil || out.Sum != sumOfSquares(250) || out.Count != 250 {
			t.Fatalf("ref=%v: reduce output %s, want sum %d of 250", ref, agg.Output, sumOfSquares(250))
		}
		for i, res := range agg.Results {
			if string(res.Output) != fmt.Sprint(i*i) {
				t.Fatalf("ref=%v: item %d output %s", ref, i, res.Output)
			}
		}
	}
}

// A source that fails ends the batch failed, with the reason, and nothing
// fans out.
func TestSourceFailureFailsBatch(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(stepWorker(env))
	input, _ := json.Marshal(rangeIn{Fail: "listing failed"})
	r := env.Submit(client.BatchRequest{Activity: "square", Source: &client.StepSpec{Activity: "numbers", Input: input}})
	agg := env.Wait(r.BatchID, 30*time.Second)
	if agg.Status != client.StatusFailed || !strings.Contains(agg.Reason, "listing failed") || agg.Total != 0 {
		t.Fatalf("aggregate %s total %d reason %q", agg.Status, agg.Total, agg.Reason)
	}
}
