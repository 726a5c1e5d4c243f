package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/internal/bench"
)

// coordinatorProcessCmd is the hidden subcommand of `fanout bench` that the
// bench starts as the coordinator process of its memory measurement.
const coordinatorProcessCmd = "coordinator-process"

func newBenchCmd(g *globals) *cobra.Command {
	var (
		cfg            bench.Config
		sizes, memSize string
		jsonPath       string
		coordinatorBin string
		quiet          bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure fanout against the bare JetStream round trip",
		Long: `Start an embedded NATS server and measure, in one run:

  (a) the bare JetStream round trip: work published async to a WorkQueue
      stream, worker goroutines pulling from one durable consumer, each
      publishing a result async and acking after its PubAck, a collector
      reading results with an ordered consumer;
  (b) fanout end to end: a sha256 batch submitted with the client, served by
      a coordinator and workers in this process, until its aggregate arrives;
  (c) b ÷ a;
  (d) latency of small batches (submit → aggregate), and the raw equivalent;
  (e) items_per_message (with --items-per-message);
  (f) the coordinator's peak heap and RSS, with the coordinator in a child
      process (this program again, or --coordinator-bin).

Throughputs are medians of --runs runs, raw and fanout interleaved. The table
goes to stdout, progress to stderr, everything to the --json file.`,
		Example: `  fanout bench
  fanout bench --storage memory --n 10k --runs 1 --mem-n none
  fanout bench --cpuprofile fanout.prof   # then: go tool pprof -top fanout.prof
  fanout bench --n 10k --runs 1 --mem-n 100k --coordinator-heap-profile heap.prof`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Sizes, err = parseSizes(sizes); err != nil {
				return &ExitError{Code: ExitUsage, Err: fmt.Errorf("--n: %w", err)}
			}
			if cfg.MemorySizes, err = parseSizes(memSize); err != nil {
				return &ExitError{Code: ExitUsage, Err: fmt.Errorf("--mem-n: %w", err)}
			}
			cfg.NoMemory = len(cfg.MemorySizes) == 0
			if len(cfg.Sizes) == 0 {
				return &ExitError{Code: ExitUsage, Err: fmt.Errorf("--n: give at least one batch size")}
			}
			if cfg.Logger, err = g.logging.Logger(g.errOut); err != nil {
				return &ExitError{Code: ExitUsage, Err: err}
			}
			if coordinatorBin != "" {
				cfg.CoordinatorCommand = []string{coordinatorBin}
			} else {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find this program to start it as the coordinator process: %w", err)
				}
				cfg.CoordinatorCommand = []string{exe, "bench", coordinatorProcessCmd}
			}
			if !quiet {
				cfg.Log = g.errOut
			}
			rep, err := bench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if err := rep.WriteTable(g.out); err != nil {
				return err
			}
			if jsonPath != "" {
				if err := rep.WriteJSON(jsonPath); err != nil {
					return err
				}
				fmt.Fprintf(g.out, "\nwritten: %s\n", jsonPath)
			}
			if cfg.CPUProfile != "" {
				fmt.Fprintf(g.out, "cpu profile of the first fanout run of %s items: %s (go tool pprof -top %s)\n",
					strconv.Itoa(maxInt(cfg.Sizes)), cfg.CPUProfile, cfg.CPUProfile)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Storage, "storage", "file", "JetStream storage of every stream: file or memory")
	f.BoolVar(&cfg.SyncAlways, "sync-always", false, "make the server sync every write to disk before acknowledging it")
	f.IntVar(&cfg.Workers, "workers", 4, "raw worker goroutines, and fanout workers")
	f.IntVar(&cfg.Concurrency, "concurrency", 16, "items each fanout worker runs at once")
	f.IntVar(&cfg.ItemSize, "item-size", 100, "bytes of JSON per item input")
	f.StringVar(&sizes, "n", "10k,100k", "batch sizes of (a), (b) and (c), comma separated (k and M suffixes allowed)")
	f.IntVar(&cfg.Runs, "runs", 3, "runs of each throughput measurement (the table shows the median)")
	f.IntVar(&cfg.LatencyBatches, "latency-batches", 200, "batches measured for (d)")
	f.IntVar(&cfg.LatencyItems, "latency-items", 10, "items per batch for (d)")
	f.StringVar(&memSize, "mem-n", "100k,1M", `batch sizes of (f), or "none"`)
	f.StringVar(&coordinatorBin, "coordinator-bin", "", "coordinator binary for (f), e.g. a build of cmd/coordinator (default: this program; only it reports its heap)")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "max_in_flight of the fanout batches (0: the engine's default)")
	f.IntVar(&cfg.ItemsPerMessage, "items-per-message", 0, "items per work message for (e)")
	f.IntVar(&cfg.MaxPayload, "max-payload", 0, "the server's max_payload in bytes (0: the smallest whole MiB that fits the largest batch, at most 64 MiB; a batch that does not fit sends its items by reference, items_ref)")
	f.BoolVar(&cfg.NoGuard, "no-guard", false, "skip the raw round trip with the per-item result guard")
	f.BoolVar(&cfg.Phases, "phases", false, "also time the first and last result of each fanout run (a core NATS subscription on the results)")
	f.StringVar(&cfg.DataDir, "data", "", "JetStream data directory (default: a temporary one, removed after)")
	f.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the first fanout run of the largest size to this file")
	f.StringVar(&cfg.CoordinatorHeapProfile, "coordinator-heap-profile", "", "have each coordinator process of (f) write its heap profile at its largest live heap to this file (batch size added to the name)")
	f.StringVar(&jsonPath, "json", "fanout-bench.json", `write the report as JSON to this file ("" for none)`)
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	cmd.AddCommand(&cobra.Command{
		Use:    coordinatorProcessCmd,
		Short:  "The coordinator process of the bench's memory measurement",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.RunCoordinatorProcess(cmd.Context(), cmd.InOrStdin(), g.out, g.errOut)
		},
	})
	return cmd
}

// parseSizes reads "10k,100k,1M" (or "none").
func parseSizes(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return nil, nil
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		mult := 1
		switch {
		case strings.HasSuffix(part, "k"), strings.HasSuffix(part, "K"):
			mult, part = 1_000, part[:len(part)-1]
		case strings.HasSuffix(part, "M"), strings.HasSuffix(part, "m"):
			mult, part = 1_000_000, part[:len(part)-1]
		}
		n, err := strconv.Atoi(strings.ReplaceAll(part, "_", ""))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive whole number (k and M suffixes allowed)", part)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

func maxInt(v []int) int {
	m := 0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
