package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/faults"
	"github.com/fanoutdev/fanout/tests/procs"
	"github.com/fanoutdev/fanout/worker"
)

// Worker faults: SIGKILL, death between publishing a result and acking it,
// an item that crashes its worker every time, retries, timeouts. Deaths
// at a chosen moment come from the worker's fault hooks (package
// internal/faults), compiled into the worker binary by its build tag
// procs.FaultsTag and switched on by FANOUT_FAULT_* variables.

// Invariants 1 (exactly-once accounting) and 3 (every accepted batch ends):
// of three workers, one is killed with SIGKILL mid-batch, then a second
// one, leaving one. The items they held come back after the ack wait (not
// before: a live worker's items are not taken from it) and run on the
// survivor; the batch completes with every item counted once.
func TestWorkersKilledAllButOne(t *testing.T) {
	t.Parallel()
	const ackWait = 3 * time.Second
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	var workers []*procs.Proc
	for range 3 {
		workers = append(workers, e.Worker("--concurrency", "8", "--ack-wait", ackWait.String()))
	}
	ctx := e.Context(120 * time.Second)

	// Long enough to still run an ack wait after the first kill, at the
	// two survivors' pace (16 slots of 30ms items: about 530 items/s).
	const total, ms = 4000, 30
	batchID := "e2e-kill-all-but-one"
	watch := e.WatchResults(batchID)
	r := e.Submit(ctx, client.BatchRequest{ID: batchID, Activity: "sleep", Items: sleepItems(t, total, ms)})

	var kills []time.Time
	for k, victim := range workers[:2] {
		from := len(watch.Seen())
		// Kill once the batch is under way and the victim is taking items
		// (it finished some since the last kill, so it holds some now).
		seen, err := watch.Await(ctx, func(seen []procs.SeenResult) bool {
			return distinctItems(seen) >= (k+1)*total/5 && countWorker(seen[from:], victim.Name) >= 5
		})
		if err != nil {
			t.Fatalf("before kill %d: %v", k+1, err)
		}
		victim.Kill()
		kills = append(kills, time.Now())
		t.Logf("kill %d: %s after %d results", k+1, victim.Name, distinctItems(seen))
		if distinctItems(seen) >= total {
			t.Fatalf("the batch was done at kill %d; the test proves nothing", k+1)
		}
		if k == 0 {
			// The first kill's items come back before the second kill, so
			// that their timing is the first kill's alone. An item the
			// victim had finished but not acked also runs again, and its
			// result is refused: only an item seen for the first time on a
			// later attempt was run again and stored.
			if _, err := watch.Await(ctx, func(seen []procs.SeenResult) bool {
				return slices.ContainsFunc(seen, func(s procs.SeenResult) bool {
					return s.Attempts >= 2 && !slices.ContainsFunc(seen, func(o procs.SeenResult) bool {
						return o.Item == s.Item && o.Attempts < s.Attempts
					})
				})
			}); err != nil {
				t.Fatalf("no item came back after kill 1: %v", err)
			}
		}
	}

	agg := e.Wait(ctx, r.BatchID, nil)
	checkExact(t, agg, r.BatchID, total, checkSlept(ms))
	stored := checkRecorded(t, e, r.BatchID, total)

	// Items came back after each kill, run by the survivor or (after the
	// first kill) the second victim while it lived, and no sooner than the
	// ack wait allows: a worker heartbeats its items every ack wait / 3, so
	// an item of a killed worker is free again at the earliest 2/3 of the
	// ack wait after the kill; ack wait / 3 leaves room for clock skew.
	var back [2]int
	earliest := time.Time{}
	for _, s := range stored {
		if s.Attempts < 2 {
			continue
		}
		switch {
		case s.Time.Before(kills[0]):
			t.Errorf("item %d: attempt %d stored at %s, before any worker was killed (%s): taken from a live worker",
				s.Item, s.Attempts, s.Time.Format(time.StampMilli), kills[0].Format(time.StampMilli))
		case s.Time.Before(kills[1]):
			back[0]++
		default:
			back[1]++
		}
		if s.Worker == workers[0].Name || (s.Worker == workers[1].Name && s.Time.After(kills[1])) {
			t.Errorf("item %d: attempt %d recorded by %s after it was killed", s.Item, s.Attempts, s.Worker)
		}
		if earliest.IsZero() || s.Time.Before(earliest) {
			earliest = s.Time
		}
	}
	t.Logf("items run again: %d after kill 1, %d after kill 2; first one back %s after kill 1 (ack wait %s)",
		back[0], back[1], earliest.Sub(kills[0]).Round(time.Millisecond), ackWait)
	if back[0] == 0 || back[1] == 0 {
		t.Errorf("items run again after the kills: %v; want some after each (the victims held none?)", back)
	}
	if d := earliest.Sub(kills[0]); d < ackWait/3 {
		t.Errorf("the first item came back %s after the kill: sooner than the ack wait (%s) allows", d, ackWait)
	}
}

