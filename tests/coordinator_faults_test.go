package tests

import (
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/tests/procs"
)

// Coordinator and broker faults: SIGKILL of the coordinator driving a
// batch, takeover by another coordinator, NATS server restarts.

// lease is the coordinators' --lease in these tests (the harness default).
const lease = 2 * time.Second

// Invariants 1 (exactly-once accounting) and 3 (every accepted batch
// ends): the only coordinator is killed with SIGKILL five times in a row
// during a 20,000-item batch, each time at a random moment picked from the
// results seen so far (right as a new coordinator resumes the batch, in the
// middle, or as the last results come in, while it finishes), and started
// again. The batch completes with every item counted once, one aggregate
// on fanout.done, and one stored result per item.
func TestCoordinatorKilledFiveTimes(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	rng := newRand(t)
	coord := e.Coordinator()
	for range 3 {
		e.Worker("--concurrency", "16")
	}
	ctx := e.Context(300 * time.Second)

	const total, kills = 20_000, 5
	const batchID = "e2e-coordinator-kills"
	items, checkSHA := sha256Items(t, "k", total)
	counter := e.CountResults()
	start := time.Now()
	r := e.Submit(ctx, client.BatchRequest{ID: batchID, Activity: "sha256", Items: items})
	if r.Total != total {
		t.Fatalf("submit reply: total %d, want %d", r.Total, total)
	}

	resumed := 0
	for k := 1; k <= kills; k++ {
		cur := counter.Count()
		target := cur + 1 + rng.IntN(max((total-cur)/(kills-k+2), 1))
		if k == kills && rng.IntN(2) == 0 {
			target = total // as the batch finishes
		}
		got, err := counter.Await(ctx, target)
		if err != nil {
			t.Fatalf("before kill %d: %v", k, err)
		}
		coord.Kill()
		// With the coordinator gone nothing publishes the aggregate: if
		// there is none yet, the batch's token is held and a new
		// coordinator resumes it after the lease.
		finished := e.DoneCount(ctx, batchID) == 1
		t.Logf("kill %d of %s at %d results seen (target %d)%s", k, coord.Name, got, target,
			map[bool]string{true: ", after the aggregate was out", false: ""}[finished])
		coord = e.StartCoordinator()
		if !finished {
			coord.AwaitLog(lease+procs.ReadyTimeout, "resuming batch from checkpoint", "batch_id", batchID)
			resumed++
		}
	}

	agg := e.Wait(ctx, r.BatchID, nil)
	t.Logf("batch of %d items done in %s through %d kills (%d resumed)", total, time.Since(start).Round(time.Millisecond), kills, resumed)
	if resumed < kills-1 {
		t.Errorf("only %d of the %d kills hit the running batch", resumed, kills)
	}
	checkExact(t, agg, r.BatchID, total, checkSHA)
	checkRecorded(t, e, r.BatchID, total)
	st, err := e.Client.Status(ctx, r.BatchID)
	if err != nil || st.Status != client.StatusCompleted || st.Succeeded != total || st.Failed != 0 {
		t.Errorf("status after the end: %+v, %v; want completed with %d succeeded", st, err, total)
	}
}

