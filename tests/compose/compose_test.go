package compose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
)

// TestCompose runs docker-compose.yml: one NATS server, a coordinator, 3
// workers; while batches run it scales to 5 workers, kills a worker and
// restarts the NATS container. Every batch must end exact.
func TestCompose(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ports := freePorts(t, 2)
	s := newStack(t, false, map[string]string{
		"NATS_PORT":         fmt.Sprint(ports[0]),
		"NATS_MONITOR_PORT": fmt.Sprint(ports[1]),
		// Few items per worker at once, so that the batch outlives the
		// disruptions; a killed worker's items come back after 3s.
		"FANOUT_CONCURRENCY": "4",
		"FANOUT_ACK_WAIT":    "3s",
		"FANOUT_LEASE":       "4s",
	})
	start := time.Now()
	logf := func(format string, args ...any) {
		t.Logf("%5.1fs "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}
	s.mustScript(ctx, "up", "--workers", "3")
	logf("up with 3 workers, all healthy")
	if n := len(s.containers(ctx, "worker")); n != 3 {
		t.Fatalf("%d workers, want 3", n)
	}
	_, c := connect(t, ports[0])
	// Auth is on: without credentials, or with a wrong password, NATS
	// refuses the connection (the services run as their roles' users).
	for _, opts := range [][]nats.Option{nil, {nats.UserInfo("worker", "wrong")}} {
		if nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", ports[0]), append(opts, nats.MaxReconnects(0))...); err == nil {
			nc.Close()
			t.Fatal("NATS accepted a connection without valid credentials")
		} else if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connecting without valid credentials: %v, want an authorization error", err)
		}
	}

	sleepReq, sleepWant := sleepBatch(900)
	long := submit(ctx, t, c, "sleep", sleepReq, sleepWant)

	waitDone(ctx, t, c, long, 90, "scale to 5 workers")
	s.mustScript(ctx, "scale", "--workers", "5")
	s.waitHealthy(ctx, "worker", 5, 90*time.Second)
	logf("5 workers healthy")
	shaReq, shaWant := shaBatch("compose", 2000)
	sha := submit(ctx, t, c, "sha256", shaReq, shaWant)

	p := waitDone(ctx, t, c, long, 0, "kill a worker")
	var victim string
	for _, w := range s.inspect(ctx, s.containers(ctx, "worker")) {
		if w.status == "running" {
			victim = w.id
		}
	}
	if victim == "" {
		t.Fatal("no running worker to kill")
	}
	s.docker(ctx, "kill", victim)
	logf("killed worker %.12s", victim)

	waitDone(ctx, t, c, long, p.Done+20, "restart NATS")
	s.docker(ctx, "restart", "-t", "10", s.container(ctx, "nats"))
	logf("NATS container restarted")
	echoReq, echoWant := echoBatch("after-nats-restart", 500)
	echo := submit(ctx, t, c, "echo", echoReq, echoWant)

	checkExact(ctx, t, c, long, sha, echo)
	s.waitHealthy(ctx, "nats", 1, time.Minute)
	logf("all batches exact")

	// The cli service, as the client user in the client account: a
	// batch's state (a request to the coordinators) and the live workers
	// (read from the workers bucket through the imported JetStream API).
	var st client.Progress
	if err := json.Unmarshal([]byte(s.cli(ctx, "status", "--json", sha.id)), &st); err != nil || st.BatchID != sha.id || st.Status != client.StatusCompleted {
		t.Fatalf("cli status: %+v, %v", st, err)
	}
	var ws []client.WorkerPresence
	if err := json.Unmarshal([]byte(s.cli(ctx, "workers", "--json")), &ws); err != nil || len(ws) == 0 || !slices.Contains(ws[0].Activities, "sha256") {
		t.Fatalf("cli workers: %+v, %v", ws, err)
	}
	logf("cli service: status and %d live workers", len(ws))
}

