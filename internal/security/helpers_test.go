package security_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// startServer starts a real nats-server from configuration text (listen
// on a random port, JetStream in the test's temp dir, then conf) and stops
// it with the test.
func startServer(t *testing.T, conf string) *server.Server {
	t.Helper()
	dir := t.TempDir()
	full := fmt.Sprintf("listen: \"127.0.0.1:-1\"\njetstream { store_dir: %q }\n%s", filepath.Join(dir, "jetstream"), conf)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("server configuration: %v\n%s", err, full)
	}
	opts.NoLog, opts.NoSigs = true, true
	return runServer(t, opts)
}

// runServer starts a server with opts and stops it with the test.
func runServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// recorder keeps the asynchronous errors of one connection, where the
// server's permission violations arrive.
type recorder struct {
	mu      sync.Mutex
	errs    []error
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.errs = append(r.errs, err)
		close(r.changed)
		r.changed = make(chan struct{})
	})
}

// violations returns the permission violations seen so far.
func (r *recorder) violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, err := range r.errs {
		if errors.Is(err, nats.ErrPermissionViolation) {
			out = append(out, err.Error())
		}
	}
	return out
}

// await waits for a permission violation on a subject starting with
// subject (for a publish) or equal to it (for a subscription).
func (r *recorder) await(t *testing.T, subject string) error {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		for _, err := range r.errs {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject) {
				r.mu.Unlock()
				return err
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-timeout.C:
			t.Fatalf("no permission violation for %q within 10s; violations seen: %q", subject, r.violations())
			return nil
		}
	}
}

// denied runs op, a request the server should refuse, waits for the
// permission violation on subject and then cancels op's context (a refused
// request gets no reply, so it would otherwise wait for its deadline). It
// returns op's error.
func denied(t *testing.T, r *recorder, subject string, op func(ctx context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	r.await(t, subject)
	cancel()
	return <-done
}

// testLogger sends warnings and errors to the test log.
func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

// streamLastSeq is a stream's last sequence, read from the server's own
// monitoring (no client permissions involved).
func streamLastSeq(t *testing.T, s *server.Server, stream string) uint64 {
	t.Helper()
	info, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, acc := range info.AccountDetails {
		for _, st := range acc.Streams {
			if st.Name == stream {
				return st.State.LastSeq
			}
		}
	}
	t.Fatalf("stream %s not found", stream)
	return 0
}
