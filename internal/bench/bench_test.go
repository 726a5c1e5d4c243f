package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain lets the test binary be the coordinator process of (f): the
// bench starts it again with ChildEnv set.
func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) == "coordinator" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := RunCoordinatorProcess(ctx, os.Stdin, os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString("coordinator process: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"))
}

// tiny is a configuration small enough for CI: every measurement runs once
// on a couple hundred items.
func tiny(t testing.TB) Config {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Storage: "file", DataDir: t.TempDir(),
		Sizes: []int{200}, Runs: 1,
		LatencyBatches: 3, LatencyItems: 10,
		MemorySizes:        []int{200},
		CoordinatorCommand: []string{exe},
	}
}

// TestTiny exercises every measurement on a tiny run and checks that each
// produced a value (never how large: no timed assertions).
func TestTiny(t *testing.T) {
	t.Parallel()
	cfg := tiny(t)
	var log bytes.Buffer
	cfg.Log = &log
	cfg.Phases = true
	cfg.CPUProfile = filepath.Join(t.TempDir(), "cpu.prof")
	heapDir := t.TempDir()
	cfg.CoordinatorHeapProfile = filepath.Join(heapDir, "heap.prof")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	if len(rep.Rows) != 1 {
		t.Fatalf("%d throughput rows, want 1", len(rep.Rows))
	}
	row := rep.Rows[0]
	if row.N != 200 || row.Raw <= 0 || row.RawGuard <= 0 || row.Fanout <= 0 || row.Ratio <= 0 || len(row.Phases) != 1 {
		t.Fatalf("throughput row %+v", row)
	}
	if ph := row.Phases[0]; ph.LastResultMS <= 0 || ph.AggregateMS < ph.LastResultMS {
		t.Fatalf("phases %+v", ph)
	}
	l := rep.Latency
	if len(l.FanoutMS) != 3 || len(l.RawMS) != 3 || l.FanoutP50 <= 0 || l.RawP50 <= 0 ||
		l.FanoutCPUMS <= 0 || l.RawCPUMS <= 0 || l.RawMsgsIn < float64(2*l.Items) || l.FanoutMsgsOut < float64(l.Items) {
		t.Fatalf("latency row %+v", l)
	}
	if rep.Batching.Measured || rep.Batching.Reason == "" {
		t.Fatalf("items_per_message row %+v, want n/a with a reason", rep.Batching)
	}
	if len(rep.Memory) != 1 || !rep.Memory[0].Measured || rep.Memory[0].PeakRSS <= 0 || rep.Memory[0].PeakHeap <= 0 {
		t.Fatalf("memory rows %+v", rep.Memory)
	}
	for _, p := range []string{cfg.CPUProfile, filepath.Join(heapDir, "heap-200.prof")} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Fatalf("profile %s: %v", p, err)
		}
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"(a) raw", "(b) fanout", "(c) b ÷ a", "(d) fanout 10-item batch p50", "(d) raw 10-item round trip p50", "(e)", "(f) coordinator peak RSS"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	path := filepath.Join(t.TempDir(), "bench.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	var back Report
	if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &back) != nil || back.Rows[0].N != 200 {
		t.Fatalf("JSON report does not read back: %v", err)
	}
}

// TestMemoryOfBatchLargerThanAMessage: a batch larger than the server's
// max_payload is measured, its items sent through the object store.
func TestMemoryOfBatchLargerThanAMessage(t *testing.T) {
	t.Parallel()
	cfg := tiny(t)
	cfg.Sizes, cfg.Runs, cfg.NoGuard = []int{50}, 1, true
	cfg.LatencyBatches = 1
	cfg.MaxPayload = 1 << 20
	cfg.MemorySizes = []int{20_000} // about 2 MiB of items
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m := rep.Memory[0]; !m.Measured || m.PeakRSS <= 0 || m.RequestBytes <= 1<<20 {
		t.Fatalf("memory row %+v, want measured, with a request over 1 MiB", m)
	}
}

// TestThroughputOfBatchLargerThanAMessage: (b) measures a batch larger
// than the server's max_payload, its items sent by reference, and says so.
func TestThroughputOfBatchLargerThanAMessage(t *testing.T) {
	t.Parallel()
	cfg := tiny(t)
	cfg.Sizes, cfg.Runs, cfg.NoGuard, cfg.NoMemory = []int{15_000}, 2, true, true // about 1.5 MiB of items
	cfg.LatencyBatches = 1
	cfg.MaxPayload = 1 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Rows[0]; !r.ItemsByRef || len(r.FanoutRuns) != 2 || r.Fanout <= 0 {
		t.Fatalf("throughput row %+v, want two fanout runs with items by reference", r)
	}
	var noted int
	for _, n := range rep.Notes {
		if strings.Contains(n, "items_ref") {
			noted++
		}
	}
	if noted != 1 {
		t.Fatalf("notes %q: want one about items_ref", rep.Notes)
	}
}

func TestAutoMaxPayload(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sizes, mem []int
		want       int
	}{
		{[]int{200}, nil, 1 << 20},
		{[]int{10_000}, nil, 1 << 20},
		{[]int{10_000, 100_000}, nil, 10 << 20},
		// 1,000,000 items of 100 bytes cannot fit: it does not raise the
		// limit, and goes by reference (items_ref).
		{[]int{10_000, 100_000}, []int{100_000, 1_000_000}, 10 << 20},
	} {
		cfg := Config{Sizes: tc.sizes, MemorySizes: tc.mem, NoMemory: tc.mem == nil}.withDefaults()
		if got := autoMaxPayload(cfg); got != tc.want {
			t.Errorf("sizes %v %v: max payload %d, want %d", tc.sizes, tc.mem, got, tc.want)
		}
	}
}

func TestPercentileAndMedian(t *testing.T) {
	t.Parallel()
	v := []float64{5, 1, 4, 2, 3}
	if got := median(v); got != 3 {
		t.Errorf("median %v", got)
	}
	if got := median([]float64{1, 2, 3, 4}); got != 2.5 {
		t.Errorf("median %v", got)
	}
	if got := percentile(v, 50); got != 3 {
		t.Errorf("p50 %v", got)
	}
	if got := percentile(v, 99); got != 5 {
		t.Errorf("p99 %v", got)
	}
	if got := count(1234567); got != "1,234,567" {
		t.Errorf("count %q", got)
	}
}

func TestItems(t *testing.T) {
	t.Parallel()
	for _, i := range []int{0, 7, 123456} {
		item := itemJSON(i, 100)
		var in struct{ Data string }
		if err := json.Unmarshal(item, &in); err != nil || in.Data != itemData(i, 100) {
			t.Fatalf("item %d: %s", i, item)
		}
		if len(item) != 100 {
			t.Errorf("item %d is %d bytes, want 100", i, len(item))
		}
	}
}
