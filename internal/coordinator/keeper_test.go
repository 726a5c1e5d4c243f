package coordinator_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/testenv"
)

// batchWork is how many work messages of any batch the work stream holds
// (its keeper not counted).
func batchWork(t *testing.T, env *testenv.Env) uint64 {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	s, err := jsOf(t, env).Stream(ctx, names.WorkStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(names.Prefix+".work.*.>"))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// awaitWorkAcked polls until the work stream holds no batch's work: acks
// raise no event.
func awaitWorkAcked(t *testing.T, env *testenv.Env) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n := batchWork(t, env); n != 0; n = batchWork(t, env) {
		if time.Now().After(deadline) {
			t.Fatalf("the work stream still holds %d work messages", n)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// workStreamState is the work stream's message count and how many of them
// are keepers.
func workStreamState(t *testing.T, env *testenv.Env) (msgs, keepers uint64) {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	s, err := jsOf(t, env).Stream(ctx, names.WorkStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(names.WorkKeeper()))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs, info.State.Subjects[names.WorkKeeper()]
}

// keeperEnv is a server, a coordinator that sends a keeper with every work
// message, and a worker.
func keeperEnv(t *testing.T) (*testenv.Env, *coordinator.Coordinator) {
	t.Helper()
	env := testenv.Server(t)
	c := env.Coordinator(nil)
	coordinator.SendKeeperEvery(c, 0)
	env.Worker(nil)
	return env, c
}

// Once a batch's work is all acked, the work stream still holds one
// message: the keeper, which no worker takes and which each new keeper
// replaces. So the stream's last block never empties.
func TestWorkStreamKeepsOneKeeper(t *testing.T) {
	t.Parallel()
	env, _ := keeperEnv(t)
	items, _ := sha256Items(10)
	for range 3 {
		r := env.Submit(client.BatchRequest{Activity: "sha256", Items: items})
		if agg := env.Wait(r.BatchID, 30*time.Second); agg.Status != client.StatusCompleted || agg.Succeeded != 10 {
			t.Fatalf("aggregate %+v", agg)
		}
	}
	awaitWorkAcked(t, env)
	// 30 keepers were sent; the rollup leaves the last.
	if msgs, keepers := workStreamState(t, env); msgs != 1 || keepers != 1 {
		t.Fatalf("after three batches the work stream holds %d messages, %d of them keepers; want only one keeper", msgs, keepers)
	}
	ctx := ctxFor(t, 10*time.Second)
	cons, err := jsOf(t, env).Consumer(ctx, names.WorkStream(), names.WorkConsumer("sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cons.Info(ctx); err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
		t.Fatalf("the workers' consumer: %+v, %v; want nothing pending (the keeper is not theirs)", info, err)
	}
}

// A work stream that refuses rollups refuses keepers: the coordinator stops
// sending them, and batches run as before.
func TestRefusedKeeperChangesNothingElse(t *testing.T) {
	t.Parallel()
	env, c := keeperEnv(t)
	ctx := ctxFor(t, 10*time.Second)
	s, err := jsOf(t, env).Stream(ctx, names.WorkStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.AllowRollup = false
	if _, err := jsOf(t, env).UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	items, _ := sha256Items(10)
	for range 2 {
		r := env.Submit(client.BatchRequest{Activity: "sha256", Items: items})
		if agg := env.Wait(r.BatchID, 30*time.Second); agg.Status != client.StatusCompleted || agg.Succeeded != 10 {
			t.Fatalf("aggregate %+v", agg)
		}
	}
	// The first batch's keeper was refused before its aggregate was out;
	// the second batch's first work message found that out.
	if !coordinator.KeeperDisabled(c) {
		t.Fatal("the coordinator still sends keepers to a stream that refuses them")
	}
	awaitWorkAcked(t, env)
	if msgs, keepers := workStreamState(t, env); msgs != 0 || keepers != 0 {
		t.Fatalf("the work stream holds %d messages, %d keepers; want none", msgs, keepers)
	}
}
