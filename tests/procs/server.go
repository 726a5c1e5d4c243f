package procs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ServerStartTimeout bounds how long a nats-server may take to accept
// connections (JetStream recovery included).
var ServerStartTimeout = 30 * time.Second

// Server is a nats-server process with JetStream on a file store. It can be
// stopped, killed and started again on the same store and port.
type Server struct {
	t    testing.TB
	bin  string
	args []string
	// StoreDir is JetStream's store (the server's -sd).
	StoreDir string
	portsDir string
	// Port is the client port: chosen by the server at the first start,
	// reused at every restart.
	Port int
	// URL is nats://127.0.0.1:<Port>.
	URL string

	proc   *Proc
	starts int
}

// StartServer starts a nats-server on 127.0.0.1 with JetStream, a store in
// a fresh t.TempDir() and a port it picks itself (read from its ports
// file), and waits until it serves JetStream requests. extraArgs are added
// to the command line. It is killed in t.Cleanup.
func StartServer(t testing.TB, bins *Binaries, extraArgs ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: bins.NATSServer, args: extraArgs, StoreDir: t.TempDir(), portsDir: t.TempDir()}
	s.Start()
	return s
}

// Proc is the current server process.
func (s *Server) Proc() *Proc { return s.proc }

// Running reports whether the current server process runs.
func (s *Server) Running() bool { return s.proc != nil && s.proc.Running() }

// Start starts the server process: on a port of its choosing the first
// time, on the same port (and store) after Stop or Kill. It returns once
// the server serves JetStream requests.
func (s *Server) Start() {
	s.t.Helper()
	if s.Running() {
		s.t.Fatalf("nats-server (pid %d) is already running", s.proc.PID())
	}
	port := "-1"
	if s.Port != 0 {
		port = strconv.Itoa(s.Port)
	}
	s.starts++
	args := append([]string{
		"--addr", "127.0.0.1", "--port", port, "--jetstream", "--store_dir", s.StoreDir,
		"--ports_file_dir", s.portsDir, "--server_name", "fanout-e2e",
	}, s.args...)
	s.proc = StartProc(s.t, ProcSpec{Name: fmt.Sprintf("nats-server#%d", s.starts), Path: s.bin, Args: args})

	ctx, cancel := context.WithTimeout(context.Background(), ServerStartTimeout)
	defer cancel()
	// The server logs this once its client listener accepts connections,
	// after JetStream has recovered its store.
	if _, _, err := s.proc.Output().Await(ctx, 0, func(l string) bool { return strings.HasSuffix(l, "Server is ready") }); err != nil {
		s.t.Fatalf("%s did not become ready: %v", s.proc.Name, err)
	}
	if s.Port == 0 {
		s.Port = s.readPortsFile(ctx)
		s.URL = "nats://127.0.0.1:" + strconv.Itoa(s.Port)
	}
	if err := s.ping(ctx); err != nil {
		s.t.Fatalf("%s: JetStream not answering on %s: %v", s.proc.Name, s.URL, err)
	}
}

// readPortsFile reads the client port from the server's ports file. The
// server writes it from a goroutine around the time it is ready, so it is
// polled briefly.
func (s *Server) readPortsFile(ctx context.Context) int {
	s.t.Helper()
	name := filepath.Join(s.portsDir, fmt.Sprintf("%s_%d.ports", filepath.Base(s.bin), s.proc.PID()))
	var lastErr error
	for {
		data, err := os.ReadFile(name)
		if err == nil {
			var ports struct {
				NATS []string `json:"nats"`
			}
			if err = json.Unmarshal(data, &ports); err == nil {
				if len(ports.NATS) == 0 {
					err = fmt.Errorf("no client URL in %s", data)
				} else if u, perr := url.Parse(ports.NATS[0]); perr != nil {
					err = perr
				} else if p, perr := strconv.Atoi(u.Port()); perr != nil || p <= 0 {
					err = fmt.Errorf("bad client URL %q", ports.NATS[0])
				} else {
					return p
				}
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			s.t.Fatalf("%s: reading its ports file %s: %v", s.proc.Name, name, lastErr)
		case <-s.proc.Exited():
			s.t.Fatalf("%s exited before writing its ports file", s.proc.Name)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *Server) ping(ctx context.Context) error {
	nc, err := nats.Connect(s.URL, nats.Timeout(5*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	_, err = js.AccountInfo(ctx)
	return err
}

// Stop sends SIGTERM and waits until the server has exited (it flushes its
// store on the way out); the test fails unless it exits 0 within 30s.
func (s *Server) Stop() {
	s.t.Helper()
	if code := s.proc.Stop(30 * time.Second); code != 0 {
		s.t.Fatalf("%s exited with %d after SIGTERM", s.proc.Name, code)
	}
}

// Kill sends SIGKILL and waits until the server is gone.
func (s *Server) Kill() {
	s.t.Helper()
	s.proc.Kill()
}

// Restart is Stop then Start: the same store and port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

// Connect opens a client connection that reconnects forever (across
// restarts), closed in t.Cleanup.
func (s *Server) Connect(opts ...nats.Option) *nats.Conn {
	s.t.Helper()
	opts = append([]nats.Option{
		nats.Name("fanout-e2e-test"), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
	}, opts...)
	nc, err := nats.Connect(s.URL, opts...)
	if err != nil {
		s.t.Fatalf("connect to %s: %v", s.URL, err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}
