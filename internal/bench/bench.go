// Package bench measures fanout against the bare JetStream round trip it is
// built on, in one run against one embedded server:
//
//	(a) raw: publish work async to a WorkQueue stream, N worker goroutines
//	    pull from one durable consumer, hash, publish the result async and
//	    ack the work after the result's PubAck; a collector reads the
//	    results with an ordered consumer;
//	(b) fanout end to end: submit a sha256 batch with the client and wait
//	    for its aggregate, coordinator and workers in this process;
//	(c) b ÷ a;
//	(d) latency of small batches, fanout and raw;
//	(e) items_per_message;
//	(f) the coordinator's peak heap and RSS, with the coordinator in a
//	    child process so that its RSS is its own.
//
// Nothing here changes the engine: it is measured as it is. The numbers
// depend on the machine; ratios taken in the same run cancel most of its
// noise, so the ratios are what to compare across runs.
package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fanoutdev/fanout/client"
)

// Config is what to measure and how. Zero values take the defaults named on
// each field.
type Config struct {
	// Storage of every stream: "file" (default) or "memory".
	Storage string
	// SyncAlways makes the server sync every write to disk before it is
	// acknowledged (sync_interval: always). Default off: the server's
	// default of flushing every 2 minutes.
	SyncAlways bool
	// Workers is the number of raw worker goroutines and of fanout workers
	// (each on its own connection). Default 4.
	Workers int
	// Concurrency is how many items each fanout worker runs at once.
	// Default 16 (the worker's default).
	Concurrency int
	// ItemSize is the size in bytes of one item's JSON input,
	// {"data":"..."}. Default 100.
	ItemSize int
	// Sizes are the batch sizes of (a), (b) and (c). Default 10,000 and
	// 100,000.
	Sizes []int
	// Runs is how many times each throughput is measured; the table shows
	// the median. Runs of raw and fanout are interleaved so that drift of
	// the machine hits both. Default 3.
	Runs int
	// LatencyBatches of LatencyItems items each measure (d). Defaults 200
	// and 10.
	LatencyBatches int
	LatencyItems   int
	// MemorySizes are the batch sizes of (f). Default 100,000 and
	// 1,000,000. Set NoMemory to skip (f).
	MemorySizes []int
	NoMemory    bool
	// CoordinatorCommand is the command line that starts a coordinator
	// process for (f). The process gets NATS_URL, FANOUT_PREFIX,
	// FANOUT_STORAGE and FANOUT_LOG_LEVEL in its environment (what
	// cmd/coordinator reads) and is stopped with SIGTERM. When it is a
	// program calling RunCoordinatorProcess it also reports its peak heap.
	// Empty: (f) is reported as not measured.
	CoordinatorCommand []string
	// MaxInFlight is the fanout batches' max_in_flight (0: the default).
	MaxInFlight int
	// ItemsPerMessage > 1 asks for (e).
	ItemsPerMessage int
	// MaxPayload is the server's max_payload. 0 picks the smallest whole
	// MiB (at least the NATS default of 1 MiB) that fits the largest batch
	// request measured, capped at MaxPayloadCap.
	MaxPayload int
	// NoGuard skips the extra raw measurement with the per-item result
	// guard (one subject per result, MaxMsgsPerSubject 1, discard new).
	NoGuard bool
	// Phases records, for each fanout throughput run, when the first and
	// last results were stored (a core NATS subscription on the batch's
	// result subjects; it costs a little CPU, so it is off by default).
	Phases bool
	// DataDir holds the server's JetStream data; empty: a temporary
	// directory removed at the end.
	DataDir string
	// CoordinatorHeapProfile, when set, makes each coordinator process of
	// (f) write the heap profile taken at its largest live heap, to this
	// path with the batch size inserted before the extension.
	CoordinatorHeapProfile string
	// CPUProfile, when set, is where a pprof CPU profile of the first
	// fanout run of the largest size is written (everything in this
	// process: server, coordinator, workers, client).
	CPUProfile string
	// Log receives progress lines (default: discarded); Logger the engine's
	// logs (default: none).
	Log    io.Writer
	Logger zerolog.Logger
}

// MaxPayloadCap is the largest max_payload the bench picks by itself: the
// server's default max_pending (64 MiB), which max_payload may not exceed.
const MaxPayloadCap = server.MAX_PENDING_SIZE

