package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

// heldActivity is an activity whose items block until released, so a test can hold
// a batch mid-run without sleeping.
type heldActivity struct {
	started chan int
	release chan struct{}
}

func newHeldActivity() *heldActivity {
	return &heldActivity{started: make(chan int, 10000), release: make(chan struct{})}
}

func (g *heldActivity) register(w *worker.Worker) {
	w.HandleFunc("held", func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		info, _ := worker.InfoFrom(ctx)
		g.started <- info.Item
		select {
		case <-g.release:
			return in, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

func numberedItems(n int) []json.RawMessage {
	items := make([]json.RawMessage, n)
	for i := range items {
		items[i] = json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
	}
	return items
}

// Live update: raising max_in_flight of a running batch lets more items out.
func TestUpdateRaisesWindow(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	g := newHeldActivity()
	env.Worker(g.register, worker.WithConcurrency(64))
	r := env.Submit(client.BatchRequest{Activity: "held", Items: numberedItems(40), Options: client.Options{MaxInFlight: 2}})
	for range 2 {
		<-g.started
	}
	// With a window of 2 nothing more may start until an item ends.
	select {
	case i := <-g.started:
		t.Fatalf("item %d started beyond the window of 2", i)
	default:
	}
	n := 10
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := env.Client.Update(ctx, r.BatchID, client.OptionsUpdate{MaxInFlight: &n})
	if err != nil {
		t.Fatal(err)
	}
	if p.Options == nil || p.Options.MaxInFlight != 10 {
		t.Fatalf("update reply options %+v", p.Options)
	}
	for range 8 { // the window grows to 10 without any item finishing
		select {
		case <-g.started:
		case <-ctx.Done():
			t.Fatal("window did not grow after update")
		}
	}
	close(g.release)
	agg := env.Wait(r.BatchID, 30*time.Second)
	if agg.Succeeded != 40 || agg.Status != client.StatusCompleted {
		t.Fatalf("aggregate %s %d/%d", agg.Status, agg.Succeeded, agg.Total)
	}
	if _, err := env.Client.Update(ctx, r.BatchID, client.OptionsUpdate{MaxInFlight: &n}); err == nil {
		t.Fatal("update of a finished batch was accepted")
	}
}

// Cancel ends a running batch: status canceled, queued work removed from the
// work stream, unfinished items marked not run, late results not counted.
func TestCancelRunningBatch(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	g := newHeldActivity()
	env.Worker(g.register, worker.WithConcurrency(8))
	r := env.Submit(client.BatchRequest{Activity: "held", Items: numberedItems(10000), Options: client.Options{MaxInFlight: 500}})
	for range 8 {
		<-g.started
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := env.Client.Cancel(ctx, r.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != client.StatusCanceled {
		t.Fatalf("cancel reply status %s", p.Status)
	}
	close(g.release) // the 8 running items now publish results that must not count
	agg := env.Wait(r.BatchID, 20*time.Second)
	if agg.Status != client.StatusCanceled || agg.Succeeded != 0 || agg.NotRun != 10000 {
		t.Fatalf("aggregate %s succeeded %d not run %d", agg.Status, agg.Succeeded, agg.NotRun)
	}
	// Acks of the released items may still be on their way; queued items
	// must be gone.
	if n := batchWork(t, env); n > 8 {
		t.Fatalf("work stream still holds %d messages after cancel", n)
	}
}

// Redrive runs exactly the failed items again, as a new linked batch.
func TestRedriveFailedItems(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	var mu sync.Mutex
	failOnce := map[int]bool{3: true, 7: true, 8: true}
	env.Worker(func(w *worker.Worker) {
		w.HandleFunc("flaky", func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			var v struct{ N int }
			_ = json.Unmarshal(in, &v)
			mu.Lock()
			defer mu.Unlock()
			if failOnce[v.N] {
				failOnce[v.N] = false
				return nil, worker.Permanent(fmt.Errorf("item %d failed", v.N))
			}
			return in, nil
		})
	})
	r := env.Submit(client.BatchRequest{Activity: "flaky", Items: numberedItems(10)})
	agg := env.Wait(r.BatchID, 20*time.Second)
	if agg.Failed != 3 {
		t.Fatalf("first run: %d failed, want 3", agg.Failed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rr, err := env.Client.Redrive(ctx, r.BatchID, "")
	if err != nil {
		t.Fatal(err)
	}
	if rr.Total != 3 || rr.BatchID == r.BatchID {
		t.Fatalf("redrive reply %+v", rr)
	}
	agg2 := env.Wait(rr.BatchID, 20*time.Second)
	if agg2.Succeeded != 3 || agg2.RedriveOf == nil || agg2.RedriveOf.BatchID != r.BatchID {
		t.Fatalf("redrive aggregate %+v", agg2)
	}
	if got := fmt.Sprint(agg2.RedriveOf.Items); got != "[3 7 8]" {
		t.Fatalf("redrive items %s, want [3 7 8]", got)
	}
	for i, res := range agg2.Results {
		var v struct{ N int }
		_ = json.Unmarshal(res.Output, &v)
		if v.N != agg2.RedriveOf.Items[i] {
			t.Fatalf("redriven item %d ran input %d", i, v.N)
		}
	}
	if _, err := env.Client.Redrive(ctx, rr.BatchID, ""); err == nil {
		t.Fatal("redrive of a batch without failures was accepted")
	}
}

// Per-activity cap: two workers with 10 slots each never run more than the
// activity's limit of 3 items at once.
func TestActivityLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	var running, peak atomic.Int64
	release := make(chan struct{})
	started := make(chan struct{}, 100)
	register := func(w *worker.Worker) {
		w.HandleFunc("capped", func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			started <- struct{}{}
			<-release
			running.Add(-1)
			return in, nil
		})
	}
	for range 2 {
		env.Worker(register, worker.WithConcurrency(10), worker.WithActivityLimit("capped", 3))
	}
	r := env.Submit(client.BatchRequest{Activity: "capped", Items: numberedItems(30)})
	for range 3 {
		<-started
	}
	close(release)
	agg := env.Wait(r.BatchID, 30*time.Second)
	if agg.Succeeded != 30 {
		t.Fatalf("succeeded %d of 30", agg.Succeeded)
	}
	if p := peak.Load(); p > 3 {
		t.Fatalf("%d items ran at once, over the limit of 3", p)
	}
}

// Cancel halfway through a 10,000-item batch: status canceled, the items
// done before the cancel counted, the rest not run, and the work stream
// holds none of its items afterwards.
func TestCancelHalfway(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil)
	items := make([]json.RawMessage, 10000)
	for i := range items {
		items[i] = json.RawMessage(`{"ms":1}`)
	}
	r := env.Submit(client.BatchRequest{Activity: "sleep", Items: items, Options: client.Options{MaxInFlight: 64}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	halfway := make(chan struct{})
	var once sync.Once
	waitErr := make(chan error, 1)
	go func() {
		_, err := env.Client.Wait(ctx, r.BatchID, func(p client.Progress) {
			if p.Done >= 5000 {
				once.Do(func() { close(halfway) })
			}
		})
		waitErr <- err
	}()
	select {
	case <-halfway:
	case <-ctx.Done():
		t.Fatal("the batch never got halfway")
	}
	p, err := env.Client.Cancel(ctx, r.BatchID)
	if err != nil || p.Status != client.StatusCanceled {
		t.Fatalf("cancel: %+v, %v", p, err)
	}
	if err := <-waitErr; err != nil {
		t.Fatal(err)
	}
	agg := env.Wait(r.BatchID, 30*time.Second)
	if agg.Status != client.StatusCanceled || agg.Succeeded < 5000 || agg.NotRun == 0 || agg.Succeeded+agg.Failed+agg.NotRun != 10000 {
		t.Fatalf("aggregate %s succeeded %d failed %d not run %d", agg.Status, agg.Succeeded, agg.Failed, agg.NotRun)
	}
	js, _ := jetstream.New(env.Conn)
	work, err := js.Stream(ctx, "FANOUT_WORK")
	if err != nil {
		t.Fatal(err)
	}
	info, err := work.Info(ctx, jetstream.WithSubjectFilter("fanout.work.sleep."+r.BatchID))
	if err != nil {
		t.Fatal(err)
	}
	// In-flight items may be acked a moment later; nothing queued stays.
	if n := info.State.Subjects["fanout.work.sleep."+r.BatchID]; n > 64 {
		t.Fatalf("the work stream holds %d of the batch's items after cancel", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err = work.Info(ctx, jetstream.WithSubjectFilter("fanout.work.sleep."+r.BatchID))
		if err != nil {
			t.Fatal(err)
		}
		if len(info.State.Subjects) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the work stream still holds %d of the batch's items 10s after cancel", info.State.Subjects["fanout.work.sleep."+r.BatchID])
		}
		time.Sleep(50 * time.Millisecond) // polling the stream: no event says "acked"
	}
}

// A batch that sets no timeout gets the coordinator's default (by default
// the retention, past which its results would expire uncounted): it ends
// timed_out instead of running forever, and status shows the timeout it
// got.
func TestDefaultTimeout(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(func(c *coordinator.Config) { c.DefaultTimeout = 500 * time.Millisecond })
	env.Worker(nil)

	r := env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(2, 3000, nil)})
	if p := status(t, env, r.BatchID); p.Options == nil || p.Options.Timeout != client.Duration(500*time.Millisecond) {
		t.Fatalf("options of a batch without a timeout: %+v", p.Options)
	}
	agg := env.Wait(r.BatchID, 30*time.Second)
	if agg.Status != client.StatusTimedOut || !strings.Contains(agg.Reason, "500ms") {
		t.Fatalf("status %s (%s), want timed_out after the default 500ms", agg.Status, agg.Reason)
	}

	// An explicit timeout still wins.
	r = env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(1, 1, nil), Options: client.Options{Timeout: client.Duration(time.Minute)}})
	if p := status(t, env, r.BatchID); p.Options == nil || p.Options.Timeout != client.Duration(time.Minute) {
		t.Fatalf("options of a batch with a timeout: %+v", p.Options)
	}
	if agg := env.Wait(r.BatchID, 30*time.Second); agg.Status != client.StatusCompleted {
		t.Fatalf("status %s (%s), want completed", agg.Status, agg.Reason)
	}
}
