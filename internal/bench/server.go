package bench

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// benchServer is the one embedded server of a run. It listens on a
// loopback port so that the coordinator of (f) can run in another process;
// everything in this process connects over that port too, raw and fanout
// alike.
type benchServer struct {
	*server.Server
	url     string
	tempDir string
}

// startServer starts the run's server. It does not use internal/embedded
// because that has no max_payload setting, which batches of more than
// about 10,000 items need.
func startServer(cfg Config, maxPayload int) (*benchServer, error) {
	dir := cfg.DataDir
	var temp string
	if dir == "" {
		var err error
		if temp, err = os.MkdirTemp("", "fanout-bench-"); err != nil {
			return nil, err
		}
		dir = temp
	}
	opts := &server.Options{
		ServerName: "fanout-bench",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		NoLog:      true,
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   dir,
		MaxPayload: int32(maxPayload),
		SyncAlways: cfg.SyncAlways,
	}
	if int64(maxPayload) > server.MAX_PENDING_SIZE {
		opts.MaxPending = 2 * int64(maxPayload)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		os.RemoveAll(temp)
		return nil, fmt.Errorf("bench server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		os.RemoveAll(temp)
		return nil, errors.New("bench server: not ready within 30s")
	}
	return &benchServer{Server: s, url: s.ClientURL(), tempDir: temp}, nil
}

func (s *benchServer) stop() {
	s.Shutdown()
	s.WaitForShutdown()
	if s.tempDir != "" {
		os.RemoveAll(s.tempDir)
	}
}

// msgCounts are the server's message and byte counters (every client,
// JetStream's internal ones included).
type msgCounts struct{ in, out, inB, outB int64 }

func (s *benchServer) msgCounts() msgCounts {
	v, _ := s.Varz(nil)
	return msgCounts{v.InMsgs, v.OutMsgs, v.InBytes, v.OutBytes}
}

// logCounts logs what the server moved per item since a: the measure of
// how many messages each design costs an item, which CPU time follows.
func (s *benchServer) logCounts(what string, a msgCounts, n int, logf func(string, ...any)) {
	b := s.msgCounts()
	f := float64(n)
	logf("%s: server in %.2f msgs/item (%.0f B), out %.2f msgs/item (%.0f B)", what, float64(b.in-a.in)/f, float64(b.inB-a.inB)/f, float64(b.out-a.out)/f, float64(b.outB-a.outB)/f)
}
