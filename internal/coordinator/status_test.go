package coordinator_test

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

// progressLog collects the progress events of every batch.
type progressLog struct {
	mu     sync.Mutex
	events map[string][]client.Progress
	notify chan struct{}
}

func watchProgress(t *testing.T, env *testenv.Env) *progressLog {
	t.Helper()
	pl := &progressLog{events: map[string][]client.Progress{}, notify: make(chan struct{}, 1)}
	sub, err := env.Conn.Subscribe(names.Progress("*"), func(m *nats.Msg) {
		var p client.Progress
		if err := json.Unmarshal(m.Data, &p); err != nil {
			t.Errorf("progress event %q: %v", m.Data, err)
			return
		}
		if m.Subject != names.Progress(p.BatchID) {
			t.Errorf("progress of %s on %s", p.BatchID, m.Subject)
		}
		pl.mu.Lock()
		pl.events[p.BatchID] = append(pl.events[p.BatchID], p)
		pl.mu.Unlock()
		select {
		case pl.notify <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := env.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	return pl
}

func (pl *progressLog) of(batch string) []client.Progress {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return append([]client.Progress(nil), pl.events[batch]...)
}

// waitFor waits for a progress event of batch for which cond holds.
func (pl *progressLog) waitFor(t *testing.T, batch string, timeout time.Duration, what string, cond func(client.Progress) bool) client.Progress {
	t.Helper()
	deadline := time.After(timeout)
	for {
		for _, p := range pl.of(batch) {
			if cond(p) {
				return p
			}
		}
		select {
		case <-pl.notify:
		case <-deadline:
			ev := pl.of(batch)
			var last client.Progress
			if len(ev) > 0 {
				last = ev[len(ev)-1]
			}
			t.Fatalf("batch %s: no progress event with %s within %s; %d events, the last %d done (%s)", batch, what, timeout, len(ev), last.Done, last.Status)
		}
	}
}

func checkProgressFields(t *testing.T, p client.Progress, total int) {
	t.Helper()
	if p.Total != total || p.Done != p.Succeeded+p.Failed || p.Done > total || p.Done < 0 ||
		math.Abs(p.Percent-float64(p.Done)*100/float64(total)) > 1e-9 || p.InFlight < 0 {
		t.Errorf("inconsistent progress %+v (total %d)", p, total)
	}
}

// Status agrees with the aggregate once a batch is over, and is consistent
// (done = succeeded + failed, percent = done / total) while it runs; so are
// the progress events, which never go backwards and end with the final
// status.
func TestStatusMatchesAggregate(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil)
	pl := watchProgress(t, env)

	const total = 90
	fail := failEvery(3)
	r := env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(total, 2, fail), Options: client.Options{MaxAttempts: 1, MaxInFlight: 4}})
	if r.Total != total || r.Status != client.StatusRunning || r.Existing {
		t.Fatalf("submit reply %+v", r)
	}
	p := status(t, env, r.BatchID)
	if p.BatchID != r.BatchID || p.Activity != "sleep" {
		t.Fatalf("status right after submit: %+v", p)
	}
	checkProgressFields(t, *p, total)

	agg := env.Wait(r.BatchID, 60*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, total, total-total/3, total/3)

	p = status(t, env, r.BatchID)
	checkProgressFields(t, *p, total)
	if p.Status != agg.Status || p.Total != agg.Total || p.Succeeded != agg.Succeeded || p.Failed != agg.Failed ||
		p.Done != total || p.Percent != 100 || p.InFlight != 0 || p.ETAMS != 0 {
		t.Fatalf("status after the aggregate: %+v; aggregate %s %d/%d/%d", p, agg.Status, agg.Total, agg.Succeeded, agg.Failed)
	}

	last := pl.waitFor(t, r.BatchID, 10*time.Second, "the final status", func(p client.Progress) bool { return p.Status.Final() })
	if last.Status != agg.Status || last.Succeeded != agg.Succeeded || last.Failed != agg.Failed || last.Percent != 100 {
		t.Errorf("final progress event %+v, aggregate %s %d/%d", last, agg.Status, agg.Succeeded, agg.Failed)
	}
	prev := -1
	for _, e := range pl.of(r.BatchID) {
		checkProgressFields(t, e, total)
		if e.Done < prev {
			t.Errorf("progress went back from %d to %d done", prev, e.Done)
		}
		prev = e.Done
	}
}

// Once a client has the aggregate, status says the same: the final state
// is saved before the aggregate is published. Small fast batches, where
// nothing is checkpointed before the end, are where an aggregate could
// overtake its state.
func TestStatusIsFinalOnceTheAggregateIsOut(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil)
	for range 100 {
		r := env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(3, 0, nil)})
		agg := env.Wait(r.BatchID, 30*time.Second)
		p := status(t, env, r.BatchID)
		if p.Status != agg.Status || p.Succeeded != agg.Succeeded || p.Done != 3 {
			t.Fatalf("status right after the aggregate (%s, %d succeeded): %+v", agg.Status, agg.Succeeded, p)
		}
	}
}

// Pushed progress must not go stale: when results stop arriving for a while
// (the batch waits on a slow item), an event with the counts reached so far
// is published, not only the counts of the last event before the throttle.
func TestProgressEventsCatchUpWhenResultsPause(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	const total = 11
	relB, relC := make(chan struct{}), make(chan struct{})
	var onceB, onceC sync.Once
	openB := func() { onceB.Do(func() { close(relB) }) }
	openC := func() { onceC.Do(func() { close(relC) }) }
	env.Worker(func(w *worker.Worker) {
		// Items 0-4 at once, 5-9 when relB closes, 10 when relC closes.
		w.HandleFunc("staged", func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			info, _ := worker.InfoFrom(ctx)
			var rel chan struct{}
			switch {
			case info.Item >= 10:
				rel = relC
			case info.Item >= 5:
				rel = relB
			}
			if rel != nil {
				select {
				case <-rel:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return in, nil
		})
	})
	t.Cleanup(openB)
	t.Cleanup(openC)
	pl := watchProgress(t, env)
	r := env.Submit(client.BatchRequest{Activity: "staged", Items: echoItems(total)})

	pl.waitFor(t, r.BatchID, 5*time.Second, "5 done", func(p client.Progress) bool { return p.Done >= 5 })
	openB()
	// The state (what status reads) reaches 10 ...
	waitState(t, env, r.BatchID, 10*time.Second, "10 done", func(st *messages.BatchState) bool { return st.Succeeded == 10 })
	// ... and so must the pushed progress, while item 10 is still running.
	p := pl.waitFor(t, r.BatchID, 5*time.Second, "10 done", func(p client.Progress) bool { return p.Done >= 10 })
	if p.Status != client.StatusRunning || p.Done != 10 || p.InFlight != 1 {
		t.Errorf("progress while item 10 runs: %+v", p)
	}
	openC()
	agg := env.Wait(r.BatchID, 30*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, total, total, 0)
	if !strings.Contains(string(agg.Results[10].Output), `"n":10`) {
		t.Errorf("item 10 output %s", agg.Results[10].Output)
	}
}