// Invariants 3 (every accepted batch ends) and 1 (exactly-once
// accounting): two coordinators; the one driving a batch (its "owner" in
// FANOUT_BATCHES) is killed with SIGKILL. The other takes the batch over
// within a bounded time and finishes it exactly. The bound: the batch's
// token comes back after the lease (--lease, FANOUT_LEASE; here 2s: the
// dead owner's last heartbeat, at most lease/4 before the kill, plus the
// lease), and the new owner resumes at the last checkpoint (at most
// --checkpoint-interval, 100ms, or --checkpoint-every results old), so the
// test allows lease + 5s for a loaded machine. It also checks the lease is
// honoured: no takeover sooner than half the lease after the kill.
func TestCoordinatorTakeover(t *testing.T) {
	t.Parallel()
	e := procs.NewEnv(t, bins)
	rng := newRand(t)
	coords := []*procs.Proc{e.Coordinator(), e.Coordinator()}
	for range 3 {
		e.Worker("--concurrency", "16")
	}
	ctx := e.Context(180 * time.Second)

	const total = 8000
	const batchID = "e2e-takeover"
	items, checkSHA := sha256Items(t, "t", total)
	counter := e.CountResults()
	r := e.Submit(ctx, client.BatchRequest{ID: batchID, Activity: "sha256", Items: items})

	before := e.AwaitBatchState(ctx, batchID, func(st *messages.BatchState) bool { return st.Owner != "" })
	var owner, other *procs.Proc
	for i, c := range coords {
		if c.Name == before.Owner {
			owner, other = c, coords[1-i]
		}
	}
	if owner == nil {
		t.Fatalf("batch owner %q is neither coordinator", before.Owner)
	}
	got, err := counter.Await(ctx, total/10+rng.IntN(total/5))
	if err != nil {
		t.Fatal(err)
	}
	if got >= total {
		t.Fatalf("the batch was done before the kill; the test proves nothing")
	}
	from := other.Output().Len()
	owner.Kill()
	killed := time.Now()
	l := other.AwaitLogFrom(lease+30*time.Second, from, "resuming batch from checkpoint", "batch_id", batchID)
	took := time.Since(killed)
	resumedAt, _ := l.Fields["succeeded"].(float64)
	after := e.AwaitBatchState(ctx, batchID, func(st *messages.BatchState) bool {
		return st.Owner == other.Name && st.Succeeded+st.Failed > int(resumedAt)
	})
	progress := time.Since(killed)
	t.Logf("killed owner %s at %d results; %s took over in %s (epoch %d -> %d, resumed at %v succeeded), counting again %s after the kill",
		owner.Name, got, other.Name, took.Round(time.Millisecond), before.Epoch, after.Epoch, l.Fields["succeeded"], progress.Round(time.Millisecond))
	if bound := lease + 5*time.Second; took > bound {
		t.Errorf("takeover took %s, more than lease + 5s = %s", took, bound)
	}
	if took < lease/2 {
		t.Errorf("takeover %s after the kill: sooner than the lease (%s) allows", took, lease)
	}
	if after.Epoch <= before.Epoch {
		t.Errorf("epoch %d after the takeover, was %d: it must grow", after.Epoch, before.Epoch)
	}

	agg := e.Wait(ctx, r.BatchID, nil)
	checkExact(t, agg, r.BatchID, total, checkSHA)
	checkRecorded(t, e, r.BatchID, total)
	// The final state is saved just after the aggregate is published.
	if st := e.AwaitBatchState(ctx, batchID, func(st *messages.BatchState) bool { return st.Status.Final() }); st.Owner != other.Name || st.Status != messages.StatusCompleted {
		t.Errorf("final state: %+v; want completed by %s", st, other.Name)
	}
}

// Invariants 1 (exactly-once accounting) and 3 (every accepted batch
// ends): the NATS server is stopped and started again on the same store
// (SIGTERM), or killed (SIGKILL) and started again, mid-batch. The
// coordinator and the workers reconnect, the batch makes progress again and
// completes with every item counted once; nothing hangs.
func TestNATSServerRestartMidBatch(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"stop", "kill"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			e := procs.NewEnv(t, bins)
			rng := newRand(t)
			coord := e.Coordinator()
			workers := []*procs.Proc{e.Worker("--concurrency", "16"), e.Worker("--concurrency", "16")}
			ctx := e.Context(180 * time.Second)

			const total = 6000
			batchID := "e2e-server-" + mode
			items, checkSHA := sha256Items(t, "s", total)
			counter := e.CountResults()
			r := e.Submit(ctx, client.BatchRequest{ID: batchID, Activity: "sha256", Items: items})

			got, err := counter.Await(ctx, total/8+rng.IntN(total/4))
			if err != nil {
				t.Fatal(err)
			}
			if got >= total {
				t.Fatalf("the batch was done before the restart; the test proves nothing")
			}
			marks := map[*procs.Proc]int{}
			for _, p := range append([]*procs.Proc{coord}, workers...) {
				marks[p] = p.Output().Len()
			}
			down := time.Now()
			if mode == "stop" {
				e.Server.Restart()
			} else {
				e.Server.Kill()
				e.Server.Start()
			}
			t.Logf("server %s at %d results, back after %s", map[string]string{"stop": "stopped", "kill": "killed"}[mode], got, time.Since(down).Round(time.Millisecond))
			for p, from := range marks {
				p.AwaitLogFrom(30*time.Second, from, "reconnected to NATS")
			}
			// Progress after the restart: the counts move on.
			st0 := e.AwaitStatus(ctx, batchID, func(*client.Progress) bool { return true })
			e.AwaitStatus(ctx, batchID, func(p *client.Progress) bool { return p.Done > st0.Done || p.Status.Final() })

			agg := e.Wait(ctx, r.BatchID, nil)
			t.Logf("batch done %s after the restart", time.Since(down).Round(time.Millisecond))
			checkExact(t, agg, r.BatchID, total, checkSHA)
			checkRecorded(t, e, r.BatchID, total)
		})
	}
}