// Invariants 1 (exactly-once accounting) and 2 (at-least-once execution):
// workers that publish a result and die before acking its work message
// (FANOUT_FAULT_EXIT_AFTER_RESULT, exit code 97), over and over, restarted
// as they die. Each such item runs again (its work was not acked) and its
// second result is refused by the results stream: every item is counted
// once, by its first result.
func TestWorkerDiesBetweenResultAndAck(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	rng := newRand(t)
	x := newExits(t)
	start := func() *procs.Proc {
		n := 5 + rng.IntN(25)
		p := e.StartWorkerEnv([]string{"FANOUT_FAULT_EXIT_AFTER_RESULT=" + strconv.Itoa(n)}, "--concurrency", "4")
		p.ExpectExit()
		x.watch(p)
		return p
	}
	for range 3 {
		e.WaitWorkerReady(start()) // before the submit: it needs a consumer
	}
	ctx := e.Context(120 * time.Second)

	const total, ms = 300, 10
	batchID := "e2e-result-then-death"
	watch := e.WatchResults(batchID)
	r := e.Submit(ctx, client.BatchRequest{ID: batchID, Activity: "sleep", Items: sleepItems(t, total, ms),
		Options: client.Options{MaxAttempts: 10}})
	done := waitAggregates(ctx, e, r.BatchID)

	agg, deaths := awaitRestarting(t, x, done, faults.ExitAfterResultCode, start)
	checkExact(t, agg, r.BatchID, total, checkSlept(ms))
	stored := checkRecorded(t, e, r.BatchID, total)

	// Results published more than once: at least the one each dead worker
	// published just before dying ran again elsewhere. The stored (counted)
	// one is the first attempt's.
	byItem := map[int][]procs.SeenResult{}
	for _, s := range watch.Seen() {
		byItem[s.Item] = append(byItem[s.Item], s)
	}
	twice := 0
	for _, s := range stored {
		seen := byItem[s.Item]
		if len(seen) < 2 {
			continue
		}
		twice++
		maxAttempt := 0
		for _, r := range seen {
			maxAttempt = max(maxAttempt, r.Attempts)
		}
		if s.Attempts >= maxAttempt {
			t.Errorf("item %d: stored result is attempt %d of %s, but attempts up to %d published: the first result must count",
				s.Item, s.Attempts, s.Worker, maxAttempt)
		}
	}
	t.Logf("%d workers died after publishing a result; %d items published more than once, each stored once", deaths, twice)
	if deaths == 0 || twice == 0 {
		t.Errorf("%d deaths, %d items published twice: the fault did not happen", deaths, twice)
	}
}

