package config

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fanoutdev/fanout/internal/observe"
	"github.com/fanoutdev/fanout/internal/tracing/export"
)

// Service holds what the coordinator and worker binaries share: the
// connection, logging, storage and health/metrics flags, and the
// -healthcheck mode.
type Service struct {
	Name  string
	Flags *Flags
	Conn  Connection
	Log   Logging

	HTTPAddr    string
	storage     string
	healthcheck string
	fs          *flag.FlagSet

	// Set by Parse.
	Logger         zerolog.Logger
	Memory         bool
	ConnectOptions []nats.Option
	// Tracing exports spans when the OTEL_* variables ask for it (nil:
	// off); Close flushes it.
	Tracing *export.Tracing
}

// NewService registers the shared flags of the binary name; storageUsage
// describes its --storage flag.
func NewService(name, storageUsage string) *Service {
	s := &Service{Name: name, fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	s.Flags = NewFlags(s.fs)
	s.Conn.Register(s.Flags)
	s.Log.Register(s.Flags, "info", "json")
	s.Flags.String(&s.storage, "storage", "FANOUT_STORAGE", "file", storageUsage)
	s.Flags.String(&s.HTTPAddr, "http", "FANOUT_HTTP_ADDR", "", "address serving /healthz, /readyz and /metrics, e.g. :8080 (default: off)")
	s.fs.StringVar(&s.healthcheck, "healthcheck", "", "check the health URL given (e.g. http://127.0.0.1:8080/readyz), exit 0 if it answers 200, and do nothing else: for container health checks")
	return s
}

// Parse parses args, then settles the process: -h exits 0, -healthcheck
// checks and exits. It fills Logger, Memory and ConnectOptions.
func (s *Service) Parse(args []string) error {
	err := s.Flags.Parse(s.fs, args)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if s.healthcheck != "" {
		if err := observe.Check(s.healthcheck); err != nil {
			fmt.Fprintln(os.Stderr, s.Name+" healthcheck:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if err == nil {
		err = s.Conn.Validate()
	}
	if err == nil {
		s.Logger, err = s.Log.Logger(os.Stderr)
	}
	if err == nil {
		s.Memory, err = Storage(s.storage)
	}
	if err == nil {
		s.ConnectOptions, err = s.Conn.LoggedOptions("fanout-"+s.Name, s.Logger)
	}
	if err == nil {
		s.Tracing, err = export.Setup(context.Background(), "fanout-"+s.Name, s.Logger)
	}
	return err
}

// Close flushes the spans not exported yet.
func (s *Service) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), export.ShutdownTimeout)
	defer cancel()
	if err := s.Tracing.Shutdown(ctx); err != nil {
		s.Logger.Warn().Err(err).Msg("flushing spans")
	}
}

// Exit reports a configuration error and exits 2.
func (s *Service) Exit(err error) {
	fmt.Fprintln(os.Stderr, s.Name+":", err)
	os.Exit(2)
}
