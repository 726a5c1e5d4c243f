package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
)

// Fairness: a 10-item batch submitted while a 10,000-item batch runs on the
// same activity and workers finishes first. Proven by order of events: when
// the small batch's aggregate is out, the big one is still running, and its
// aggregate lands after the small one's in the done stream.
func TestSmallBatchIsNotStarvedByABigOne(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil)
	dc := countDone(t, env)

	const bigTotal = 10_000
	big := env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(bigTotal, 1, nil), Options: client.Options{MaxInFlight: 16}})
	// The big batch is under way: some of its results are counted.
	waitState(t, env, big.BatchID, 30*time.Second, "a first checkpoint", func(st *messages.BatchState) bool {
		return st.Succeeded > 0
	})

	small := env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(10, 1, nil)})
	smallAgg := env.Wait(small.BatchID, 60*time.Second)
	checkAggregate(t, smallAgg, client.StatusCompleted, 10, 10, 0)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := env.Client.Status(ctx, big.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != client.StatusRunning || p.Done >= bigTotal {
		t.Fatalf("when the small batch finished the big one was %s with %d of %d done: the small batch waited for it", p.Status, p.Done, bigTotal)
	}
	t.Logf("small batch done while the big one was at %d of %d", p.Done, bigTotal)

	// No need to run the other 9,990 items: cancel the big batch. Its
	// aggregate comes after the small one's, says canceled, and accounts
	// for every item exactly once.
	cp, err := env.Client.Cancel(ctx, big.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Status != client.StatusCanceled {
		t.Fatalf("cancel reply %+v", cp)
	}
	bigAgg := env.Wait(big.BatchID, 30*time.Second)
	if bigAgg.Status != client.StatusCanceled || bigAgg.Succeeded < p.Done || bigAgg.Succeeded >= bigTotal || bigAgg.Failed != 0 {
		t.Fatalf("big batch aggregate: status %s succeeded %d failed %d (status said %d done before)", bigAgg.Status, bigAgg.Succeeded, bigAgg.Failed, p.Done)
	}
	checkAggregate(t, bigAgg, client.StatusCanceled, bigTotal, bigAgg.Succeeded, 0)
	if cp.Succeeded != bigAgg.Succeeded || cp.Done != bigAgg.Succeeded {
		t.Errorf("cancel reply says %d succeeded, the aggregate %d", cp.Succeeded, bigAgg.Succeeded)
	}
	if s, b := doneSeq(t, env, small.BatchID), doneSeq(t, env, big.BatchID); s >= b {
		t.Fatalf("small batch's aggregate is at done-stream sequence %d, the big one's at %d", s, b)
	}
	// Its queued work is gone.
	if n := workQueued(t, env, "sleep", big.BatchID); n != 0 {
		t.Errorf("%d work messages of the canceled batch are still queued", n)
	}
	dc.check(t, env, big.BatchID, small.BatchID)
}

// workQueued is how many work messages of a batch the work stream holds.
func workQueued(t *testing.T, env *testenv.Env, activity, batch string) uint64 {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	s, err := jsOf(t, env).Stream(ctx, names.WorkStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(names.Work(activity, batch)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[names.Work(activity, batch)]
}

func doneSeq(t *testing.T, env *testenv.Env, batch string) uint64 {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	s, err := jsOf(t, env).Stream(ctx, names.DoneStream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, names.Done(batch))
	if err != nil {
		t.Fatalf("aggregate of %s: %v", batch, err)
	}
	return m.Sequence
}
