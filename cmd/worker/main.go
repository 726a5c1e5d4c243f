// Command worker runs fanout's built-in activities (echo, sha256, sleep)
// on items pulled from JetStream. Scale by starting more.
package main

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fanoutdev/fanout/internal/config"
	"github.com/fanoutdev/fanout/internal/workerd"
)

func main() {
	var (
		cfg        workerd.Config
		activities string
		limits     string
	)
	svc := config.NewService("worker", "storage of streams this worker creates if no coordinator has yet: file or memory")
	f := svc.Flags
	f.String(&cfg.Name, "name", "FANOUT_NAME", "", "this worker's name in results and logs (default: host name and a random suffix)")
	f.Int(&cfg.Concurrency, "concurrency", "FANOUT_CONCURRENCY", 16, "items run at once by this worker")
	f.Int(&cfg.Prefetch, "prefetch", "FANOUT_PREFETCH", 0, "items of each activity taken ahead of a free slot, kept with heartbeats while they wait (default: the concurrency; raise it for many fast items, lower it for small batches of slow items)")
	f.Duration(&cfg.AckWait, "ack-wait", "FANOUT_ACK_WAIT", 30*time.Second, "how long an item stays with a worker that stopped answering before it is delivered again")
	f.Duration(&cfg.ShutdownTimeout, "shutdown-timeout", "FANOUT_SHUTDOWN_TIMEOUT", 30*time.Second, "on SIGTERM, how long running items may take to finish")
	f.String(&activities, "activities", "FANOUT_ACTIVITIES", "", "comma-separated built-in activities to serve (default: all of echo, sha256, sleep)")
	f.String(&limits, "limits", "FANOUT_ACTIVITY_LIMITS", "", "caps on items running at once per activity across ALL workers, e.g. sha256=100,sleep=10")
	f.Int(&cfg.Replicas, "replicas", "FANOUT_REPLICAS", 1, "replicas of streams this worker creates if no coordinator has yet")
	err := svc.Parse(os.Args[1:])
	if err == nil {
		cfg.Limits, err = config.ParseLimits(limits)
	}
	if err != nil {
		svc.Exit(err)
	}
	if activities != "" {
		for _, a := range strings.Split(activities, ",") {
			cfg.Activities = append(cfg.Activities, strings.TrimSpace(a))
		}
	}
	cfg.URL, cfg.Prefix, cfg.JSDomain, cfg.ConnectOptions = svc.Conn.URL, svc.Conn.Prefix, svc.Conn.JSDomain, svc.ConnectOptions
	cfg.Logger, cfg.Memory, cfg.HTTPAddr = svc.Logger, svc.Memory, svc.HTTPAddr
	cfg.TracerProvider = svc.Tracing.Provider()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = workerd.Run(ctx, cfg)
	svc.Close()
	if err != nil {
		cfg.Logger.Error().Err(err).Msg("worker failed")
		os.Exit(1)
	}
}
