package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/tests/procs"
)

// A batch runs to completion through real processes: one coordinator,
// three workers, one nats-server.
func TestSHA256BatchCompletes(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	for range 3 {
		e.Worker()
	}
	ctx := e.Context(90 * time.Second)

	const total = 2000
	inputs := make([]string, total)
	items := make([]json.RawMessage, total)
	for i := range items {
		switch i {
		case 0:
			inputs[i] = ""
		case 1:
			inputs[i] = "ünïcødé ✓ \"quoted\" \\ \n"
		default:
			inputs[i] = fmt.Sprintf("fanout e2e item %d %s", i, strings.Repeat("x", i%97))
		}
		items[i] = mustJSON(t, map[string]string{"data": inputs[i]})
	}
	r := e.Submit(ctx, client.BatchRequest{Activity: "sha256", Items: items})
	if r.Total != total {
		t.Fatalf("submit reply: total %d, want %d", r.Total, total)
	}
	agg := e.Wait(ctx, r.BatchID, nil)

	checkExact(t, agg, r.BatchID, total, func(i int, out json.RawMessage) error {
		var o struct {
			SHA256 string `json:"sha256"`
		}
		if err := json.Unmarshal(out, &o); err != nil {
			return err
		}
		sum := sha256.Sum256([]byte(inputs[i]))
		if want := hex.EncodeToString(sum[:]); o.SHA256 != want {
			return fmt.Errorf("sha256 %q, want %q", o.SHA256, want)
		}
		return nil
	})
	checkRecorded(t, e, r.BatchID, total)
}

// A worker killed with SIGKILL while it runs items loses nothing: its
// items are delivered again after the ack wait and each is counted once.
func TestWorkerKilledMidBatch(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	var workers []*procs.Proc
	for range 3 {
		workers = append(workers, e.Worker("--concurrency", "8"))
	}
	victim := workers[1]
	ctx := e.Context(90 * time.Second)

	const total = 1200
	batchID := "e2e-sigkill"
	watch := e.WatchResults(batchID)
	r := e.Submit(ctx, client.BatchRequest{ID: batchID, Activity: "sleep", Items: sleepItems(t, total, 20)})

	// Kill once the batch is well under way and the victim has finished
	// items of its own (so it is taking items, and holds some now).
	seen, err := watch.Await(ctx, func(seen []procs.SeenResult) bool {
		return len(seen) >= total/6 && countWorker(seen, victim.Name) >= 5
	})
	if err != nil {
		t.Fatalf("before the kill: %v", err)
	}
	victim.Kill()
	t.Logf("killed %s after %d results (%d of them its own)", victim.Name, len(seen), countWorker(seen, victim.Name))
	if len(seen) >= total {
		t.Fatalf("the batch was already done at the kill; the test proves nothing")
	}

	agg := e.Wait(ctx, r.BatchID, nil)
	checkExact(t, agg, r.BatchID, total, checkSlept(20))
	stored := checkRecorded(t, e, r.BatchID, total)

	// The kill interrupted items: they ran again elsewhere, as a second
	// attempt. Without this the test would not show what it claims.
	redelivered := 0
	for _, s := range stored {
		if s.Attempts >= 2 {
			redelivered++
			if s.Worker == victim.Name {
				t.Errorf("item %d: attempt %d recorded by the killed %s", s.Item, s.Attempts, victim.Name)
			}
		}
	}
	if redelivered == 0 {
		t.Errorf("no item was delivered again after %s was killed: it held none in flight?", victim.Name)
	}
	t.Logf("%d items ran again after the kill", redelivered)
}

