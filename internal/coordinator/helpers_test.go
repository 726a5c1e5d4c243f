package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

var names = messages.MustNames(messages.DefaultPrefix)

// sleepItems builds n inputs of the built-in sleep activity; fail(i), when
// not empty, is item i's failure message.
func sleepItems(n int, ms int, fail func(i int) string) []json.RawMessage {
	items := make([]json.RawMessage, n)
	for i := range items {
		in := map[string]any{"ms": ms}
		if fail != nil {
			if f := fail(i); f != "" {
				in["fail"] = f
			}
		}
		items[i], _ = json.Marshal(in)
	}
	return items
}

func durations(ds ...time.Duration) []client.Duration {
	out := make([]client.Duration, len(ds))
	for i, d := range ds {
		out[i] = client.Duration(d)
	}
	return out
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func jsOf(t *testing.T, env *testenv.Env) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(env.Conn)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// rawRequest sends body to subject as a plain NATS request (what `nats req`
// does) and returns the reply body.
func rawRequest(t *testing.T, env *testenv.Env, subject string, body []byte) []byte {
	t.Helper()
	m, err := env.Conn.Request(subject, body, 15*time.Second)
	if err != nil {
		t.Fatalf("request to %s with %.80q: %v", subject, body, err)
	}
	return m.Data
}

// checkErrorReply asserts that reply is exactly {"error":{"code","message"}}
// with the wanted code and a non-empty message.
func checkErrorReply(t *testing.T, what string, reply []byte, code string) {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(reply, &top); err != nil {
		t.Errorf("%s: reply %q is not a JSON object: %v", what, reply, err)
		return
	}
	if len(top) != 1 || top["error"] == nil {
		t.Errorf("%s: reply %s, want only an \"error\" member", what, reply)
		return
	}
	var e map[string]json.RawMessage
	if err := json.Unmarshal(top["error"], &e); err != nil || len(e) != 2 {
		t.Errorf("%s: error %s, want exactly code and message", what, top["error"])
		return
	}
	var got messages.Error
	if err := json.Unmarshal(top["error"], &got); err != nil {
		t.Errorf("%s: error %s: %v", what, top["error"], err)
		return
	}
	if got.Code != code || got.Message == "" {
		t.Errorf("%s: error code %q message %q, want code %q and a message", what, got.Code, got.Message, code)
	}
}

// doneCounter counts every aggregate published, through a plain
// subscription: it sees a second publish even when JetStream refuses to
// store it, so it proves the aggregate was sent once, not just stored once.
type doneCounter struct {
	sub *nats.Subscription
	n   map[string]int
}

func countDone(t *testing.T, env *testenv.Env) *doneCounter {
	t.Helper()
	sub, err := env.Conn.SubscribeSync(names.DoneAll())
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := env.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	return &doneCounter{sub: sub, n: map[string]int{}}
}

// check asserts exactly one aggregate was published for each batch and none
// for any other.
func (dc *doneCounter) check(t *testing.T, env *testenv.Env, batches ...string) {
	t.Helper()
	// A message another connection published can reach this one after a
	// flush answered: wait until each batch's aggregate has come (the
	// caller saw it stored), then take what else is queued.
	deadline := time.Now().Add(10 * time.Second)
	for _, b := range batches {
		for dc.n[names.Done(b)] == 0 && time.Now().Before(deadline) {
			if m, err := dc.sub.NextMsg(time.Until(deadline)); err == nil {
				dc.n[m.Subject]++
			}
		}
	}
	if err := env.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := dc.sub.NextMsg(0)
		if err != nil {
			break
		}
		dc.n[m.Subject]++
	}
	want := map[string]bool{}
	for _, b := range batches {
		want[names.Done(b)] = true
		if n := dc.n[names.Done(b)]; n != 1 {
			t.Errorf("batch %s: %d aggregates published, want 1", b, n)
		}
	}
	for subj, n := range dc.n {
		if !want[subj] {
			t.Errorf("%d unexpected aggregates on %s", n, subj)
		}
	}
	// And the done stream holds exactly one per batch.
	ctx := ctxFor(t, 10*time.Second)
	s, err := jsOf(t, env).Stream(ctx, names.DoneStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(names.DoneAll()))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(batches)) || len(info.State.Subjects) != len(batches) {
		t.Errorf("done stream holds %d messages on %d subjects, want %d", info.State.Msgs, len(info.State.Subjects), len(batches))
	}
	for _, b := range batches {
		if info.State.Subjects[names.Done(b)] != 1 {
			t.Errorf("done stream holds %d aggregates of %s", info.State.Subjects[names.Done(b)], b)
		}
	}
}

