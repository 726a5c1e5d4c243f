package worker

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, what)
		}
		<-tick.C
	}
}

// A worker's heartbeat carries the items it runs, and expires when the
// heartbeats stop without a clean stop (a crash): the bucket drops the key
// one TTL after the last write.
func TestPresenceExpiresAfterACrash(t *testing.T) {
	t.Parallel()
	// The server itself: internal/embedded imports this package.
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w, err := New(nc, WithName("crashy/worker 1"), WithConcurrency(4))
	if err != nil {
		t.Fatal(err)
	}
	w.HandleFunc("b", func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil })
	w.HandleFunc("a", func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil })
	if w.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	w.inUse.Store(2)

	p := startPresence(w, 50*time.Millisecond, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var kv jetstream.KeyValue
	eventually(t, 10*time.Second, "the workers bucket exists", func() bool {
		kv, err = w.js.KeyValue(ctx, w.names.WorkersBucket())
		return err == nil
	})
	var got Presence
	eventually(t, 10*time.Second, "a heartbeat with 2 items in use", func() bool {
		e, err := kv.Get(ctx, p.static.Key)
		return err == nil && json.Unmarshal(e.Value(), &got) == nil && got.InUse == 2
	})
	if got.Name != "crashy/worker 1" || got.Key != p.static.Key || got.Concurrency != 4 ||
		len(got.Activities) != 2 || got.Activities[0] != "a" || got.Activities[1] != "b" ||
		got.StartedAt.IsZero() || got.UpdatedAt.Before(got.StartedAt) {
		t.Fatalf("heartbeat %+v", got)
	}
	if want := "crashy_worker_1."; len(got.Key) != len(want)+8 || got.Key[:len(want)] != want {
		t.Fatalf("key %q, want %s<8 characters>", got.Key, want)
	}

	// A crash: the heartbeats stop and the key is not deleted.
	p.cancel()
	<-p.done
	eventually(t, 10*time.Second, "the heartbeat expires", func() bool {
		_, err := kv.Get(ctx, p.static.Key)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
}

func TestPresenceKey(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"host-1a2b3c4d": "host-1a2b3c4d.run",
		"a.b/c d=é":     "a_b_c_d__.run",
		"":              "worker.run",
	} {
		if got := presenceKey(name, "run"); got != want {
			t.Errorf("presenceKey(%q) = %q, want %q", name, got, want)
		}
	}
	long := make([]byte, 500)
	for i := range long {
		long[i] = 'x'
	}
	if got := presenceKey(string(long), "run"); len(got) != 200+len(".run") {
		t.Errorf("key of a 500-character name has %d characters", len(got))
	}
}
