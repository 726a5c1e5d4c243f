package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/config"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/topology"
)

// ChildEnv is set in the environment of a coordinator process the bench
// starts; a test binary checks it in TestMain to become that process.
const ChildEnv = "FANOUT_BENCH_CHILD"

// heapProfileEnv names the file where the coordinator process writes the
// heap profile taken at its largest live heap.
const heapProfileEnv = "FANOUT_BENCH_HEAP_PROFILE"

// runMemory measures (f): for each size, a fresh coordinator process, a
// batch submitted from here and served by workers here, and the process's
// peak RSS (VmHWM) and heap once the aggregate has arrived.
func runMemory(ctx context.Context, cfg Config, srv *benchServer, rep *Report, logf func(string, ...any)) error {
	for _, n := range cfg.MemorySizes {
		row := MemoryRow{N: n, RequestBytes: requestBytes(n, cfg.ItemSize)}
		switch {
		case len(cfg.CoordinatorCommand) == 0:
			row.Reason = "not measured: no coordinator process command configured"
		case !procStatusAvailable():
			row.Reason = "not measurable here: /proc/<pid>/status (VmHWM) is Linux only"
		default:
			if err := measureCoordinator(ctx, cfg, srv, n, &row, logf); err != nil {
				return fmt.Errorf("coordinator memory, %d items: %w", n, err)
			}
		}
		if row.Measured {
			logf("coordinator memory, %d items: peak RSS %s (idle %s), peak heap %s", n, mib(row.PeakRSS), mib(row.BaselineRSS), mib(row.PeakHeap))
		} else {
			logf("coordinator memory, %d items: %s", n, row.Reason)
		}
		rep.Memory = append(rep.Memory, row)
	}
	return nil
}

func measureCoordinator(ctx context.Context, cfg Config, srv *benchServer, n int, row *MemoryRow, logf func(string, ...any)) error {
	items := makeItems(n, cfg.ItemSize)
	// The request as the client will send it: its exact size decides
	// whether it can be sent at all.
	body, err := json.Marshal(client.BatchRequest{Activity: "sha256", Items: items, Options: batchOptions(cfg)})
	if err != nil {
		return err
	}
	row.RequestBytes = len(body)
	body = nil

	child, err := startChild(cfg, srv.url, n)
	if err != nil {
		return err
	}
	defer child.kill()
	dep, err := startFanout(ctx, srv.url, memoryPrefix, cfg, false)
	if err != nil {
		return err
	}
	defer dep.stop()
	if err := child.waitReady(ctx, dep.client); err != nil {
		return err
	}
	row.BaselineRSS, _ = procStatus(child.cmd.Process.Pid, "VmRSS")
	logf("coordinator process %d ready (RSS %s); submitting %d items (%s request)", child.cmd.Process.Pid, mib(row.BaselineRSS), n, mib(int64(row.RequestBytes)))

	// Items from the object store (items_ref), as a batch of this size
	// must be sent: the coordinator streams them, which is what bounds its
	// memory.
	ref, err := dep.uploadItems(ctx, fmt.Sprintf("bench/items-%d.jsonl", n), items)
	if err != nil {
		return err
	}
	br, err := dep.batchFrom(ctx, items, ref, batchOptions(cfg), false)
	if err != nil {
		var nerr *client.Error
		switch {
		case errors.As(err, &nerr) && nerr.Code == client.CodeTooLarge:
			row.Reason = "not measurable: the coordinator refused the batch: " + nerr.Message
		default:
			return err
		}
		return child.stop()
	}
	row.PeakRSS, _ = procStatus(child.cmd.Process.Pid, "VmHWM")
	row.ItemsPerSec = rate(n, br.took)
	if err := child.stop(); err != nil {
		return err
	}
	if st, ok := child.stats(); ok {
		row.PeakHeap, row.PeakLiveHeap = st.PeakHeap, st.PeakLiveHeap
	}
	row.Measured = true
	return nil
}

// child is a coordinator process.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout bytes.Buffer
	exited chan struct{}
	err    error
}

func startChild(cfg Config, url string, n int) (*child, error) {
	c := &child{exited: make(chan struct{})}
	c.cmd = exec.Command(cfg.CoordinatorCommand[0], cfg.CoordinatorCommand[1:]...)
	c.cmd.Env = append(os.Environ(),
		ChildEnv+"=coordinator",
		"NATS_URL="+url,
		"FANOUT_PREFIX="+memoryPrefix,
		"FANOUT_STORAGE="+cfg.Storage,
		"FANOUT_LOG_LEVEL=warn",
		"FANOUT_LOG_FORMAT=text",
	)
	if path := heapProfilePath(cfg.CoordinatorHeapProfile, n); path != "" {
		c.cmd.Env = append(c.cmd.Env, heapProfileEnv+"="+path)
	}
	c.cmd.Stdout = &c.stdout
	c.cmd.Stderr = cfg.Log
	setChildAttrs(c.cmd)
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start coordinator process %q: %w", cfg.CoordinatorCommand[0], err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// waitReady waits until a coordinator answers a status request.
func (c *child) waitReady(ctx context.Context, cl *client.Client) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cl.Status(rctx, "bench-readiness-probe")
		cancel()
		var e *client.Error
		if errors.As(err, &e) && e.Code == client.CodeNotFound {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("coordinator process exited before it was ready: %v", c.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("coordinator process not ready within 30s: %v", err)
		}
	}
}