// Invariant 3 (every accepted batch ends): an item whose handler kills
// its worker (activity "crash", exit code 98) on every attempt. Each
// crash costs an attempt; on the delivery after max_attempts a worker
// publishes a failed result saying it gave up, without running the item,
// and removes the message from FANOUT_WORK. The batch completes. A batch
// of another activity running on the same (dying) workers completes
// exactly.
func TestItemCrashingEveryAttempt(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	x := newExits(t)
	start := func() *procs.Proc {
		p := e.StartWorkerEnv([]string{"FANOUT_FAULT_ACTIVITIES=1"}, "--concurrency", "2")
		p.ExpectExit()
		x.watch(p)
		return p
	}
	for range 2 {
		e.WaitWorkerReady(start()) // before the submit: it needs a consumer
	}
	ctx := e.Context(120 * time.Second)

	const crashItems, maxAttempts = 3, 3
	crashReq := client.BatchRequest{ID: "e2e-crash-every-time", Activity: "crash", Options: client.Options{MaxAttempts: maxAttempts}}
	for i := range crashItems {
		crashReq.Items = append(crashReq.Items, mustJSON(t, map[string]int{"i": i}))
	}
	shaItems, checkSHA := sha256Items(t, "crash-neighbour-", 400)
	crash := e.Submit(ctx, crashReq)
	// Its items can be lost in a crash too (a worker holds several): enough
	// attempts that none runs out of them here.
	other := e.Submit(ctx, client.BatchRequest{ID: "e2e-crash-neighbour", Activity: "sha256", Items: shaItems,
		Options: client.Options{MaxAttempts: 10}})
	done := waitAggregates(ctx, e, crash.BatchID, other.BatchID)

	deaths := 0
	aggs := map[string]*client.Aggregate{}
	for len(aggs) < 2 {
		select {
		case p := <-x.ch:
			deaths++
			if code := exitCode(t, p); code != faults.CrashCode {
				t.Fatalf("%s exited %d, want %d (the crash activity)", p.Name, code, faults.CrashCode)
			}
			start()
		case o := <-done:
			if o.err != nil {
				t.Fatalf("wait for %s: %v", o.id, o.err)
			}
			aggs[o.id] = o.agg
		}
	}

	agg := aggs[crash.BatchID]
	t.Logf("%d workers crashed; crash batch: %s, %d failed", deaths, agg.Status, agg.Failed)
	if agg.Status != client.StatusCompleted || agg.Total != crashItems || agg.Failed != crashItems || agg.Succeeded != 0 {
		t.Errorf("crash batch: status %s, total %d, succeeded %d, failed %d; want completed with all %d failed",
			agg.Status, agg.Total, agg.Succeeded, agg.Failed, crashItems)
	}
	checkAggregateConsistent(t, agg)
	wantErr := fmt.Sprintf("gave up after %d attempts: the worker running the item crashed or stopped answering each time", maxAttempts)
	for _, res := range agg.Results {
		if res.OK || res.Error != wantErr {
			t.Errorf("item %d: ok %v, error %q; want %q", res.Item, res.OK, res.Error, wantErr)
		}
	}
	for _, s := range checkRecorded(t, e, crash.BatchID, crashItems) {
		if s.Attempts != maxAttempts {
			t.Errorf("item %d: stored result says %d attempts, want %d", s.Item, s.Attempts, maxAttempts)
		}
	}
	// Each attempt that ran killed a worker; one worker can die holding
	// several items, so at least max_attempts crashes.
	if deaths < maxAttempts {
		t.Errorf("%d workers crashed; an item that crashes every attempt needs at least %d", deaths, maxAttempts)
	}
	// The stuck message is gone from the work queue (the give-up result is
	// acked like any other; an ack raises no event, so poll).
	e.AwaitNoWork(ctx, crash.BatchID)

	checkExact(t, aggs[other.BatchID], other.BatchID, len(shaItems), checkSHA)
	checkRecorded(t, e, other.BatchID, len(shaItems))
}

