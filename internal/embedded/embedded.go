// Package embedded runs fanout inside the process: a NATS server with
// JetStream (Start), the real server, not a mock; and the whole
// deployment, that server with a coordinator and workers (StartStack), for
// `fanout dev`, the demo and tests.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configure the embedded server.
type Options struct {
	// StoreDir holds JetStream's data. Required: an empty one would fall
	// back to a directory shared by every process on the machine.
	StoreDir string
	// Host and Port to listen on; Port 0 picks a free port, -1 does not
	// listen at all (in-process connections only).
	Host string
	Port int
	// Memory limits for JetStream (0: the server's defaults).
	MaxMemory, MaxStore int64
	// SyncAlways makes every write reach the disk before it is
	// acknowledged (survives power loss, much slower).
	SyncAlways bool
	// Logs turns on the server's own log output.
	Logs bool
}

// Server is a running embedded server.
type Server struct {
	*server.Server
}

// ErrAddressInUse is wrapped by the error of a server whose port is taken.
var ErrAddressInUse = errors.New("address in use")

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*Server, error) { return StartContext(context.Background(), o) }

// StartContext is Start, giving up when ctx ends. A port that is taken
// fails at once with ErrAddressInUse: the server itself would only log it
// and leave its caller waiting.
func StartContext(ctx context.Context, o Options) (*Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded server: a store directory is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName:         "fanout-embedded",
		Host:               o.Host,
		Port:               o.Port,
		NoLog:              !o.Logs,
		NoSigs:             true,
		JetStream:          true,
		StoreDir:           o.StoreDir,
		JetStreamMaxMemory: o.MaxMemory,
		JetStreamMaxStore:  o.MaxStore,
		SyncAlways:         o.SyncAlways,
	}
	switch o.Port {
	case 0:
		opts.Port = server.RANDOM_PORT
	case -1:
		opts.DontListen = true
	}
	if opts.Port > 0 {
		if err := portFree(opts.Host, opts.Port); err != nil {
			return nil, err
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	if o.Logs {
		s.ConfigureLogger()
	}
	go s.Start()
	// Waiting in short steps lets ctx (a signal) end the wait, and sees the
	// listener's error as soon as the server records it.
	deadline := time.Now().Add(30 * time.Second)
	for !s.ReadyForConnections(50 * time.Millisecond) {
		switch {
		case ctx.Err() != nil:
			s.Shutdown()
			s.WaitForShutdown()
			return nil, fmt.Errorf("embedded server: %w", ctx.Err())
		case time.Now().After(deadline):
			s.Shutdown()
			s.WaitForShutdown()
			return nil, errors.New("embedded server: not ready within 30s")
		}
	}
	return &Server{s}, nil
}

// portFree reports ErrAddressInUse when host:port cannot be listened on
// because something else listens there.
func portFree(host string, port int) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err == nil {
		return l.Close()
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("embedded server: %s: %w", addr, ErrAddressInUse)
	}
	return fmt.Errorf("embedded server: %w", err)
}

// Connect opens a client connection to the server (in-process when it does
// not listen).
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	if s.Server.ClientURL() == "" || s.Server.Addr() == nil {
		opts = append(opts, nats.InProcessServer(s.Server))
		return nats.Connect("", opts...)
	}
	return nats.Connect(s.ClientURL(), opts...)
}

// Stop shuts the server down and waits until it has.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}
