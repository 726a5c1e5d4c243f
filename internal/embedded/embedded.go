// Package embedded runs fanout inside the process: a NATS server with
// JetStream (Start), the real server, not a mock; and the whole
// deployment, that server with a coordinator and workers (StartStack), for
// `fanout dev`, the demo and tests.
package embedded

import (
	"errors"
	"fmt"
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

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
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
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	if o.Logs {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded server: not ready within 30s")
	}
	return &Server{s}, nil
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
