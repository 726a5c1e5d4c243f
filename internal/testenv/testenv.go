// Package testenv starts a real embedded NATS server, coordinators and
// workers for tests, and tears them down with the test.
package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/builtin"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/embedded"
	"github.com/fanoutdev/fanout/worker"
)

// Env is one test's fanout deployment.
type Env struct {
	T      testing.TB
	Server *embedded.Server
	Client *client.Client
	Conn   *nats.Conn
}

// Server starts an embedded JetStream server in the test's temp dir.
func Server(t testing.TB) *Env {
	t.Helper()
	s, err := embedded.Start(embedded.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	e := &Env{T: t, Server: s}
	e.Conn = e.Connect()
	e.Client, err = client.New(e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Connect opens a connection closed with the test.
func (e *Env) Connect() *nats.Conn {
	e.T.Helper()
	nc, err := nats.Connect(e.Server.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(nc.Close)
	return nc
}

// Logger is a test logger: warnings and errors go to the test log.
func (e *Env) Logger() zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(e.T)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

// Coordinator starts a coordinator on its own connection, stopped with the
// test. mod may adjust its config.
func (e *Env) Coordinator(mod func(*coordinator.Config)) *coordinator.Coordinator {
	e.T.Helper()
	cfg := coordinator.Config{Conn: e.Connect(), Logger: e.Logger(), Lease: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := coordinator.New(cfg)
	if err != nil {
		e.T.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
	})
	return c
}

// Worker starts a worker with the built-in activities (and any more that
// register adds), stopped with the test.
func (e *Env) Worker(register func(*worker.Worker), opts ...worker.Option) *worker.Worker {
	e.T.Helper()
	opts = append([]worker.Option{worker.WithLogger(e.Logger())}, opts...)
	w, err := worker.New(e.Connect(), opts...)
	if err != nil {
		e.T.Fatal(err)
	}
	builtin.Register(w)
	if register != nil {
		register(w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	return w
}

// Stream opens a stream by name, failing the test if it cannot.
func (e *Env) Stream(ctx context.Context, name string) jetstream.Stream {
	e.T.Helper()
	js, err := jetstream.New(e.Conn)
	if err != nil {
		e.T.Fatal(err)
	}
	s, err := js.Stream(ctx, name)
	if err != nil {
		e.T.Fatal(err)
	}
	return s
}

// Submit submits a batch and fails the test if it is refused.
func (e *Env) Submit(req client.BatchRequest) *client.SubmitReply {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := e.Client.Submit(ctx, req)
	if err != nil {
		e.T.Fatalf("submit: %v", err)
	}
	return r
}

// Wait waits for a batch's aggregate, failing the test after timeout.
func (e *Env) Wait(batchID string, timeout time.Duration) *client.Aggregate {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	agg, err := e.Client.Wait(ctx, batchID, nil)
	if err != nil {
		e.T.Fatalf("wait for %s: %v", batchID, err)
	}
	return agg
}
