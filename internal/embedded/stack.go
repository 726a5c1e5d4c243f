package embedded

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/topology"
	"github.com/fanoutdev/fanout/internal/workerd"
	"github.com/fanoutdev/fanout/worker"
)

// StackConfig configures a Stack.
type StackConfig struct {
	DataDir     string // JetStream data directory (required)
	Host        string // listen address, default 127.0.0.1
	Port        int    // listen port; 0 picks a free one
	Workers     int    // worker count, default 4
	Concurrency int    // items per worker at once, default 16
	Prefix      string
	Logger      zerolog.Logger
	// TracerProvider records the coordinator's and workers' spans (nil:
	// none).
	TracerProvider trace.TracerProvider
}

// Stack is all of fanout in one process: an embedded server, a
// coordinator and workers serving the built-in activities. It backs
// `fanout dev`, `fanout demo` and the examples' tests.
type Stack struct {
	Server      *Server
	URL         string
	coordinator *coordinator.Coordinator
	workers     []*worker.Worker
	conns       []*nats.Conn
}

// StartStack brings a Stack up; it returns when batches can be submitted.
func StartStack(ctx context.Context, cfg StackConfig) (*Stack, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("dev: a data directory is required")
	}
	if cfg.Workers == 0 {
		cfg.Workers = 4
	}
	if cfg.Workers < 1 {
		return nil, fmt.Errorf("dev: workers %d must be at least 1", cfg.Workers)
	}
	srv, err := StartContext(ctx, Options{StoreDir: cfg.DataDir, Host: cfg.Host, Port: cfg.Port})
	if errors.Is(err, ErrAddressInUse) {
		return nil, fmt.Errorf("dev: %w (another server listens on port %d: stop it, or pick another port with --port)", err, cfg.Port)
	}
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	s := &Stack{Server: srv, URL: srv.ClientURL()}
	connect := func() (*nats.Conn, error) {
		nc, err := srv.Connect(nats.MaxReconnects(-1))
		if err == nil {
			s.conns = append(s.conns, nc)
		}
		return nc, err
	}
	nc, err := connect()
	if err != nil {
		s.Stop(ctx)
		return nil, err
	}
	s.coordinator, err = coordinator.New(coordinator.Config{Conn: nc, Prefix: cfg.Prefix, Name: "dev-coordinator", Logger: cfg.Logger, TracerProvider: cfg.TracerProvider})
	if err == nil {
		err = s.coordinator.Start(ctx)
	}
	if err != nil {
		s.coordinator = nil
		s.Stop(ctx)
		return nil, err
	}
	for i := range cfg.Workers {
		nc, err := connect()
		if err != nil {
			s.Stop(ctx)
			return nil, err
		}
		w, err := workerd.New(nc, workerd.Config{
			Prefix: cfg.Prefix, Name: fmt.Sprintf("dev-worker-%d", i+1),
			Concurrency: cfg.Concurrency, Logger: cfg.Logger, TracerProvider: cfg.TracerProvider,
		})
		if err == nil {
			err = w.Start(ctx)
		}
		if err != nil {
			s.Stop(ctx)
			return nil, err
		}
		s.workers = append(s.workers, w)
	}
	return s, nil
}

// Stop drains the workers, stops the coordinator and the server.
func (s *Stack) Stop(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, w := range s.workers {
		_ = w.Stop(ctx)
	}
	if s.coordinator != nil {
		_ = s.coordinator.Stop(ctx)
	}
	for _, nc := range s.conns {
		topology.Drain(nc, 5*time.Second)
	}
	s.Server.Stop()
}