// Auto packing through the real binaries, with a worker crash: a batch of
// fast items (activity "poison") is packed by the coordinator on its own;
// one item kills the worker running it on its first attempt. The worker's
// groups come back after the ack wait; the next worker asks for each to be
// unpacked instead of running it, and every item of the poisoned group
// runs alone, on its second attempt (the poisoned one then succeeds). One
// crash, and the batch completes exactly.
func TestAutoPackedGroupLostWithItsWorker(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	x := newExits(t)
	start := func() *procs.Proc {
		p := e.StartWorkerEnv([]string{"FANOUT_FAULT_ACTIVITIES=1"}, "--activities", "poison", "--concurrency", "2", "--ack-wait", "2s")
		p.ExpectExit()
		x.watch(p)
		return p
	}
	e.WaitWorkerReady(start())
	ctx := e.Context(120 * time.Second)

	const total, poison = 3000, 2500
	items := make([]json.RawMessage, total)
	for i := range items {
		items[i] = mustJSON(t, map[string]any{"i": i})
	}
	items[poison] = mustJSON(t, map[string]any{"i": poison, "poison": true})
	r := e.Submit(ctx, client.BatchRequest{ID: "e2e-poison-packed", Activity: "poison", Items: items})
	done := waitAggregates(ctx, e, r.BatchID)
	agg, deaths := awaitRestarting(t, x, done, faults.CrashCode, start)
	if deaths != 1 {
		t.Errorf("%d workers crashed, want 1 (the poisoned item's first attempt)", deaths)
	}
	checkAggregateConsistent(t, agg)
	if agg.Status != client.StatusCompleted || agg.Total != total || agg.Succeeded != total {
		t.Fatalf("aggregate: %s, %d of %d succeeded; want all", agg.Status, agg.Succeeded, agg.Total)
	}
	for i, res := range agg.Results {
		if !res.OK || string(res.Output) != string(items[i]) {
			t.Fatalf("item %d: %+v (output %s), want its input back", i, res, res.Output)
		}
	}
	stored := checkRecorded(t, e, r.BatchID, total)

	st, err := e.BatchState(ctx, r.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	if st.PackSize < 2 || st.PackFrom > poison {
		t.Fatalf("state packs from %d by %d: the poisoned item was not in a packed group, the test proves nothing", st.PackFrom, st.PackSize)
	}
	first := st.PackFrom + (poison-st.PackFrom)/st.PackSize*st.PackSize
	end := min(first+st.PackSize, total)
	unpacked := false
	for _, u := range e.StoredUnpackRequests(ctx, r.BatchID) {
		unpacked = unpacked || u.Subject == e.Names.UnpackRequest(r.BatchID, first)
	}
	if !unpacked {
		t.Errorf("no unpack request for the poisoned group [%d, %d)", first, end)
	}
	for _, s := range stored {
		switch {
		case s.Item >= first && s.Item < end && s.Attempts != 2:
			t.Errorf("item %d of the poisoned group: attempt %d, want 2 (alone, after the lost delivery)", s.Item, s.Attempts)
		case s.Attempts < 1 || s.Attempts > 2:
			t.Errorf("item %d: attempt %d, want 1, or 2 if its group was lost in the crash", s.Item, s.Attempts)
		}
	}
}

// nakAdvisory is JetStream's advisory of a work message naked by a worker
// (a retry with a delay): the server's clock, the delivery count.
type nakAdvisory struct {
	StreamSeq  uint64    `json:"stream_seq"`
	Deliveries uint64    `json:"deliveries"`
	Time       time.Time `json:"timestamp"`
}

// Invariants 2 (at-least-once execution) and 3 (every accepted batch
// ends), through the real worker binary: a failing item is retried up to
// max_attempts and no sooner than its backoff (measured on the server's
// clock, from JetStream's nak advisories and the stored result, as lower
// bounds); its failed result carries the last error and the attempts; a
// permanent error (sha256 of an item without "data") fails at once; an
// item that outlives item_timeout fails its attempts with a timeout error.
func TestRetriesBackoffAndItemTimeout(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	e.Worker("--concurrency", "8")
	ctx := e.Context(90 * time.Second)

	var mu sync.Mutex
	naks := map[string][]nakAdvisory{} // by consumer
	for _, activity := range []string{"sleep", "sha256"} {
		consumer := e.Names.WorkConsumer(activity)
		subj := "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED." + e.Names.WorkStream() + "." + consumer
		sub, err := e.Conn.Subscribe(subj, func(m *nats.Msg) {
			var a nakAdvisory
			if json.Unmarshal(m.Data, &a) == nil {
				mu.Lock()
				naks[consumer] = append(naks[consumer], a)
				mu.Unlock()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := e.Conn.Flush(); err != nil {
		t.Fatal(err)
	}

	// Four items fail every time, one succeeds.
	const maxAttempts, ms = 3, 20
	backoff := []time.Duration{500 * time.Millisecond, time.Second}
	var items []json.RawMessage
	for i := range 4 {
		items = append(items, mustJSON(t, map[string]any{"ms": ms, "fail": fmt.Sprintf("boom %d", i)}))
	}
	items = append(items, mustJSON(t, map[string]any{"ms": ms}))
	opts := client.Options{MaxAttempts: maxAttempts}
	for _, d := range backoff {
		opts.Backoff = append(opts.Backoff, client.Duration(d))
	}
	r := e.Submit(ctx, client.BatchRequest{ID: "e2e-retries", Activity: "sleep", Items: items, Options: opts})
	agg := e.Wait(ctx, r.BatchID, nil)
	checkAggregateConsistent(t, agg)
	if agg.Status != client.StatusCompleted || agg.Succeeded != 1 || agg.Failed != 4 {
		t.Errorf("retries batch: %s, %d succeeded, %d failed; want completed, 1, 4", agg.Status, agg.Succeeded, agg.Failed)
	}
	stored := checkRecorded(t, e, r.BatchID, len(items))
	mu.Lock()
	sleepNaks := slices.Clone(naks[e.Names.WorkConsumer("sleep")])
	mu.Unlock()

	// The coordinator publishes items in order, so the work messages'
	// stream sequences order the failing items' naks by item.
	bySeq := map[uint64][]nakAdvisory{}
	for _, a := range sleepNaks {
		bySeq[a.StreamSeq] = append(bySeq[a.StreamSeq], a)
	}
	seqs := make([]uint64, 0, len(bySeq))
	for s := range bySeq {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	if len(seqs) != 4 {
		t.Fatalf("naks for %d work messages, want the 4 failing items': %+v", len(seqs), sleepNaks)
	}
	for _, s := range stored {
		switch {
		case s.Item == 4:
			if !s.OK || s.Attempts != 1 {
				t.Errorf("item 4: ok %v after %d attempts, want ok after 1", s.OK, s.Attempts)
			}
			continue
		case s.OK || s.Attempts != maxAttempts || s.Error != fmt.Sprintf("boom %d", s.Item):
			t.Errorf("item %d: ok %v, %d attempts, error %q; want failed after %d with %q", s.Item, s.OK, s.Attempts, s.Error, maxAttempts, fmt.Sprintf("boom %d", s.Item))
			continue
		}
		n := bySeq[seqs[s.Item]]
		slices.SortFunc(n, func(a, b nakAdvisory) int { return int(a.Deliveries) - int(b.Deliveries) })
		if len(n) != maxAttempts-1 || n[0].Deliveries != 1 || n[1].Deliveries != 2 {
			t.Errorf("item %d: naks %+v, want deliveries 1 and 2 naked", s.Item, n)
			continue
		}
		// Attempt k+1 starts no sooner than backoff[k-1] after attempt k
		// failed, and runs ms before it fails or publishes.
		gaps := []time.Duration{n[1].Time.Sub(n[0].Time), s.Time.Sub(n[1].Time)}
		for k, gap := range gaps {
			if floor := backoff[k] + ms*time.Millisecond; gap < floor {
				t.Errorf("item %d: attempt %d ended %s after attempt %d; the backoff (%s) and its run (%dms) take at least %s",
					s.Item, k+2, gap, k+1, backoff[k], ms, floor)
			}
		}
		t.Logf("item %d: attempts ended %s and %s apart (backoff %v)", s.Item, gaps[0].Round(time.Millisecond), gaps[1].Round(time.Millisecond), backoff)
	}

	// A permanent error fails at once; an item that outlives item_timeout
	// fails each attempt with a timeout error.
	perm := e.Submit(ctx, client.BatchRequest{ID: "e2e-permanent", Activity: "sha256",
		Items:   []json.RawMessage{json.RawMessage(`{"data":"x"}`), json.RawMessage(`{"nodata":1}`)},
		Options: client.Options{MaxAttempts: 3, Backoff: []client.Duration{client.Duration(10 * time.Millisecond)}}})
	slow := e.Submit(ctx, client.BatchRequest{ID: "e2e-item-timeout", Activity: "sleep",
		Items: []json.RawMessage{json.RawMessage(`{"ms":60000}`), json.RawMessage(`{"ms":10}`)},
		Options: client.Options{MaxAttempts: 2, ItemTimeout: client.Duration(400 * time.Millisecond),
			Backoff: []client.Duration{client.Duration(100 * time.Millisecond)}}})
	permAgg := e.Wait(ctx, perm.BatchID, nil)
	checkAggregateConsistent(t, permAgg)
	if res := permAgg.Results[1]; permAgg.Succeeded != 1 || permAgg.Failed != 1 || res.OK || !strings.Contains(res.Error, `"data" (a string) is required`) {
		t.Errorf("permanent error batch: %d succeeded, %d failed, item 1 %+v", permAgg.Succeeded, permAgg.Failed, res)
	}
	for _, s := range checkRecorded(t, e, perm.BatchID, 2) {
		if s.Attempts != 1 {
			t.Errorf("permanent error batch, item %d: %d attempts, want 1", s.Item, s.Attempts)
		}
	}
	mu.Lock()
	if n := len(naks[e.Names.WorkConsumer("sha256")]); n != 0 {
		t.Errorf("a permanent error was retried: %d naks on %s", n, e.Names.WorkConsumer("sha256"))
	}
	mu.Unlock()

	slowAgg := e.Wait(ctx, slow.BatchID, nil)
	checkAggregateConsistent(t, slowAgg)
	if res := slowAgg.Results[0]; slowAgg.Succeeded != 1 || slowAgg.Failed != 1 || res.OK || !strings.Contains(res.Error, "item timed out after 400ms") {
		t.Errorf("item timeout batch: %d succeeded, %d failed, item 0 %+v", slowAgg.Succeeded, slowAgg.Failed, res)
	}
	for _, s := range checkRecorded(t, e, slow.BatchID, 2) {
		if want := map[int]int{0: 2, 1: 1}[s.Item]; s.Attempts != want {
			t.Errorf("item timeout batch, item %d: %d attempts, want %d", s.Item, s.Attempts, want)
		}
		if s.Item == 0 && s.DurationMS < 400 {
			t.Errorf("item timeout batch, item 0: the last attempt ran %.1fms, less than its 400ms timeout", s.DurationMS)
		}
	}
}

// Invariant 2 (at-least-once execution with a stable idempotency key),
// across processes: an item's first two attempts crash the real worker
// binary (activity "crash"); the next ones run in a worker built with the
// SDK, in this test process, on the same consumer. Its handler sees attempt
// 3 then 4 (each crash counted as an attempt), the same idempotency key
// "<batch>/<item>" both times, and the retry after attempt 3 comes no
// sooner than its backoff.
func TestAttemptAndKeyAcrossWorkerCrashes(t *testing.T) {
	t.Parallel()
	const ackWait = 2 * time.Second
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	ctx := e.Context(90 * time.Second)

	const batchID, maxAttempts = "e2e-key-across-crashes", 4
	backoff := []client.Duration{client.Duration(50 * time.Millisecond), client.Duration(50 * time.Millisecond), client.Duration(700 * time.Millisecond)}
	crasher := func() *procs.Proc {
		p := e.StartWorkerEnv([]string{"FANOUT_FAULT_ACTIVITIES=1"}, "--activities", "crash", "--concurrency", "1", "--ack-wait", ackWait.String())
		p.ExpectExit()
		return p
	}
	first := crasher()
	e.WaitWorkerReady(first)
	r := e.Submit(ctx, client.BatchRequest{ID: batchID, Activity: "crash", Items: []json.RawMessage{json.RawMessage(`{"n":1}`)},
		Options: client.Options{MaxAttempts: maxAttempts, Backoff: backoff}})
	for i, p := range []*procs.Proc{first, nil} {
		if p == nil {
			p = crasher()
		}
		if code, err := p.Wait(ctx); err != nil || code != faults.CrashCode {
			t.Fatalf("crash worker %d: exit %d, %v; want %d", i+1, code, err, faults.CrashCode)
		}
	}

	type call struct {
		info worker.Info
		at   time.Time
	}
	var mu sync.Mutex
	var calls []call
	nc := e.Server.Connect()
	w, err := worker.New(nc, worker.WithName("sdk-worker"), worker.WithAckWait(ackWait), worker.WithConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	w.HandleFunc("crash", func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		info, ok := worker.InfoFrom(ctx)
		if !ok {
			return nil, worker.Permanent(errors.New("no worker.Info"))
		}
		mu.Lock()
		calls = append(calls, call{info, time.Now()})
		mu.Unlock()
		if info.Attempt < maxAttempts {
			return nil, errors.New("not yet")
		}
		return json.Marshal(map[string]any{"key": info.IdempotencyKey, "attempt": info.Attempt})
	})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = w.Stop(sctx)
	})

	agg := e.Wait(ctx, r.BatchID, nil)
	checkAggregateConsistent(t, agg)
	key := batchID + "/0"
	if agg.Succeeded != 1 || string(agg.Results[0].Output) != fmt.Sprintf(`{"attempt":%d,"key":%q}`, maxAttempts, key) {
		t.Errorf("aggregate: %d succeeded, item 0 %+v", agg.Succeeded, agg.Results[0])
	}
	if s := checkRecorded(t, e, r.BatchID, 1); len(s) == 1 && (s[0].Attempts != maxAttempts || s[0].Worker != "sdk-worker") {
		t.Errorf("stored result: %d attempts by %s, want %d by sdk-worker", s[0].Attempts, s[0].Worker, maxAttempts)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("the SDK worker's handler ran %d times, want 2 (attempts 3 and 4): %+v", len(calls), calls)
	}
	for i, c := range calls {
		if c.info.Attempt != 3+i || c.info.IdempotencyKey != key || c.info.MaxAttempts != maxAttempts || c.info.BatchID != batchID || c.info.Item != 0 {
			t.Errorf("call %d: %+v; want attempt %d of %d, key %q", i, c.info, 3+i, maxAttempts, key)
		}
	}
	if gap := calls[1].at.Sub(calls[0].at); gap < backoff[2].Std() {
		t.Errorf("attempt 4 started %s after attempt 3, before its backoff of %s", gap, backoff[2].Std())
	}
}

// Invariant 3 (every accepted batch ends): a batch that outlives its
// timeout ends timed_out no sooner than the timeout after submission; its
// queued work is removed from FANOUT_WORK; its one aggregate lists the items
// that finished and marks the rest not_run. Invariant 1: results of items
// that were running at the timeout and finish afterwards are stored but
// not counted.
func TestBatchTimeout(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	e.Coordinator()
	e.Worker("--concurrency", "4")
	e.Worker("--concurrency", "4")
	ctx := e.Context(60 * time.Second)

	const total, ms, timeout = 80, 300, 2 * time.Second
	submitted := time.Now()
	r := e.Submit(ctx, client.BatchRequest{ID: "e2e-batch-timeout", Activity: "sleep", Items: sleepItems(t, total, ms),
		Options: client.Options{MaxInFlight: 8, Timeout: client.Duration(timeout)}})
	agg := e.Wait(ctx, r.BatchID, nil)
	received := time.Now()
	// Nothing of the batch stays queued: the purge comes before the
	// aggregate, so this holds the moment the aggregate is out.
	if n, err := e.WorkCount(ctx, r.BatchID); err != nil || n != 0 {
		t.Errorf("stream %s holds %d messages of the timed-out batch (%v), want 0", e.Names.WorkStream(), n, err)
	}

	t.Logf("aggregate %s after %s: %d succeeded, %d failed, %d not run (%s)", agg.Status,
		received.Sub(submitted).Round(time.Millisecond), agg.Succeeded, agg.Failed, agg.NotRun, agg.Reason)
	if agg.Status != client.StatusTimedOut {
		t.Fatalf("status %s (%s), want timed_out", agg.Status, agg.Reason)
	}
	checkAggregateConsistent(t, agg)
	if agg.Succeeded == 0 || agg.NotRun == 0 || agg.Failed != 0 {
		t.Errorf("%d succeeded, %d failed, %d not run: want some of each of succeeded and not run, none failed", agg.Succeeded, agg.Failed, agg.NotRun)
	}
	if d := received.Sub(submitted); d < timeout {
		t.Errorf("the batch ended %s after submission, before its timeout of %s", d, timeout)
	}
	if d := agg.FinishedAt.Sub(agg.StartedAt); d > timeout+5*time.Second {
		t.Errorf("the batch ran %s with a timeout of %s", d, timeout)
	}
	stored := map[int]procs.StoredResult{}
	for _, s := range e.StoredResults(ctx, r.BatchID) {
		stored[s.Item] = s
	}
	for _, res := range agg.Results {
		s, ok := stored[res.Item]
		switch {
		case res.NotRun:
			if res.OK || !strings.Contains(res.Error, "timed_out") {
				t.Errorf("item %d: not run with error %q, want one naming timed_out", res.Item, res.Error)
			}
		case !ok || !s.OK || string(s.Output) != string(res.Output):
			t.Errorf("item %d: counted %+v, but its stored result is %+v (stored %v)", res.Item, res, s, ok)
		}
	}
	if n := e.DoneCount(ctx, r.BatchID); n != 1 {
		t.Errorf("%d aggregates, want 1", n)
	}
	// The items running at the timeout finish and their results are
	// stored, but not counted: the batch's state keeps the aggregate's
	// counts. (No event says they are stored: poll.)
	var late int
	for deadline := time.Now().Add(15 * time.Second); ; {
		if late = len(e.StoredResults(ctx, r.BatchID)) - agg.Succeeded - agg.Failed; late > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if late <= 0 {
		t.Errorf("no result stored after the timeout: the items running then were not left to finish?")
	}
	st, err := e.Client.Status(ctx, r.BatchID)
	if err != nil || st.Status != client.StatusTimedOut || st.Succeeded != agg.Succeeded || st.Failed != agg.Failed {
		t.Errorf("status after %d late results: %+v, %v; want timed_out with the aggregate's counts", late, st, err)
	}
	if n := e.DoneCount(ctx, r.BatchID); n != 1 {
		t.Errorf("%d aggregates after the late results, want 1", n)
	}
}
