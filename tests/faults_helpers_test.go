package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/tests/procs"
)

// Helpers of the fault-injection tests (faults_test.go,
// coordinator_faults_test.go, soak_test.go).

// newRand returns a random source for a test's fault moments, and logs its
// seed; FANOUT_TEST_SEED=<n> replays a run.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FANOUT_TEST_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FANOUT_TEST_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("random seed %d (FANOUT_TEST_SEED=%d replays it)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// exits merges the exits of processes into one channel, for a test's
// select loop (Proc methods that fail the test must run on the test's
// goroutine, so restarts happen there).
type exits struct {
	ch   chan *procs.Proc
	done chan struct{}
}

func newExits(t *testing.T) *exits {
	x := &exits{ch: make(chan *procs.Proc), done: make(chan struct{})}
	t.Cleanup(func() { close(x.done) })
	return x
}

func (x *exits) watch(p *procs.Proc) {
	go func() {
		<-p.Exited()
		select {
		case x.ch <- p:
		case <-x.done:
		}
	}()
}

// aggregates waits for the aggregates of batches in the background; the
// channel delivers one outcome per batch.
type outcome struct {
	id  string
	agg *client.Aggregate
	err error
}

func waitAggregates(ctx context.Context, e *procs.Env, ids ...string) <-chan outcome {
	ch := make(chan outcome, len(ids))
	for _, id := range ids {
		go func() {
			agg, err := e.Client.Wait(ctx, id, nil)
			ch <- outcome{id, agg, err}
		}()
	}
	return ch
}

// sha256Items are n small sha256 items (about 20 bytes each, so that 20,000
// of them fit in one 1 MiB request) and a check of their outputs.
func sha256Items(t *testing.T, prefix string, n int) ([]json.RawMessage, func(int, json.RawMessage) error) {
	t.Helper()
	items := make([]json.RawMessage, n)
	for i := range items {
		items[i] = json.RawMessage(fmt.Sprintf(`{"data":"%s%d"}`, prefix, i))
	}
	return items, func(i int, out json.RawMessage) error {
		var o struct {
			SHA256 string `json:"sha256"`
		}
		if err := json.Unmarshal(out, &o); err != nil {
			return err
		}
		sum := sha256.Sum256(fmt.Appendf(nil, "%s%d", prefix, i))
		if want := hex.EncodeToString(sum[:]); o.SHA256 != want {
			return fmt.Errorf("sha256 %q, want %q", o.SHA256, want)
		}
		return nil
	}
}

// distinctItems is the number of distinct items among seen results.
func distinctItems(seen []procs.SeenResult) int {
	m := make(map[int]bool, len(seen))
	for _, s := range seen {
		m[s.Item] = true
	}
	return len(m)
}

// exitCode is a process's exit code once it has exited.
func exitCode(t *testing.T, p *procs.Proc) int {
	t.Helper()
	code, err := p.ExitCode()
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// checkAggregateConsistent checks an aggregate against itself: its counts
// add up and match its per-item results, in item order.
func checkAggregateConsistent(t *testing.T, agg *client.Aggregate) {
	t.Helper()
	if agg.Succeeded+agg.Failed+agg.NotRun != agg.Total {
		t.Errorf("aggregate: succeeded %d + failed %d + not run %d != total %d", agg.Succeeded, agg.Failed, agg.NotRun, agg.Total)
	}
	if len(agg.Results) != agg.Total {
		t.Fatalf("aggregate: %d results for %d items", len(agg.Results), agg.Total)
	}
	var ok, failed, notRun int
	for i, r := range agg.Results {
		if r.Item != i {
			t.Fatalf("aggregate: result %d is for item %d", i, r.Item)
		}
		switch {
		case r.NotRun:
			notRun++
		case r.OK:
			ok++
		default:
			failed++
		}
	}
	if ok != agg.Succeeded || failed != agg.Failed || notRun != agg.NotRun {
		t.Errorf("aggregate: results hold %d ok, %d failed, %d not run; counts say %d, %d, %d",
			ok, failed, notRun, agg.Succeeded, agg.Failed, agg.NotRun)
	}
}

// awaitRestarting waits for the aggregate of the one batch done reports,
// starting a new worker for each one that exits (with exit code want) on
// the way. It returns the aggregate and how many workers exited.
func awaitRestarting(t *testing.T, x *exits, done <-chan outcome, want int, start func() *procs.Proc) (*client.Aggregate, int) {
	t.Helper()
	deaths := 0
	for {
		select {
		case p := <-x.ch:
			deaths++
			if code := exitCode(t, p); code != want {
				t.Fatalf("%s exited %d, want %d", p.Name, code, want)
			}
			start()
		case o := <-done:
			if o.err != nil {
				t.Fatalf("wait for %s: %v", o.id, o.err)
			}
			return o.agg, deaths
		}
	}
}