// batchState reads a batch's state from the bucket.
func batchState(t *testing.T, env *testenv.Env, batch string) *messages.BatchState {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	kv, err := jsOf(t, env).KeyValue(ctx, names.BatchesBucket())
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, batch)
	if err != nil {
		t.Fatalf("state of %s: %v", batch, err)
	}
	var st messages.BatchState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// waitState watches a batch's state until cond holds.
// finalState waits for the batch's stored state to be final: the driver
// saves it just after publishing the aggregate.
func finalState(t *testing.T, env *testenv.Env, batch string) *messages.BatchState {
	t.Helper()
	return waitState(t, env, batch, 10*time.Second, "final", func(st *messages.BatchState) bool { return st.Status.Final() })
}

func waitState(t *testing.T, env *testenv.Env, batch string, timeout time.Duration, what string, cond func(*messages.BatchState) bool) *messages.BatchState {
	t.Helper()
	ctx := ctxFor(t, timeout)
	kv, err := jsOf(t, env).KeyValue(ctx, names.BatchesBucket())
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.Watch(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	var last messages.BatchState
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("batch %s: %s did not happen within %s; last state %+v", batch, what, timeout, last)
		case e := <-w.Updates():
			if e == nil {
				continue
			}
			var st messages.BatchState
			if json.Unmarshal(e.Value(), &st) != nil {
				continue
			}
			last = st
			if cond(&st) {
				return &st
			}
		}
	}
}

// checkAggregate asserts an aggregate's status and counts, and that its
// results are complete and in item order.
func checkAggregate(t *testing.T, agg *client.Aggregate, status client.Status, total, succeeded, failed int) {
	t.Helper()
	if agg.Status != status || agg.Total != total || agg.Succeeded != succeeded || agg.Failed != failed || agg.NotRun != total-succeeded-failed {
		t.Fatalf("aggregate of %s: status %s total %d succeeded %d failed %d not_run %d (reason %q); want %s %d %d %d %d",
			agg.BatchID, agg.Status, agg.Total, agg.Succeeded, agg.Failed, agg.NotRun, agg.Reason, status, total, succeeded, failed, total-succeeded-failed)
	}
	if len(agg.Results) != total {
		t.Fatalf("aggregate of %s: %d results, want %d", agg.BatchID, len(agg.Results), total)
	}
	var ok, bad int
	for i, r := range agg.Results {
		if r.Item != i {
			t.Fatalf("aggregate of %s: result %d is of item %d", agg.BatchID, i, r.Item)
		}
		switch {
		case r.OK:
			ok++
		case !r.NotRun:
			bad++
		}
	}
	if ok != succeeded || bad != failed {
		t.Fatalf("aggregate of %s: results hold %d ok and %d failed, counts say %d and %d", agg.BatchID, ok, bad, succeeded, failed)
	}
}

// gate is an activity whose items block until released, so that a test can
// hold a batch running while it does something else.
type gate struct {
	release chan struct{}
	entered chan worker.Info // every item that started, if there is room
	once    sync.Once
	pass    func(item int) bool // items that need no release
}

// newGate makes a gate. Call t.Cleanup(g.open) after starting the worker,
// so that a failed test releases the handlers before the worker is stopped.
func newGate() *gate {
	return &gate{release: make(chan struct{}), entered: make(chan worker.Info, 4096)}
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) handle(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	info, _ := worker.InfoFrom(ctx)
	select {
	case g.entered <- info:
	default:
	}
	if g.pass == nil || !g.pass(info.Item) {
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return input, nil
}

// waitEntered waits until n items of the gate have started.
func (g *gate) waitEntered(t *testing.T, n int, timeout time.Duration) []worker.Info {
	t.Helper()
	var out []worker.Info
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case i := <-g.entered:
			out = append(out, i)
		case <-deadline:
			t.Fatalf("%d of %d gated items started within %s", len(out), n, timeout)
		}
	}
	return out
}

func echoItems(n int) []json.RawMessage {
	items := make([]json.RawMessage, n)
	for i := range items {
		items[i] = json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
	}
	return items
}
