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
