package coordinator_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/observe"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

func named(name string) func(*coordinator.Config) {
	return func(c *coordinator.Config) { c.Name = name }
}

// Two coordinators on one server: batches submitted at once through both
// complete exactly, each aggregate published once; once idle, their
// metrics hold no item in flight, and every item was published and
// counted once between them.
func TestTwoCoordinators(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	regs := []*prometheus.Registry{observe.NewRegistry(), observe.NewRegistry()}
	for i, name := range []string{"coord-a", "coord-b"} {
		env.Coordinator(func(c *coordinator.Config) {
			c.Name, c.Metrics = name, observe.NewCoordinatorMetrics(regs[i])
		})
	}
	env.Worker(nil)
	env.Worker(nil)
	dc := countDone(t, env)

	const batches, total = 6, 100
	fail := failEvery(10)
	ids := make([]string, batches)
	var wg sync.WaitGroup
	errs := make(chan error, batches)
	for b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := env.Client.Submit(ctx, client.BatchRequest{Activity: "sleep", Items: sleepItems(total, 1, fail), Options: client.Options{MaxInFlight: 10 + b, MaxAttempts: 1}})
			if err != nil {
				errs <- err
				return
			}
			ids[b] = r.BatchID
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	owners := map[string]int{}
	for _, id := range ids {
		agg := env.Wait(id, 60*time.Second)
		checkAggregate(t, agg, client.StatusCompleted, total, total-total/10, total/10)
		for i, r := range agg.Results {
			if want := fail(i); r.Error != want {
				t.Fatalf("batch %s item %d: error %q, want %q", id, i, r.Error, want)
			}
		}
		st := finalState(t, env, id)
		if st.Epoch != 1 {
			t.Errorf("batch %s driven %d times with both coordinators up", id, st.Epoch)
		}
		owners[st.Owner]++
	}
	t.Logf("batches per coordinator: %v", owners)
	dc.check(t, env, ids...)

	// A driver lets its batch go just after the aggregate is out.
	ctx := ctxFor(t, 10*time.Second)
	for metric(t, regs[0], "fanout_batches_running")+metric(t, regs[1], "fanout_batches_running") > 0 {
		select {
		case <-ctx.Done():
			t.Fatal("coordinators still drive batches after all ended")
		case <-time.After(10 * time.Millisecond):
		}
	}
	for i, reg := range regs {
		if n := metric(t, reg, "fanout_items_in_flight"); n != 0 {
			t.Errorf("coordinator %d: %v items in flight once idle", i, n)
		}
	}
	for _, name := range []string{"fanout_items_published_total", "fanout_items_counted_total"} {
		if n := metric(t, regs[0], name) + metric(t, regs[1], name); n != batches*total {
			t.Errorf("%s: %v between the two coordinators, want %d", name, n, batches*total)
		}
	}
}

// metric sums the values of a gauge or counter over its labels.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// A coordinator that stops while driving batches hands them over: another
// coordinator resumes each from its checkpoint, and every item is counted
// exactly once across the two. Both with results held in memory and, for
// batches over InMemoryResults, with coord-a writing them to the results
// object as it counts and coord-b, which did not see them all, reading
// them back from the stream.
func TestBatchesMoveToAnotherCoordinator(t *testing.T) {
	t.Parallel()
	for _, inMemory := range []int{0, 10} {
		t.Run(fmt.Sprintf("in-memory results %d", inMemory), func(t *testing.T) {
			t.Parallel()
			batchesMoveToAnotherCoordinator(t, inMemory)
		})
	}
}

func batchesMoveToAnotherCoordinator(t *testing.T, inMemory int) {
	env := testenv.Server(t)
	named := func(name string) func(*coordinator.Config) {
		return func(c *coordinator.Config) { c.Name, c.InMemoryResults = name, inMemory }
	}
	a := env.Coordinator(named("coord-a"))
	g := newGate()
	const total, half = 60, 30
	g.pass = func(item int) bool { return item < half }
	env.Worker(func(w *worker.Worker) { w.HandleFunc("gate", g.handle) }, worker.WithConcurrency(64))
	t.Cleanup(g.open)
	dc := countDone(t, env)

	// Items 0-29 finish at once, 30-59 wait for the gate; max_in_flight
	// 20 leaves items 50-59 unpublished when coord-a stops.
	const batches, inFlight = 3, 20
	ids := make([]string, batches)
	for b := range ids {
		ids[b] = env.Submit(client.BatchRequest{Activity: "gate", Items: echoItems(total), Options: client.Options{MaxInFlight: inFlight}}).BatchID
	}
	for _, id := range ids {
		waitState(t, env, id, 30*time.Second, fmt.Sprintf("%d items counted and %d published by coord-a", half, half+inFlight), func(st *messages.BatchState) bool {
			return st.Owner == "coord-a" && st.Succeeded == half && st.Published == half+inFlight
		})
	}
	env.Coordinator(named("coord-b"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		waitState(t, env, id, 30*time.Second, "coord-b taking over", func(st *messages.BatchState) bool {
			return st.Owner == "coord-b"
		})
	}
	g.open()
	for _, id := range ids {
		agg := env.Wait(id, 60*time.Second)
		checkAggregate(t, agg, client.StatusCompleted, total, total, 0)
		for i, r := range agg.Results {
			if string(r.Output) != string(echoItems(total)[i]) {
				t.Fatalf("batch %s item %d: output %s", id, i, r.Output)
			}
		}
		if st := finalState(t, env, id); st.Epoch != 2 || st.Owner != "coord-b" || st.Succeeded != total || st.Published != total {
			t.Errorf("batch %s state after handover: epoch %d owner %s succeeded %d published %d", id, st.Epoch, st.Owner, st.Succeeded, st.Published)
		}
	}
	dc.check(t, env, ids...)
}
