// Command coordinator accepts fanout batches, drives them through the
// workers and publishes their aggregates. Run several for availability.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fanoutdev/fanout/internal/config"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/observe"
)

func main() {
	var (
		conn    config.Connection
		logging config.Logging
		cfg     coordinator.Config
		storage string
	)
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	f := config.NewFlags(fs)
	conn.Register(f)
	logging.Register(f, "info", "json")
	f.String(&cfg.Name, "name", "FANOUT_NAME", "", "this coordinator's name in logs and batch state (default: host name and a random suffix)")
	f.Duration(&cfg.Lease, "lease", "FANOUT_LEASE", 10*time.Second, "how long a batch stays with a coordinator that stopped answering before another takes it over")
	f.Int(&cfg.MaxBatches, "max-batches", "FANOUT_MAX_BATCHES", 1000, "batches this coordinator drives at once")
	f.Int(&cfg.MaxItems, "max-items", "FANOUT_MAX_ITEMS", 1_000_000, "most items in one batch")
	f.Duration(&cfg.CheckpointInterval, "checkpoint-interval", "FANOUT_CHECKPOINT_INTERVAL", 100*time.Millisecond, "longest time counted results stay unsaved")
	f.Int(&cfg.CheckpointEvery, "checkpoint-every", "FANOUT_CHECKPOINT_EVERY", 1000, "most results counted between two checkpoints")
	f.Duration(&cfg.ProgressInterval, "progress-interval", "FANOUT_PROGRESS_INTERVAL", 250*time.Millisecond, "least time between two progress events of a batch")
	f.Int(&cfg.ClaimCheckBytes, "claim-check-bytes", "FANOUT_CLAIM_CHECK_BYTES", 256*1024, "item inputs larger than this many bytes travel through the object store instead of inside their work message")
	f.Int(&cfg.Topology.Replicas, "replicas", "FANOUT_REPLICAS", 1, "replicas of every stream and bucket (3 in a NATS cluster)")
	f.String(&storage, "storage", "FANOUT_STORAGE", "file", "JetStream storage: file or memory")
	f.Duration(&cfg.Topology.Retention, "retention", "FANOUT_RETENTION", 7*24*time.Hour, "how long finished batches' results, aggregates and state are kept; also the longest batch timeout")
	var healthcheck string
	f.String(&cfg.HTTPAddr, "http", "FANOUT_HTTP_ADDR", "", "address serving /healthz, /readyz and /metrics, e.g. :8080 (default: off)")
	fs.StringVar(&healthcheck, "healthcheck", "", "check the health URL given (e.g. http://127.0.0.1:8080/readyz), exit 0 if it answers 200, and do nothing else: for container health checks")
	err := f.Parse(fs, os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if healthcheck != "" {
		if err := observe.Check(healthcheck); err != nil {
			fmt.Fprintln(os.Stderr, "coordinator healthcheck:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if err == nil {
		err = conn.Validate()
	}
	if err == nil {
		cfg.Logger, err = logging.Logger(os.Stderr)
	}
	if err == nil {
		cfg.Topology.Memory, err = config.Storage(storage)
	}
	if err == nil {
		cfg.URL, cfg.Prefix = conn.URL, conn.Prefix
		cfg.ConnectOptions, err = conn.LoggedOptions("fanout-coordinator", cfg.Logger)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := coordinator.Run(ctx, cfg); err != nil {
		cfg.Logger.Error().Err(err).Msg("coordinator failed")
		os.Exit(1)
	}
}