// TestComposeCluster runs docker-compose.cluster.yml: three NATS nodes,
// two coordinators, 3 workers, everything with 3 replicas. While batches
// run it stops the NATS node leading the results stream, then kills the
// coordinator driving the long batch. Every batch must end exact.
func TestComposeCluster(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ports := freePorts(t, 6)
	s := newStack(t, true, map[string]string{
		"NATS1_PORT":         fmt.Sprint(ports[0]),
		"NATS2_PORT":         fmt.Sprint(ports[1]),
		"NATS3_PORT":         fmt.Sprint(ports[2]),
		"NATS1_MONITOR_PORT": fmt.Sprint(ports[3]),
		"NATS2_MONITOR_PORT": fmt.Sprint(ports[4]),
		"NATS3_MONITOR_PORT": fmt.Sprint(ports[5]),
		"FANOUT_CONCURRENCY": "4",
		"FANOUT_ACK_WAIT":    "3s",
		"FANOUT_LEASE":       "4s",
	})
	start := time.Now()
	logf := func(format string, args ...any) {
		t.Logf("%5.1fs "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}
	s.mustScript(ctx, "up", "--workers", "3", "--coordinators", "2")
	logf("up with 3 NATS nodes, 2 coordinators, 3 workers, all healthy")
	if n := len(s.containers(ctx, "coordinator")); n != 2 {
		t.Fatalf("%d coordinators, want 2", n)
	}
	nc, c := connect(t, ports[0], ports[1], ports[2])
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	// Every stream (the bucket is one too) has 3 replicas.
	streams := 0
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		info, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := info.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s: %d replicas, want 3", name, r)
		}
		streams++
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	if streams < 5 {
		t.Errorf("%d streams, want at least 5 (work, results, done, control, batches bucket)", streams)
	}
	t.Logf("%d streams, all with 3 replicas", streams)

	sleepReq, sleepWant := sleepBatch(900)
	long := submit(ctx, t, c, "sleep", sleepReq, sleepWant)
	shaReq, shaWant := shaBatch("cluster", 2000)
	sha := submit(ctx, t, c, "sha256", shaReq, shaWant)

	// Stop the node that leads the results stream: the fan-in must move
	// to a new leader without losing or double counting a result.
	waitDone(ctx, t, c, long, 135, "stop a NATS node")
	results, err := js.Stream(ctx, "FANOUT_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	leader := "nats1"
	if cl := results.CachedInfo().Cluster; cl != nil && strings.HasPrefix(cl.Leader, "nats") {
		leader = cl.Leader
	}
	s.docker(ctx, "stop", "-t", "10", s.container(ctx, leader))
	logf("stopped %s (leader of FANOUT_RESULTS)", leader)

	// Small batches are watched: their coordinator reads their stored
	// results with direct gets, which any replica may answer. Run some
	// while a node is down.
	var small []*batch
	for i := range 3 {
		req, want := shaBatch(fmt.Sprintf("small-%d", i), 20)
		small = append(small, submit(ctx, t, c, fmt.Sprintf("small-%d", i), req, want))
	}

	// Kill the coordinator that drives the long batch; the other one must
	// take it over.
	waitDone(ctx, t, c, long, 400, "kill a coordinator")
	owner := batchOwner(ctx, t, js, long.id)
	var victim string
	for _, co := range s.inspect(ctx, s.containers(ctx, "coordinator")) {
		if co.status == "running" && strings.HasPrefix(owner, co.hostname+"-") {
			victim = co.id
		}
	}
	if victim == "" {
		t.Fatalf("batch %s is owned by %q, which is no running coordinator container", long.name, owner)
	}
	// No restart: the other coordinator must finish the batch.
	s.docker(ctx, "update", "--restart=no", victim)
	s.docker(ctx, "kill", victim)
	logf("killed coordinator %.12s (owner %s of batch %s)", victim, owner, long.name)

	echoReq, echoWant := echoBatch("after-failover", 500)
	echo := submit(ctx, t, c, "echo", echoReq, echoWant)

	checkExact(ctx, t, c, append([]*batch{long, sha, echo}, small...)...)
	if after, err := readOwner(ctx, js, long.id); err == nil && after != "" {
		t.Logf("batch %s: driven last by %s (the killed coordinator was %s)", long.name, after, owner)
	}
	logf("all batches exact")
}

// batchOwner reads the coordinator driving a batch from its state in the
// FANOUT_BATCHES bucket.
func batchOwner(ctx context.Context, t *testing.T, js jetstream.JetStream, batchID string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		owner, err := readOwner(ctx, js, batchID)
		if err == nil && owner != "" {
			return owner
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s: no owner in FANOUT_BATCHES: %v", batchID, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func readOwner(ctx context.Context, js jetstream.JetStream, batchID string) (string, error) {
	kv, err := js.KeyValue(ctx, "FANOUT_BATCHES")
	if err != nil {
		return "", err
	}
	e, err := kv.Get(ctx, batchID)
	if err != nil {
		return "", err
	}
	var st struct {
		Owner string `json:"owner"`
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return "", err
	}
	return st.Owner, nil
}