// DefaultSizes and DefaultMemorySizes are Config's defaults.
var (
	DefaultSizes       = []int{10_000, 100_000}
	DefaultMemorySizes = []int{100_000, 1_000_000}
)

func (c Config) withDefaults() Config {
	if c.Storage == "" {
		c.Storage = "file"
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.ItemSize == 0 {
		c.ItemSize = 100
	}
	if len(c.Sizes) == 0 {
		c.Sizes = DefaultSizes
	}
	if c.Runs == 0 {
		c.Runs = 3
	}
	if c.LatencyBatches == 0 {
		c.LatencyBatches = 200
	}
	if c.LatencyItems == 0 {
		c.LatencyItems = 10
	}
	if len(c.MemorySizes) == 0 && !c.NoMemory {
		c.MemorySizes = DefaultMemorySizes
	}
	if c.NoMemory {
		c.MemorySizes = nil
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	// The coordinator process's stderr is copied to Log from another
	// goroutine.
	c.Log = &lockedWriter{w: c.Log}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Storage != "file" && c.Storage != "memory":
		return fmt.Errorf("storage %q: use file or memory", c.Storage)
	case c.Workers < 1:
		return fmt.Errorf("workers %d: must be at least 1", c.Workers)
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency %d: must be at least 1", c.Concurrency)
	case c.ItemSize < 16:
		return fmt.Errorf("item size %d: must be at least 16 bytes", c.ItemSize)
	case c.Runs < 1:
		return fmt.Errorf("runs %d: must be at least 1", c.Runs)
	case c.LatencyBatches < 1 || c.LatencyItems < 1:
		return fmt.Errorf("latency batches %d of %d items: both must be at least 1", c.LatencyBatches, c.LatencyItems)
	case c.MaxInFlight < 0:
		return fmt.Errorf("max in flight %d: must not be negative", c.MaxInFlight)
	case c.MaxPayload < 0:
		return fmt.Errorf("max payload %d: must not be negative", c.MaxPayload)
	}
	for _, n := range append(slices.Clone(c.Sizes), c.MemorySizes...) {
		if n < 1 {
			return fmt.Errorf("batch size %d: must be at least 1", n)
		}
	}
	return nil
}

func (c Config) memory() bool { return c.Storage == "memory" }

// Report is everything one run measured; it is also the JSON file.
type Report struct {
	StartedAt time.Time   `json:"started_at"`
	Seconds   float64     `json:"seconds"`
	Machine   Machine     `json:"machine"`
	Setup     Setup       `json:"setup"`
	Rows      []SizeRow   `json:"throughput"`
	Latency   LatencyRow  `json:"latency"`
	Batching  BatchingRow `json:"items_per_message"`
	Memory    []MemoryRow `json:"coordinator_memory"`
	Notes     []string    `json:"notes,omitempty"`
}

// Machine describes where the numbers were taken.
type Machine struct {
	CPUs        int    `json:"cpus"`
	GOMAXPROCS  int    `json:"gomaxprocs"`
	CPUModel    string `json:"cpu_model,omitempty"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	Go          string `json:"go"`
	NATSServer  string `json:"nats_server"`
	NATSClient  string `json:"nats_go"`
	MemoryTotal string `json:"memory_total,omitempty"`
	// LoadBefore and LoadAfter are /proc/loadavg at the start and end of
	// the run: other work on the machine skews rates, less so ratios and
	// CPU per item.
	LoadBefore string `json:"load_before,omitempty"`
	LoadAfter  string `json:"load_after,omitempty"`
}

// Setup is the configuration the numbers were taken with.
type Setup struct {
	Storage         string `json:"storage"`
	SyncAlways      bool   `json:"sync_always"`
	Durability      string `json:"durability"`
	Workers         int    `json:"workers"`
	Concurrency     int    `json:"fanout_worker_concurrency"`
	ItemSize        int    `json:"item_size_bytes"`
	Runs            int    `json:"runs"`
	MaxInFlight     int    `json:"max_in_flight"`
	MaxPayload      int    `json:"server_max_payload"`
	CPUProfile      string `json:"cpu_profile,omitempty"`
	CoordinatorProc string `json:"coordinator_process,omitempty"`
}

// SizeRow is (a), (b) and (c) for one batch size. Rates are items per
// second, medians over the runs; the per-run values are kept too.
type SizeRow struct {
	N            int       `json:"n"`
	Raw          float64   `json:"raw_items_per_sec"`
	RawRuns      []float64 `json:"raw_runs"`
	RawGuard     float64   `json:"raw_guard_items_per_sec,omitempty"`
	RawGuardRuns []float64 `json:"raw_guard_runs,omitempty"`
	Fanout       float64   `json:"fanout_items_per_sec"`
	FanoutRuns   []float64 `json:"fanout_runs"`
	// Ratio is Fanout ÷ Raw (c); RunRatios pairs each run with the raw
	// run taken just before it.
	Ratio     float64   `json:"ratio"`
	RunRatios []float64 `json:"run_ratios"`
	// CPU time of the whole process (server included) per item, in
	// microseconds: less sensitive than rates to other load on the
	// machine. CPURatio is RawCPU ÷ FanoutCPU, comparable to Ratio.
	RawCPU          float64        `json:"raw_cpu_us_per_item"`
	RawCPURuns      []float64      `json:"raw_cpu_runs"`
	RawGuardCPU     float64        `json:"raw_guard_cpu_us_per_item,omitempty"`
	RawGuardCPURuns []float64      `json:"raw_guard_cpu_runs,omitempty"`
	FanoutCPU       float64        `json:"fanout_cpu_us_per_item"`
	FanoutCPURuns   []float64      `json:"fanout_cpu_runs"`
	CPURatio        float64        `json:"cpu_ratio"`
	Phases          []FanoutPhases `json:"fanout_phases,omitempty"`
	// ItemsByRef: fanout's batch was too large for one submit request, so
	// its items went by reference (items_ref), uploaded before the timing.
	ItemsByRef bool `json:"items_by_ref,omitempty"`
}

// FanoutPhases splits one fanout run's wall time (milliseconds since the
// submit request was sent).
type FanoutPhases struct {
	SubmitReplyMS float64 `json:"submit_reply_ms"`
	FirstResultMS float64 `json:"first_result_ms,omitempty"`
	LastResultMS  float64 `json:"last_result_ms,omitempty"`
	AggregateMS   float64 `json:"aggregate_ms"`
}

// LatencyRow is (d): submit → aggregate for fanout, first publish → last
// result for raw, in milliseconds.
type LatencyRow struct {
	Items     int     `json:"items_per_batch"`
	Batches   int     `json:"batches"`
	FanoutP50 float64 `json:"fanout_p50_ms"`
	FanoutP99 float64 `json:"fanout_p99_ms"`
	RawP50    float64 `json:"raw_p50_ms"`
	RawP99    float64 `json:"raw_p99_ms"`
	RatioP50  float64 `json:"ratio_p50"`
	// FanoutSubmitP50 is the median time until the submit reply: the part
	// of the latency spent before the batch starts.
	FanoutSubmitP50 float64   `json:"fanout_submit_reply_p50_ms"`
	FanoutMS        []float64 `json:"fanout_ms"`
	RawMS           []float64 `json:"raw_ms"`
	// CPU time of the whole process (server included) and messages into
	// and out of the server, per batch.
	FanoutCPUMS   float64 `json:"fanout_cpu_ms_per_batch"`
	RawCPUMS      float64 `json:"raw_cpu_ms_per_batch"`
	FanoutMsgsIn  float64 `json:"fanout_server_msgs_in_per_batch"`
	FanoutMsgsOut float64 `json:"fanout_server_msgs_out_per_batch"`
	RawMsgsIn     float64 `json:"raw_server_msgs_in_per_batch"`
	RawMsgsOut    float64 `json:"raw_server_msgs_out_per_batch"`
}

// BatchingRow is (e).
type BatchingRow struct {
	ItemsPerMessage int     `json:"items_per_message"`
	N               int     `json:"n,omitempty"`
	Measured        bool    `json:"measured"`
	ItemsPerSec     float64 `json:"items_per_sec,omitempty"`
	Reason          string  `json:"reason,omitempty"`
}

// MemoryRow is (f) for one batch size.
type MemoryRow struct {
	N        int    `json:"n"`
	Measured bool   `json:"measured"`
	Reason   string `json:"reason,omitempty"`
	// RequestBytes is the size of the submit request.
	RequestBytes int `json:"request_bytes"`
	// BaselineRSS is the coordinator's RSS once ready, before the batch;
	// PeakRSS its VmHWM when the aggregate arrived.
	BaselineRSS int64 `json:"baseline_rss_bytes,omitempty"`
	PeakRSS     int64 `json:"peak_rss_bytes,omitempty"`
	// PeakHeap is the largest heap (allocated objects, sampled every 5 ms)
	// and PeakLiveHeap the largest heap marked live by a GC; 0 when the
	// coordinator process does not report them.
	PeakHeap     int64   `json:"peak_heap_bytes,omitempty"`
	PeakLiveHeap int64   `json:"peak_live_heap_bytes,omitempty"`
	ItemsPerSec  float64 `json:"items_per_sec,omitempty"`
}

// Run measures everything the configuration asks for, writing progress to
// cfg.Log, and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	start := time.Now()
	rep := &Report{StartedAt: start.UTC(), Machine: machine()}
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Log, "bench: "+format+"\n", args...) }

	maxPayload := cfg.MaxPayload
	if maxPayload == 0 {
		maxPayload = autoMaxPayload(cfg)
	}
	rep.Setup = Setup{
		Storage: cfg.Storage, SyncAlways: cfg.SyncAlways, Durability: durability(cfg),
		Workers: cfg.Workers, Concurrency: cfg.Concurrency, ItemSize: cfg.ItemSize,
		Runs: cfg.Runs, MaxInFlight: cfg.MaxInFlight, MaxPayload: maxPayload, CPUProfile: cfg.CPUProfile,
	}
	if len(cfg.CoordinatorCommand) > 0 {
		rep.Setup.CoordinatorProc = strings.Join(cfg.CoordinatorCommand, " ")
	}
	if maxPayload != server.MAX_PAYLOAD_SIZE {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the server's max_payload is raised from the NATS default of 1 MiB to %s so that a whole batch fits in one submit request (the NATS default holds about %d items of %d bytes)", mib(int64(maxPayload)), (server.MAX_PAYLOAD_SIZE-1024)/(cfg.ItemSize+1), cfg.ItemSize))
	}

	srv, err := startServer(cfg, maxPayload)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	logf("embedded server at %s, %s storage, max_payload %s", srv.url, cfg.Storage, mib(int64(maxPayload)))

	if err := runThroughput(ctx, cfg, srv, rep, logf); err != nil {
		return rep, err
	}
	if err := runLatency(ctx, cfg, srv, rep, logf); err != nil {
		return rep, err
	}
	if err := runBatching(ctx, cfg, srv, rep, logf); err != nil {
		return rep, err
	}
	if err := runMemory(ctx, cfg, srv, rep, logf); err != nil {
		return rep, err
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.Machine.LoadAfter = loadAvg()
	return rep, nil
}

// runThroughput measures (a), (b) and (c): per run, per size, raw then
// (optionally) raw with the guard then fanout.
func runThroughput(ctx context.Context, cfg Config, srv *benchServer, rep *Report, logf func(string, ...any)) error {
	dep, err := startFanout(ctx, srv.url, fanoutPrefix, cfg, true)
	if err != nil {
		return err
	}
	defer dep.stop()
	// A first small batch warms the deployment (consumers, caches).
	if _, err := dep.batch(ctx, makeItems(200, cfg.ItemSize), batchOptions(cfg), false); err != nil {
		return fmt.Errorf("warm-up batch: %w", err)
	}
	largest := slices.Max(cfg.Sizes)
	rows := make([]SizeRow, len(cfg.Sizes))
	refs := make([]*client.ObjectRef, len(cfg.Sizes))
	for i, n := range cfg.Sizes {
		rows[i].N = n
	}
	for run := range cfg.Runs {
		for i, n := range cfg.Sizes {
			row := &rows[i]
			payloads := rawPayloads(n, cfg.ItemSize)
			v0 := srv.msgCounts()
			wall, cpu, err := rawThroughput(ctx, srv.url, cfg, false, payloads)
			srv.logCounts("raw", v0, n, logf)
			if err != nil {
				return fmt.Errorf("raw round trip, %d items: %w", n, err)
			}
			raw, rawCPU := rate(n, wall), perItem(cpu, n)
			row.RawRuns = append(row.RawRuns, raw)
			row.RawCPURuns = append(row.RawCPURuns, rawCPU)
			logf("run %d/%d  n=%-8d raw          %9.0f items/s  %6.1f µs CPU/item", run+1, cfg.Runs, n, raw, rawCPU)
			if !cfg.NoGuard {
				wall, cpu, err := rawThroughput(ctx, srv.url, cfg, true, payloads)
				if err != nil {
					return fmt.Errorf("raw round trip with guard, %d items: %w", n, err)
				}
				row.RawGuardRuns = append(row.RawGuardRuns, rate(n, wall))
				row.RawGuardCPURuns = append(row.RawGuardCPURuns, perItem(cpu, n))
				logf("run %d/%d  n=%-8d raw + guard  %9.0f items/s  %6.1f µs CPU/item", run+1, cfg.Runs, n, rate(n, wall), perItem(cpu, n))
			}
			payloads = nil

			items := makeItems(n, cfg.ItemSize)
			var stopProfile func() error
			if cfg.CPUProfile != "" && run == 0 && n == largest {
				if stopProfile, err = startCPUProfile(cfg.CPUProfile); err != nil {
					return err
				}
			}
			if refs[i] == nil && int64(requestBytes(n, cfg.ItemSize)) > dep.nc.MaxPayload() {
				// Too large for one request: the items go from the object
				// store, as a user has to send them. Uploaded once, untimed.
				if refs[i], err = dep.uploadItems(ctx, fmt.Sprintf("bench/throughput-%d.jsonl", n), items); err != nil {
					return fmt.Errorf("fanout, %d items: %w", n, err)
				}
				row.ItemsByRef = true
				rep.Notes = append(rep.Notes, fmt.Sprintf("(b) at %s items: the submit request would be about %s, over the server's max_payload of %s, so the items go by reference (items_ref), uploaded to the object store before the timing",
					count(n), mib(int64(requestBytes(n, cfg.ItemSize))), mib(dep.nc.MaxPayload())))
			}
			v1 := srv.msgCounts()
			br, err := dep.batchFrom(ctx, items, refs[i], batchOptions(cfg), cfg.Phases)
			srv.logCounts("fanout", v1, n, logf)
			if stopProfile != nil {
				if perr := stopProfile(); perr != nil && err == nil {
					err = perr
				}
			}
			if err != nil {
				return fmt.Errorf("fanout, %d items: %w", n, err)
			}
			fo, foCPU := rate(n, br.took), perItem(br.cpu, n)
			row.FanoutRuns = append(row.FanoutRuns, fo)
			row.FanoutCPURuns = append(row.FanoutCPURuns, foCPU)
			row.RunRatios = append(row.RunRatios, fo/raw)
			if cfg.Phases {
				row.Phases = append(row.Phases, br.phases)
			}
			logf("run %d/%d  n=%-8d fanout       %9.0f items/s  %6.1f µs CPU/item  (b ÷ a %.2f)", run+1, cfg.Runs, n, fo, foCPU, fo/raw)
		}
	}
	for i := range rows {
		r := &rows[i]
		r.Raw, r.Fanout = median(r.RawRuns), median(r.FanoutRuns)
		r.RawCPU, r.FanoutCPU = median(r.RawCPURuns), median(r.FanoutCPURuns)
		if len(r.RawGuardRuns) > 0 {
			r.RawGuard, r.RawGuardCPU = median(r.RawGuardRuns), median(r.RawGuardCPURuns)
		}
		r.Ratio = r.Fanout / r.Raw
		if r.FanoutCPU > 0 {
			r.CPURatio = r.RawCPU / r.FanoutCPU
		}
	}
	rep.Rows = rows
	return nil
}

// runLatency measures (d). Raw and fanout take turns in blocks of
// latencyBlock batches (after a few unrecorded warm-up batches each), so
// that a machine whose speed drifts during the run (these VMs do, by tens
// of percent over minutes) slows both alike; the ratio is what counts.
func runLatency(ctx context.Context, cfg Config, srv *benchServer, rep *Report, logf func(string, ...any)) error {
	const warmup = 5
	row := LatencyRow{Items: cfg.LatencyItems, Batches: cfg.LatencyBatches}

	rig, err := newRawRig(ctx, srv.url, cfg, false)
	if err != nil {
		return fmt.Errorf("raw latency: %w", err)
	}
	defer rig.close()
	dep, err := startFanout(ctx, srv.url, fanoutPrefix, cfg, true)
	if err != nil {
		return err
	}
	defer dep.stop()
	payloads := rawPayloads(cfg.LatencyItems, cfg.ItemSize)
	items := makeItems(cfg.LatencyItems, cfg.ItemSize)
	raw := func() (time.Duration, error) {
		d, err := rig.roundTrip(ctx, payloads)
		if err != nil {
			return 0, fmt.Errorf("raw latency: %w", err)
		}
		return d, nil
	}
	var submits []float64
	fanout := func() (time.Duration, error) {
		br, err := dep.batch(ctx, items, batchOptions(cfg), false)
		if err != nil {
			return 0, fmt.Errorf("fanout latency: %w", err)
		}
		submits = append(submits, br.phases.SubmitReplyMS)
		return br.took, nil
	}
	for range warmup {
		if _, err := raw(); err != nil {
			return err
		}
		if _, err := fanout(); err != nil {
			return err
		}
	}
	submits = submits[:0]
	var rawCost, fanoutCost batchCost
	for done := 0; done < cfg.LatencyBatches; done += latencyBlock {
		n := min(latencyBlock, cfg.LatencyBatches-done)
		for _, side := range []struct {
			once func() (time.Duration, error)
			cost *batchCost
			ms   *[]float64
		}{{raw, &rawCost, &row.RawMS}, {fanout, &fanoutCost, &row.FanoutMS}} {
			side.cost.resume(srv)
			for range n {
				d, err := side.once()
				if err != nil {
					return err
				}
				*side.ms = append(*side.ms, ms(d))
			}
			side.cost.pause(srv)
		}
	}
	row.RawCPUMS, row.RawMsgsIn, row.RawMsgsOut = rawCost.perBatch(cfg.LatencyBatches)
	row.FanoutCPUMS, row.FanoutMsgsIn, row.FanoutMsgsOut = fanoutCost.perBatch(cfg.LatencyBatches)
	row.FanoutSubmitP50 = percentile(submits, 50)
	row.RawP50, row.RawP99 = percentile(row.RawMS, 50), percentile(row.RawMS, 99)
	row.FanoutP50, row.FanoutP99 = percentile(row.FanoutMS, 50), percentile(row.FanoutMS, 99)
	row.RatioP50 = row.FanoutP50 / row.RawP50
	logf("latency of %d-item batches: fanout p50 %.2f ms p99 %.2f ms; raw p50 %.2f ms p99 %.2f ms",
		row.Items, row.FanoutP50, row.FanoutP99, row.RawP50, row.RawP99)
	logf("per %d-item batch: fanout %.2f ms CPU, server %.1f msgs in, %.1f out; raw %.2f ms CPU, %.1f in, %.1f out",
		row.Items, row.FanoutCPUMS, row.FanoutMsgsIn, row.FanoutMsgsOut, row.RawCPUMS, row.RawMsgsIn, row.RawMsgsOut)
	rep.Latency = row
	return nil
}

// latencyBlock is how many batches raw and fanout each run in a turn of
// (d).
const latencyBlock = 25

// batchCost is what a run of small batches cost the whole process (CPU,
// server included) and the server (messages), for (d): with two cores a
// small batch's latency follows its CPU. It adds up the stretches between
// resume and pause. (Work a batch leaves behind, like fanout's final state
// save, can fall into the other side's next stretch: at most one batch's
// worth per turn.)
type batchCost struct {
	cpu      time.Duration
	msgs     msgCounts
	startCPU time.Duration
	start    msgCounts
}

// The server's counters are read outside the CPU stretch: reading them
// costs CPU too.
func (c *batchCost) resume(srv *benchServer) {
	c.start = srv.msgCounts()
	c.startCPU = cpuTime()
}

func (c *batchCost) pause(srv *benchServer) {
	c.cpu += cpuTime() - c.startCPU
	m := srv.msgCounts()
	c.msgs.in += m.in - c.start.in
	c.msgs.out += m.out - c.start.out
}

func (c *batchCost) perBatch(batches int) (cpuMS, in, out float64) {
	n := float64(batches)
	return ms(c.cpu) / n, float64(c.msgs.in) / n, float64(c.msgs.out) / n
}

// runBatching measures (e): one batch of the largest size with
// ItemsPerMessage items per work message, when the engine supports it.
func runBatching(ctx context.Context, cfg Config, srv *benchServer, rep *Report, logf func(string, ...any)) error {
	row := BatchingRow{ItemsPerMessage: cfg.ItemsPerMessage}
	opts := batchOptions(cfg)
	switch {
	case !applyItemsPerMessage(&opts, max(cfg.ItemsPerMessage, 2)):
		row.Reason = "n/a: the engine has no items_per_message option yet"
	case cfg.ItemsPerMessage < 2:
		row.Reason = "not measured: give items per message (2 or more)"
	default:
		dep, err := startFanout(ctx, srv.url, fanoutPrefix, cfg, true)
		if err != nil {
			return err
		}
		defer dep.stop()
		n := slices.Max(cfg.Sizes)
		v := srv.msgCounts()
		br, err := dep.batch(ctx, makeItems(n, cfg.ItemSize), opts, false)
		srv.logCounts(fmt.Sprintf("fanout, %d items per message", cfg.ItemsPerMessage), v, n, logf)
		if err != nil {
			return fmt.Errorf("fanout with items_per_message %d, %d items: %w", cfg.ItemsPerMessage, n, err)
		}
		row.Measured, row.N, row.ItemsPerSec = true, n, rate(n, br.took)
		logf("n=%-8d fanout, %d items per message  %9.0f items/s", n, cfg.ItemsPerMessage, row.ItemsPerSec)
	}
	rep.Batching = row
	return nil
}

func startCPUProfile(path string) (func() error, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// makeItems builds n sha256 item inputs of exactly size bytes of JSON each
// (longer only when size cannot hold the item's number).
func makeItems(n, size int) []json.RawMessage {
	items := make([]json.RawMessage, n)
	for i := range items {
		items[i] = itemJSON(i, size)
	}
	return items
}

// itemData is the string the sha256 activity hashes for item i.
func itemData(i, size int) string {
	head := "item-" + strconv.Itoa(i) + "-"
	pad := size - len(`{"data":""}`) - len(head)
	if pad <= 0 {
		return head
	}
	return head + strings.Repeat("x", pad)
}

func itemJSON(i, size int) json.RawMessage {
	return json.RawMessage(`{"data":"` + itemData(i, size) + `"}`)
}

func wantSHA256(i, size int) string {
	sum := sha256.Sum256([]byte(itemData(i, size)))
	return hex.EncodeToString(sum[:])
}

// requestBytes estimates the submit request of n items: the items plus the
// envelope the client and coordinator add.
func requestBytes(n, size int) int { return n*(size+1) + 1024 }

// autoMaxPayload is the smallest whole number of MiB, at least 1, that
// holds the largest batch measured, capped at MaxPayloadCap. Larger
// batches send their items by reference (items_ref).
func autoMaxPayload(cfg Config) int {
	need := server.MAX_PAYLOAD_SIZE
	for _, n := range append(slices.Clone(cfg.Sizes), cfg.MemorySizes...) {
		if b := requestBytes(n, cfg.ItemSize); b <= MaxPayloadCap {
			need = max(need, b)
		}
	}
	const m = 1 << 20
	return min((need+m-1)/m*m, MaxPayloadCap)
}

func durability(cfg Config) string {
	switch {
	case cfg.memory():
		return "memory storage: a server restart loses everything"
	case cfg.SyncAlways:
		return "file storage, sync always: acknowledged writes survive power loss"
	}
	return "file storage, default sync_interval (2 min): exact through process kills and broker restarts, not through power loss"
}

func machine() Machine {
	m := Machine{
		CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), OS: runtime.GOOS, Arch: runtime.GOARCH,
		Go: runtime.Version(), NATSServer: server.VERSION, NATSClient: nats.Version,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	m.LoadBefore = loadAvg()
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if v, ok := procField(string(b), "MemTotal"); ok {
			m.MemoryTotal = mib(v)
		}
	}
	return m
}

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

// perItem is d per item in microseconds.
func perItem(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / 1000 / float64(n) }

// loadAvg is the first three fields of /proc/loadavg, or "".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile is the nearest-rank percentile p (0-100] of v.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

func mib(b int64) string {
	return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB"
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// errStalled is returned when a measurement stops making progress.
var errStalled = errors.New("no progress for 60s")