// A worker sent SIGTERM drains: it takes no new items, finishes the ones it
// runs, publishes their results and exits 0; the others finish the batch.
func TestWorkerSIGTERMDrains(t *testing.T) {
	t.Parallel()
	const total, concurrency, prefetch = 240, 4, 4
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	var workers []*procs.Proc
	for range 3 {
		workers = append(workers, e.Worker("--concurrency", strconv.Itoa(concurrency), "--prefetch", strconv.Itoa(prefetch), "--shutdown-timeout", "20s"))
	}
	victim := workers[0]
	ctx := e.Context(90 * time.Second)

	batchID := "e2e-sigterm"
	watch := e.WatchResults(batchID)
	// Items of 100-200ms, so that a worker's items do not start and end in
	// step: when one ends, the others it runs are midway.
	durations := make([]int64, total)
	items := make([]json.RawMessage, total)
	for i := range items {
		durations[i] = 100 + int64(i*53%101)
		items[i] = mustJSON(t, map[string]int64{"ms": durations[i]})
	}
	r := e.Submit(ctx, client.BatchRequest{ID: batchID, Activity: "sleep", Items: items})

	seen, err := watch.Await(ctx, func(seen []procs.SeenResult) bool {
		return len(seen) >= total/6 && countWorker(seen, victim.Name) >= 2*concurrency
	})
	if err != nil {
		t.Fatalf("before SIGTERM: %v", err)
	}
	before := countWorker(seen, victim.Name)
	sent := time.Now()
	victim.Term()
	code, err := victim.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s exited %d, %s after SIGTERM", victim.Name, code, time.Since(sent).Round(time.Millisecond))
	if code != 0 {
		t.Errorf("%s exited %d after SIGTERM, want 0", victim.Name, code)
	}
	if victim.Output().Contains("shutdown timeout") {
		t.Errorf("%s hit its shutdown timeout: its running items did not finish", victim.Name)
	}
	if !victim.Output().Contains(`"worker stopped"`) {
		t.Errorf("%s did not log that it stopped", victim.Name)
	}

	agg := e.Wait(ctx, r.BatchID, nil)
	checkExact(t, agg, r.BatchID, total, func(i int, out json.RawMessage) error { return checkSlept(durations[i])(i, out) })
	stored := checkRecorded(t, e, r.BatchID, total)

	// The items it was running at SIGTERM finished there: results of its
	// own were stored after the signal. A worker that dropped them would
	// store none (the others would run them after the ack wait); one that
	// kept taking items would store more than it had running and taken
	// ahead (its slots plus its prefetch, give or take a result already on
	// its way at the signal): those it runs to the end rather than hand
	// them back, as a hand-back would cost them an attempt.
	after := 0
	for _, s := range stored {
		if s.Worker == victim.Name && s.Time.After(sent) {
			after++
		}
	}
	t.Logf("%s stored %d results after SIGTERM (%d seen before)", victim.Name, after, before)
	if after == 0 {
		t.Errorf("%s stored no result after SIGTERM: its running items did not finish there", victim.Name)
	}
	if after > concurrency+prefetch+1 {
		t.Errorf("%s stored %d results after SIGTERM with %d slots and %d prefetched: it kept taking items", victim.Name, after, concurrency, prefetch)
	}
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sleepItems(t *testing.T, n, ms int) []json.RawMessage {
	t.Helper()
	items := make([]json.RawMessage, n)
	for i := range items {
		items[i] = mustJSON(t, map[string]int{"ms": ms})
	}
	return items
}

func checkSlept(ms int64) func(int, json.RawMessage) error {
	return func(_ int, out json.RawMessage) error {
		var o struct {
			SleptMS int64 `json:"slept_ms"`
		}
		if err := json.Unmarshal(out, &o); err != nil {
			return err
		}
		if o.SleptMS != ms {
			return fmt.Errorf("slept_ms %d, want %d", o.SleptMS, ms)
		}
		return nil
	}
}

func countWorker(seen []procs.SeenResult, worker string) int {
	n := 0
	for _, r := range seen {
		if r.Worker == worker {
			n++
		}
	}
	return n
}

// checkExact checks a completed aggregate: exact counts, one result per
// item in item order, every output right.
func checkExact(t *testing.T, agg *client.Aggregate, batchID string, total int, checkOutput func(item int, out json.RawMessage) error) {
	t.Helper()
	if agg.BatchID != batchID {
		t.Errorf("aggregate batch_id %q, want %q", agg.BatchID, batchID)
	}
	if agg.Status != client.StatusCompleted || agg.Total != total || agg.Succeeded != total || agg.Failed != 0 || agg.NotRun != 0 {
		t.Errorf("aggregate: status %s (%s), total %d, succeeded %d, failed %d, not run %d; want completed, %d, %d, 0, 0",
			agg.Status, agg.Reason, agg.Total, agg.Succeeded, agg.Failed, agg.NotRun, total, total)
	}
	if len(agg.Results) != total {
		t.Fatalf("aggregate: %d results, want %d", len(agg.Results), total)
	}
	bad := 0
	for i, res := range agg.Results {
		var err error
		switch {
		case res.Item != i:
			err = fmt.Errorf("result %d is for item %d: not in item order, or a duplicate", i, res.Item)
		case !res.OK || res.NotRun:
			err = fmt.Errorf("not ok: %q (not_run %v)", res.Error, res.NotRun)
		default:
			err = checkOutput(i, res.Output)
		}
		if err != nil {
			if bad++; bad <= 10 {
				t.Errorf("item %d: %v (output %s)", i, err, res.Output)
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d items wrong in all", bad)
	}
}

// checkRecorded checks what the streams hold for a finished batch: exactly
// one aggregate on fanout.done.<batch>, and exactly one result per item.
func checkRecorded(t *testing.T, e *procs.Env, batchID string, total int) []procs.StoredResult {
	t.Helper()
	ctx := e.Context(30 * time.Second)
	if n := e.DoneCount(ctx, batchID); n != 1 {
		t.Errorf("stream %s holds %d messages on %s, want exactly 1", e.Names.DoneStream(), n, e.Names.Done(batchID))
	}
	stored := e.StoredResults(ctx, batchID)
	if len(stored) != total {
		t.Errorf("stream %s holds %d results of the batch, want %d", e.Names.ResultsStream(), len(stored), total)
	}
	seen := make(map[int]bool, total)
	for _, s := range stored {
		if s.Item < 0 || s.Item >= total || seen[s.Item] || s.Subject != e.Names.Result(batchID, s.Item) {
			t.Errorf("stored result on %s for item %d: out of range or a duplicate", s.Subject, s.Item)
		}
		seen[s.Item] = true
	}
	return stored
}
