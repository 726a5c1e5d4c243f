// Command coordinator accepts fanout batches, drives them through the
// workers and publishes their aggregates. Run several for availability.
package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fanoutdev/fanout/internal/config"
	"github.com/fanoutdev/fanout/internal/coordinator"
)

func main() {
	var cfg coordinator.Config
	svc := config.NewService("coordinator", "JetStream storage: file or memory")
	f := svc.Flags
	f.String(&cfg.Name, "name", "FANOUT_NAME", "", "this coordinator's name in logs and batch state (default: host name and a random suffix)")
	f.Duration(&cfg.Lease, "lease", "FANOUT_LEASE", 10*time.Second, "how long a batch stays with a coordinator that stopped answering before another takes it over")
	f.Int(&cfg.MaxBatches, "max-batches", "FANOUT_MAX_BATCHES", 1000, "batches this coordinator drives at once")
	f.Int(&cfg.MaxItems, "max-items", "FANOUT_MAX_ITEMS", 1_000_000, "most items in one batch")
	f.Duration(&cfg.CheckpointInterval, "checkpoint-interval", "FANOUT_CHECKPOINT_INTERVAL", 100*time.Millisecond, "longest time counted results stay unsaved")
	f.Int(&cfg.CheckpointEvery, "checkpoint-every", "FANOUT_CHECKPOINT_EVERY", 1000, "most results counted between two checkpoints")
	f.Duration(&cfg.ProgressInterval, "progress-interval", "FANOUT_PROGRESS_INTERVAL", 250*time.Millisecond, "least time between two progress events of a batch")
	f.Int(&cfg.ClaimCheckBytes, "claim-check-bytes", "FANOUT_CLAIM_CHECK_BYTES", 256*1024, "item inputs larger than this many bytes travel through the object store instead of inside their work message")
	f.Int(&cfg.AutoPack, "auto-pack", "FANOUT_AUTO_PACK", coordinator.DefaultAutoPack, "largest number of items packed into one work message for batches that do not set items_per_message, once their items prove fast (1: never pack them)")
	f.Int(&cfg.Topology.Replicas, "replicas", "FANOUT_REPLICAS", 1, "replicas of every stream and bucket (3 in a NATS cluster)")
	f.Duration(&cfg.Topology.Retention, "retention", "FANOUT_RETENTION", 7*24*time.Hour, "how long finished batches' results, aggregates and state are kept; also the longest batch timeout")
	f.Duration(&cfg.DefaultTimeout, "default-timeout", "FANOUT_DEFAULT_TIMEOUT", 0, "timeout of a batch that sets none (default: the retention, the longest a batch can run and still be counted exactly)")
	err := svc.Parse(os.Args[1:])
	if err == nil && svc.Conn.JSDomain != "" {
		err = errors.New("--js-domain ($NATS_JS_DOMAIN) is for workers and clients in their own accounts: the coordinator runs in the account that holds fanout's streams (docs/security.md)")
	}
	if err != nil {
		svc.Exit(err)
	}
	cfg.URL, cfg.Prefix, cfg.ConnectOptions = svc.Conn.URL, svc.Conn.Prefix, svc.ConnectOptions
	cfg.Logger, cfg.Topology.Memory, cfg.HTTPAddr = svc.Logger, svc.Memory, svc.HTTPAddr
	cfg.TracerProvider = svc.Tracing.Provider()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = coordinator.Run(ctx, cfg)
	svc.Close()
	if err != nil {
		cfg.Logger.Error().Err(err).Msg("coordinator failed")
		os.Exit(1)
	}
}
