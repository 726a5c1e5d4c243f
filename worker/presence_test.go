package worker_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

// A started worker is listed by client.Workers with its activities at
// once (its first heartbeat is written as it starts), and is gone as soon
// as it has stopped.
func TestWorkerPresence(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ws, err := env.Client.Workers(ctx); err != nil || len(ws) != 0 {
		t.Fatalf("workers before any started: %+v, %v", ws, err)
	}
	noop := worker.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil })
	a := env.Worker(func(w *worker.Worker) { w.Handle("resize", noop) }, worker.WithName("alpha"), worker.WithConcurrency(3))
	env.Worker(nil, worker.WithName("beta"))

	var ws []client.WorkerPresence
	waitFor(t, "both workers listed", func() bool {
		var err error
		ws, err = env.Client.Workers(ctx)
		return err == nil && len(ws) == 2
	})
	if ws[0].Name != "alpha" || ws[1].Name != "beta" {
		t.Fatalf("workers %+v, want alpha then beta", ws)
	}
	if !slices.Equal(ws[0].Activities, []string{"echo", "resize", "sha256", "sleep"}) || ws[0].Concurrency != 3 || ws[0].InUse != 0 || ws[0].Draining {
		t.Fatalf("alpha: %+v", ws[0])
	}
	if ws[0].Host == "" || ws[0].StartedAt.IsZero() || ws[0].UpdatedAt.IsZero() || ws[0].Key == ws[1].Key {
		t.Fatalf("heartbeats %+v", ws)
	}

	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	ws, err := env.Client.Workers(ctx)
	if err != nil || len(ws) != 1 || ws[0].Name != "beta" {
		t.Fatalf("workers after alpha stopped: %+v, %v", ws, err)
	}
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		<-tick.C
	}
}
