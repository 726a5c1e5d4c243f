// Command worker runs fanout's built-in activities (echo, sha256, sleep)
// on items pulled from JetStream. Scale by starting more.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fanoutdev/fanout/internal/config"
	"github.com/fanoutdev/fanout/internal/faults"
	"github.com/fanoutdev/fanout/internal/observe"
	"github.com/fanoutdev/fanout/internal/workerd"
)

func main() {
	var (
		conn       config.Connection
		logging    config.Logging
		cfg        workerd.Config
		activities string
		limits     string
		storage    string
	)
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	f := config.NewFlags(fs)
	conn.Register(f)
	logging.Register(f, "info", "json")
	f.String(&cfg.Name, "name", "FANOUT_NAME", "", "this worker's name in results and logs (default: host name and a random suffix)")
	f.Int(&cfg.Concurrency, "concurrency", "FANOUT_CONCURRENCY", 16, "items run at once by this worker")
	f.Int(&cfg.Prefetch, "prefetch", "FANOUT_PREFETCH", 0, "items of each activity asked for ahead of a free slot (default: the concurrency; raise it for many fast items, set it to 1 for items longer than the ack wait)")
	f.Duration(&cfg.AckWait, "ack-wait", "FANOUT_ACK_WAIT", 30*time.Second, "how long an item stays with a worker that stopped answering before it is delivered again")
	f.Duration(&cfg.ShutdownTimeout, "shutdown-timeout", "FANOUT_SHUTDOWN_TIMEOUT", 30*time.Second, "on SIGTERM, how long running items may take to finish")
	f.String(&activities, "activities", "FANOUT_ACTIVITIES", "", "comma-separated built-in activities to serve (default: all of echo, sha256, sleep)")
	f.String(&limits, "limits", "FANOUT_ACTIVITY_LIMITS", "", "caps on items running at once per activity across ALL workers, e.g. sha256=100,sleep=10")
	f.Int(&cfg.Replicas, "replicas", "FANOUT_REPLICAS", 1, "replicas of streams this worker creates if no coordinator has yet")
	f.String(&storage, "storage", "FANOUT_STORAGE", "file", "storage of streams this worker creates if no coordinator has yet: file or memory")
	var healthcheck string
	f.String(&cfg.HTTPAddr, "http", "FANOUT_HTTP_ADDR", "", "address serving /healthz, /readyz and /metrics, e.g. :8080 (default: off)")
	fs.StringVar(&healthcheck, "healthcheck", "", "check the health URL given (e.g. http://127.0.0.1:8080/readyz), exit 0 if it answers 200, and do nothing else: for container health checks")
	err := f.Parse(fs, os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if healthcheck != "" {
		if err := observe.Check(healthcheck); err != nil {
			fmt.Fprintln(os.Stderr, "worker healthcheck:", err)
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
		cfg.Memory, err = config.Storage(storage)
	}
	if err == nil {
		cfg.URL, cfg.Prefix = conn.URL, conn.Prefix
		cfg.ConnectOptions, err = conn.LoggedOptions("fanout-worker", cfg.Logger)
	}
	if activities != "" {
		for _, a := range strings.Split(activities, ",") {
			cfg.Activities = append(cfg.Activities, strings.TrimSpace(a))
		}
	}
	if err == nil {
		cfg.Limits, err = config.ParseLimits(limits)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	faults.Load()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := workerd.Run(ctx, cfg); err != nil {
		cfg.Logger.Error().Err(err).Msg("worker failed")
		os.Exit(1)
	}
}
