// Package workerd is the worker process: the worker SDK serving the
// built-in activities on its own connection.
package workerd

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/internal/builtin"
	"github.com/fanoutdev/fanout/internal/observe"
	"github.com/fanoutdev/fanout/internal/topology"
	"github.com/fanoutdev/fanout/worker"
)

// Config configures the worker process.
type Config struct {
	URL            string
	ConnectOptions []nats.Option
	Prefix         string
	// JSDomain: see worker.WithJetStreamDomain.
	JSDomain        string
	Name            string
	Concurrency     int
	Prefetch        int
	AckWait         time.Duration
	ShutdownTimeout time.Duration
	Replicas        int
	Memory          bool
	// Activities limits the built-ins served (all when empty).
	Activities []string
	// Limits caps items of an activity running at once across all workers.
	Limits map[string]int
	// HTTPAddr serves /healthz, /readyz and /metrics when set (Run only).
	HTTPAddr string
	Observer worker.Observer
	// TracerProvider records a span per item attempt (nil: none).
	TracerProvider trace.TracerProvider
	Logger         zerolog.Logger
}

// extraActivities returns activities served besides the built-ins: none,
// except in builds with the fanout_faults tag (faults.go), which serve the
// fault-injection activities when the tests ask for them.
var extraActivities = func() map[string]worker.Handler { return nil }

// New builds a worker for the built-in activities on nc.
func New(nc *nats.Conn, cfg Config) (*worker.Worker, error) {
	opts := []worker.Option{worker.WithLogger(cfg.Logger)}
	if cfg.Observer != nil {
		opts = append(opts, worker.WithObserver(cfg.Observer))
	}
	if cfg.TracerProvider != nil {
		opts = append(opts, worker.WithTracerProvider(cfg.TracerProvider))
	}
	if cfg.Prefix != "" {
		opts = append(opts, worker.WithPrefix(cfg.Prefix))
	}
	if cfg.JSDomain != "" {
		opts = append(opts, worker.WithJetStreamDomain(cfg.JSDomain))
	}
	if cfg.Name != "" {
		opts = append(opts, worker.WithName(cfg.Name))
	}
	if cfg.Concurrency != 0 {
		opts = append(opts, worker.WithConcurrency(cfg.Concurrency))
	}
	if cfg.Prefetch != 0 {
		opts = append(opts, worker.WithPrefetch(cfg.Prefetch))
	}
	if cfg.AckWait != 0 {
		opts = append(opts, worker.WithAckWait(cfg.AckWait))
	}
	if cfg.ShutdownTimeout != 0 {
		opts = append(opts, worker.WithShutdownTimeout(cfg.ShutdownTimeout))
	}
	if cfg.Replicas != 0 || cfg.Memory {
		opts = append(opts, worker.WithStreams(max(cfg.Replicas, 1), cfg.Memory))
	}
	for activity, n := range cfg.Limits {
		opts = append(opts, worker.WithActivityLimit(activity, n))
	}
	w, err := worker.New(nc, opts...)
	if err != nil {
		return nil, err
	}
	all := builtin.Handlers()
	names := cfg.Activities
	if len(names) == 0 {
		names = slices.Sorted(maps.Keys(all))
	}
	extra := extraActivities()
	maps.Copy(all, extra)
	if len(cfg.Activities) == 0 {
		names = append(names, slices.Sorted(maps.Keys(extra))...)
	}
	for _, name := range names {
		h, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("activity %q: not a built-in activity (have: echo, sha256, sleep)", name)
		}
		w.Handle(name, h)
	}
	return w, nil
}

// Run connects, serves until ctx is done, then drains.
func Run(ctx context.Context, cfg Config) error {
	nc, err := nats.Connect(cfg.URL, cfg.ConnectOptions...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", cfg.URL, err)
	}
	defer topology.Drain(nc, 10*time.Second)
	reg := observe.NewRegistry()
	var metrics *observe.WorkerMetrics
	if cfg.Observer == nil {
		metrics = observe.NewWorkerMetrics(reg, cmp.Or(cfg.Concurrency, worker.DefaultConcurrency))
		cfg.Observer = metrics
	}
	w, err := New(nc, cfg)
	if err != nil {
		return err
	}
	if metrics != nil {
		metrics.Activities(w.Activities())
	}
	httpSrv, err := observe.Start(cfg.HTTPAddr, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return w.Ready(ctx)
	}, reg)
	if err != nil {
		return err
	}
	defer httpSrv.Stop(context.Background())
	return w.Run(ctx)
}
