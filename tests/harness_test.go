package tests

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/tests/procs"
)

// The harness's nats-server keeps its port and its store across a SIGTERM
// restart and a SIGKILL, and the test's connection follows it.
func TestHarnessServerRestart(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	ctx := e.Context(60 * time.Second)
	kv, err := e.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "E2E_HARNESS", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	port, first := e.Server.Port, e.Server.Proc()

	e.Server.Restart()
	if e.Server.Port != port || e.Server.Proc() == first || first.Running() {
		t.Fatalf("after Restart: port %d (was %d), old process running %v", e.Server.Port, port, first.Running())
	}
	if code, _ := first.ExitCode(); code != 0 {
		t.Errorf("nats-server exited %d after SIGTERM", code)
	}
	if _, err := kv.Put(ctx, "k", []byte("v2")); err != nil {
		t.Fatalf("put after restart: %v", err)
	}

	e.Server.Kill()
	e.Server.Start()
	got, err := kv.Get(ctx, "k")
	if err != nil {
		t.Fatalf("get after kill and start: %v", err)
	}
	if string(got.Value()) != "v2" || got.Revision() != 2 {
		t.Fatalf("after kill and start: %q revision %d, want \"v2\" revision 2", got.Value(), got.Revision())
	}
	if !e.Conn.IsConnected() {
		t.Fatalf("the test's connection did not reconnect: %v", e.Conn.Status())
	}
}