// stop asks the process to stop (SIGTERM, and its stdin closed) and waits.
func (c *child) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	_ = c.stdin.Close()
	select {
	case <-c.exited:
		return nil
	case <-time.After(40 * time.Second):
		c.kill()
		return errors.New("coordinator process did not stop within 40s of SIGTERM")
	}
}

func (c *child) kill() {
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// childStats is the line RunCoordinatorProcess prints when it stops.
type childStats struct {
	PeakHeap     int64 `json:"peak_heap_bytes"`
	PeakLiveHeap int64 `json:"peak_live_heap_bytes"`
}

func (c *child) stats() (childStats, bool) {
	var st childStats
	sc := bufio.NewScanner(bytes.NewReader(c.stdout.Bytes()))
	ok := false
	for sc.Scan() {
		if json.Unmarshal(sc.Bytes(), &st) == nil && st.PeakHeap > 0 {
			ok = true
		}
	}
	return st, ok
}

// RunCoordinatorProcess is the coordinator process of (f): it runs a
// coordinator configured from the environment the bench gives it (NATS_URL,
// FANOUT_PREFIX, FANOUT_STORAGE, FANOUT_LOG_LEVEL), samples its own heap
// every 5 ms, and when ctx ends or stdin closes it stops the coordinator
// and prints its peak heap as one JSON line on stdout.
func RunCoordinatorProcess(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
	memory, err := config.Storage(config.Env("FANOUT_STORAGE", "file"))
	if err != nil {
		return err
	}
	logging := config.Logging{Level: config.Env("FANOUT_LOG_LEVEL", "warn"), Format: config.Env("FANOUT_LOG_FORMAT", "text")}
	log, err := logging.Logger(stderr)
	if err != nil {
		log = zerolog.Nop()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		cancel()
	}()

	peak := heapPeak{profilePath: os.Getenv(heapProfileEnv)}
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		peak.sample(sampleCtx, 5*time.Millisecond)
	}()

	err = coordinator.Run(ctx, coordinator.Config{
		URL:      config.Env("NATS_URL", nats.DefaultURL),
		Prefix:   config.Env("FANOUT_PREFIX", ""),
		Name:     "bench-coordinator-process",
		Topology: topology.Config{Memory: memory},
		Logger:   log,
	})
	stopSampling()
	<-sampled
	if err := peak.writeProfile(); err != nil {
		fmt.Fprintf(stderr, "heap profile: %v\n", err)
	}
	line, _ := json.Marshal(childStats{PeakHeap: peak.heap, PeakLiveHeap: peak.live})
	fmt.Fprintf(stdout, "%s\n", line)
	return err
}

// heapPeak follows the largest heap seen. With a profile path it also
// keeps the heap profile (as of the last GC) taken when the live heap
// reached its largest.
type heapPeak struct {
	profilePath string
	heap, live  int64
	profiledAt  int64 // live heap when the kept profile was taken
	profile     bytes.Buffer
}

func (p *heapPeak) sample(ctx context.Context, every time.Duration) {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		metrics.Read(s)
		if s[0].Value.Kind() == metrics.KindUint64 {
			p.heap = max(p.heap, int64(s[0].Value.Uint64()))
		}
		if s[1].Value.Kind() == metrics.KindUint64 {
			live := int64(s[1].Value.Uint64())
			p.live = max(p.live, live)
			// A new profile only when the live heap grew by a tenth.
			if p.profilePath != "" && live > 0 && (p.profile.Len() == 0 || live > p.profiledAt+p.profiledAt/10) {
				p.profile.Reset()
				if pprof.Lookup("heap").WriteTo(&p.profile, 0) == nil {
					p.profiledAt = live
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *heapPeak) writeProfile() error {
	if p.profilePath == "" {
		return nil
	}
	if p.profile.Len() == 0 { // no GC ran: the profile as it is now
		if err := pprof.Lookup("heap").WriteTo(&p.profile, 0); err != nil {
			return err
		}
	}
	return os.WriteFile(p.profilePath, p.profile.Bytes(), 0o644)
}

// heapProfilePath is where the coordinator process of an n-item batch
// writes its heap profile: base with n before the extension.
func heapProfilePath(base string, n int) string {
	if base == "" {
		return ""
	}
	ext := filepath.Ext(base)
	return strings.TrimSuffix(base, ext) + "-" + strconv.Itoa(n) + ext
}

func procStatusAvailable() bool {
	_, err := os.Stat("/proc/self/status")
	return err == nil
}

// procStatus reads a "kB" field (VmRSS, VmHWM) of /proc/<pid>/status, in
// bytes.
func procStatus(pid int, field string) (int64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	return procField(string(b), field)
}

// procField finds "Field:   123 kB" in a /proc file and returns bytes.
func procField(text, field string) (int64, bool) {
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != field {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0, false
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, false
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		return n, true
	}
	return 0, false
}
