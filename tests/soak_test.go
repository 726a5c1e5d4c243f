package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/tests/procs"
)

// soakSize is the soak's number of batches and items per batch: 10 × 500
// by default (it runs in the default test run), the 50 × 2,000
// with FANOUT_SOAK=full, or FANOUT_SOAK=<batches>x<items>.
func soakSize(t *testing.T) (batches, items int, timeout time.Duration) {
	t.Helper()
	switch s := os.Getenv("FANOUT_SOAK"); s {
	case "":
		return 10, 500, 3 * time.Minute
	case "full":
		return 50, 2000, 30 * time.Minute
	default:
		b, i, ok := strings.Cut(s, "x")
		nb, err1 := strconv.Atoi(b)
		ni, err2 := strconv.Atoi(i)
		if !ok || err1 != nil || err2 != nil || nb < 1 || ni < 1 {
			t.Fatalf("FANOUT_SOAK=%q: want full or <batches>x<items>, e.g. 50x2000", s)
		}
		return nb, ni, 30 * time.Minute
	}
}

// Invariants 1 (exactly-once accounting) and 3 (every accepted batch
// ends), under churn: many batches submitted at once while workers are
// killed with SIGKILL at random moments (one or two of the four, every
// 1-6% of all items, picked at random from the results seen) and replaced
// at once, throughout. Every
// batch completes with every item counted once, one aggregate each, one
// stored result per item.
//
// The default size (10 batches of 500 items) runs in the default test
// run. The size, 50 batches of 2,000 items, runs with
//
//	FANOUT_SOAK=full go test -race -count=1 -timeout 45m -run TestSoakWorkersKilledAtRandom -v ./tests/
//
// (about 2-3 minutes on 2 cores with -race; FANOUT_SOAK=<batches>x<items>
// picks another size, FANOUT_TEST_SEED replays a run's kill moments).
func TestSoakWorkersKilledAtRandom(t *testing.T) {
	t.Parallel()
	nBatches, perBatch, timeout := soakSize(t)
	e := procs.NewEnv(t, bins)
	rng := newRand(t)
	e.Coordinator()
	const nWorkers = 4
	workers := make([]*procs.Proc, nWorkers)
	for i := range workers {
		workers[i] = e.Worker("--concurrency", "16")
	}
	ctx := e.Context(timeout)
	counter := e.CountResults()

	type batch struct {
		id    string
		total int
		check func(int, json.RawMessage) error
	}
	batches := make([]batch, nBatches)
	reqs := make([]client.BatchRequest, nBatches)
	for b := range batches {
		id := fmt.Sprintf("e2e-soak-%03d", b)
		items, check := sha256Items(t, id+"-", perBatch)
		batches[b] = batch{id: id, total: perBatch, check: check}
		// Attempts enough that no item runs out of them by bad luck (an
		// item can be held by several workers killed in a row).
		reqs[b] = client.BatchRequest{ID: id, Activity: "sha256", Items: items, Options: client.Options{MaxAttempts: 20}}
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, nBatches)
	for b := range reqs {
		wg.Go(func() {
			r, err := e.Client.Submit(ctx, reqs[b])
			if err == nil && (r.BatchID != reqs[b].ID || r.Total != perBatch) {
				err = fmt.Errorf("reply %+v", r)
			}
			errs[b] = err
		})
	}
	wg.Wait()
	for b, err := range errs {
		if err != nil {
			t.Fatalf("submit %s: %v", batches[b].id, err)
		}
	}
	ids := make([]string, nBatches)
	for b := range batches {
		ids[b] = batches[b].id
	}
	done := waitAggregates(ctx, e, ids...)

	all := nBatches * perBatch
	kills := 0
	for base := 0; ; base = counter.Count() {
		// The first kill is due early whatever has been counted by now
		// (batches of fast items can be nearly done before this loop
		// starts); each next one 1-6% of all items after the last.
		next := base + all/100 + rng.IntN(all/20+1)
		if next >= all || counter.Count() >= all {
			break
		}
		if _, err := counter.Await(ctx, next); err != nil {
			t.Fatalf("after %d kills: %v", kills, err)
		}
		for _, i := range rng.Perm(nWorkers)[:1+rng.IntN(2)] {
			workers[i].Kill()
			kills++
			workers[i] = e.StartWorker("--concurrency", "16")
		}
	}
	t.Logf("%d workers killed and replaced while %d batches of %d items ran", kills, nBatches, perBatch)
	if kills == 0 {
		t.Errorf("no worker was killed; the test proves nothing")
	}

	aggs := map[string]*client.Aggregate{}
	for range ids {
		o := <-done
		if o.err != nil {
			t.Fatalf("wait for %s: %v", o.id, o.err)
		}
		aggs[o.id] = o.agg
	}
	t.Logf("all %d batches done in %s", nBatches, time.Since(start).Round(time.Millisecond))
	redelivered := 0
	for _, b := range batches {
		checkExact(t, aggs[b.id], b.id, b.total, b.check)
		for _, s := range checkRecorded(t, e, b.id, b.total) {
			if s.Attempts > 1 {
				redelivered++
			}
		}
	}
	t.Logf("%d items ran more than once", redelivered)
}
