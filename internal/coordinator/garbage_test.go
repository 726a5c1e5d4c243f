package coordinator_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/objects"
	"github.com/fanoutdev/fanout/internal/observe"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

// streamInfoReply is what a JetStream API reply aimed at one of fanout's
// subjects stores there: JSON, but no value of fanout's.
const streamInfoReply = `{"type":"io.nats.jetstream.api.v1.stream_info_response","total":0,"config":{"name":"FANOUT_WORK","subjects":["fanout.work.>"]},"state":{"messages":0}}`

// ignored is fanout_ignored_total of one kind.
func ignored(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "fanout_ignored_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// subjectMessages records every message published on a subject.
type subjectMessages struct {
	mu   sync.Mutex
	msgs [][]byte
}

func watch(t *testing.T, env *testenv.Env, subject string) *subjectMessages {
	t.Helper()
	d := &subjectMessages{}
	sub, err := env.Conn.Subscribe(subject, func(m *nats.Msg) {
		d.mu.Lock()
		d.msgs = append(d.msgs, m.Data)
		d.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := env.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	return d
}

// aggregates returns the messages that are the batch's aggregate.
func (d *subjectMessages) aggregates(batch string) []messages.Aggregate {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []messages.Aggregate
	for _, b := range d.msgs {
		var a messages.Aggregate
		if json.Unmarshal(b, &a) == nil && a.Check(batch) == nil {
			out = append(out, a)
		}
	}
	return out
}

// resultsStored counts the batch's stored messages on item result
// subjects that are that item's result, and those that are not.
func resultsStored(t *testing.T, env *testenv.Env, batch string) (valid map[int]messages.ResultMessage, invalid int) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	cons, err := jsOf(t, env).OrderedConsumer(ctx, names.ResultsStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{names.ResultBatchFilter(batch)}})
	if err != nil {
		t.Fatal(err)
	}
	valid = map[int]messages.ResultMessage{}
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return valid, invalid
		}
		_, item, ok := names.ParseResultSubject(m.Subject())
		if !ok {
			continue // a step's or an unpack request's subject
		}
		var r messages.ResultMessage
		if json.Unmarshal(m.Data(), &r) == nil && r.CheckResult(batch, item, "") == nil {
			valid[item] = r
		} else {
			invalid++
		}
	}
}

// Garbage written (as an administrator, or by a JetStream API reply aimed
// there) to a running batch's state, result subjects and done subject
// leaves the batch ending, with one aggregate whose counts are those of
// the results stored: the state is written over, what is not a result is
// ignored (an item whose subject it holds cannot get its real result and
// is not run), and what is not an aggregate is removed.
func TestGarbageInARunningBatchIsIgnored(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	reg := observe.NewRegistry()
	env.Coordinator(func(c *coordinator.Config) { c.Metrics = observe.NewCoordinatorMetrics(reg) })
	const n, fast, blocked = 10, 5, 9
	g := newGate()
	g.pass = func(item int) bool { return item < fast }
	env.Worker(func(w *worker.Worker) { w.HandleFunc("gate", g.handle) }, worker.WithConcurrency(n))
	t.Cleanup(g.open)

	r := env.Submit(client.BatchRequest{Activity: "gate", Items: echoItems(n), Options: client.Options{
		MaxInFlight: n, Timeout: client.Duration(6 * time.Second),
	}})
	sent, stored := watch(t, env, names.Done(r.BatchID)), watch(t, env, names.Aggregate(r.BatchID))
	waitState(t, env, r.BatchID, 10*time.Second, "the fast items counted", func(st *messages.BatchState) bool { return st.Succeeded == fast })
	g.waitEntered(t, n, 10*time.Second)

	ctx := ctxFor(t, 10*time.Second)
	js := jsOf(t, env)
	publish := func(subject, body string) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, []byte(body)); err != nil {
			t.Fatalf("publish to %s: %v", subject, err)
		}
	}
	kv, err := js.KeyValue(ctx, names.BatchesBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, r.BatchID, streamInfoReply); err != nil {
		t.Fatal(err)
	}
	// A blocked item's subject, before its worker publishes: the item's
	// real result is refused after this.
	publish(names.Result(r.BatchID, blocked), streamInfoReply)
	// A counted item's subject refuses it; a step's and an unpack
	// request's take it, and it is ignored there.
	if _, err := js.Publish(ctx, names.Result(r.BatchID, 0), []byte(streamInfoReply)); err == nil {
		t.Error("a second message on a counted item's result subject was stored")
	}
	publish(names.StepResult(r.BatchID, messages.StepReduce), `not JSON`)
	publish(names.UnpackRequest(r.BatchID, 6), `{"batch_id":"someone-else","item":6,"unpack":{"attempt":2}}`)
	publish(names.Done(r.BatchID), streamInfoReply)

	// Readers are not misled meanwhile.
	p := status(t, env, r.BatchID)
	if p.Status != client.StatusRunning || p.BatchID != r.BatchID {
		t.Fatalf("status with garbage stored: %+v", p)
	}
	// The driver writes over the state that is no state.
	waitState(t, env, r.BatchID, 10*time.Second, "the state written again", func(st *messages.BatchState) bool { return st.Succeeded == fast })

	g.open()
	agg := env.Wait(r.BatchID, 30*time.Second)
	valid, invalid := resultsStored(t, env, r.BatchID)
	if len(valid) != n-1 || invalid != 1 {
		t.Fatalf("stored: %d results and %d other messages, want %d and 1", len(valid), invalid, n-1)
	}
	if agg.Status != client.StatusTimedOut || agg.Succeeded != len(valid) || agg.Failed != 0 || agg.NotRun != 1 || !agg.Results[blocked].NotRun {
		t.Fatalf("aggregate %s: %d succeeded, %d failed, %d not run; want timed_out with the %d stored results and item %d not run",
			agg.Status, agg.Succeeded, agg.Failed, agg.NotRun, len(valid), blocked)
	}
	for i, res := range agg.Results {
		if _, ok := valid[i]; ok != res.OK || (ok && !bytes.Equal(res.Output, valid[i].Output)) {
			t.Errorf("aggregate result %d: %+v, stored %+v", i, res, valid[i])
		}
	}
	final := finalState(t, env, r.BatchID)
	if final.Status != client.StatusTimedOut || final.Succeeded != n-1 {
		t.Errorf("final state %s with %d succeeded", final.Status, final.Succeeded)
	}
	// One aggregate was stored (and republished to clients). Sent, it may
	// have been twice: refused once by what was stored in its place.
	if aggs := stored.aggregates(r.BatchID); len(aggs) != 1 || aggs[0].Succeeded != n-1 {
		t.Errorf("aggregates republished on %s: %+v, want one", names.Aggregate(r.BatchID), aggs)
	}
	aggs := sent.aggregates(r.BatchID)
	for _, a := range aggs {
		if a.Status != aggs[0].Status || a.Succeeded != aggs[0].Succeeded || !a.FinishedAt.Equal(aggs[0].FinishedAt) {
			t.Errorf("different aggregates sent on %s: %+v", names.Done(r.BatchID), aggs)
		}
	}
	m, err := js.Stream(ctx, names.DoneStream())
	if err != nil {
		t.Fatal(err)
	}
	last, err := m.GetLastMsgForSubject(ctx, names.Done(r.BatchID))
	if err != nil {
		t.Fatal(err)
	}
	var a messages.Aggregate
	if err := json.Unmarshal(last.Data, &a); err != nil || a.Check(r.BatchID) != nil || a.Succeeded != n-1 {
		t.Errorf("stored on the done subject: %.200s", last.Data)
	}
	for _, kind := range []string{"state", "result", "aggregate"} {
		if ignored(t, reg, kind) == 0 {
			t.Errorf("fanout_ignored_total{kind=%q} is 0", kind)
		}
	}
}

// Results published under a batch id before a batch with that id is
// submitted (client-chosen ids can be guessed) neither count toward it nor
// keep its items from their real results.
func TestResultsPlantedBeforeABatchDoNotCount(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	reg := observe.NewRegistry()
	env.Coordinator(func(c *coordinator.Config) { c.Metrics = observe.NewCoordinatorMetrics(reg) })
	env.Worker(nil)
	const id, n = "guessable-id", 4
	ctx := ctxFor(t, 10*time.Second)
	js := jsOf(t, env)
	for item := range n {
		forged := fmt.Sprintf(`{"batch_id":%q,"item":%d,"ok":false,"error":"forged","attempts":1}`, id, item)
		if _, err := js.Publish(ctx, names.Result(id, item), []byte(forged)); err != nil {
			t.Fatal(err)
		}
	}
	r := env.Submit(client.BatchRequest{ID: id, Activity: "echo", Items: echoItems(n)})
	agg := env.Wait(r.BatchID, 30*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, n, n, 0)
	for i, res := range agg.Results {
		if string(res.Output) != string(echoItems(n)[i]) || res.Error != "" {
			t.Errorf("item %d: %+v, want the echo of its input", i, res)
		}
	}
	if got := ignored(t, reg, "early_result"); got != n {
		t.Errorf("fanout_ignored_total{kind=\"early_result\"} = %v, want %d", got, n)
	}
}

// A results object written again under its name (anybody who may write to
// the blob bucket can) is refused by the reader: its size and digest are
// not those the aggregate records. An aggregate that records no digest
// still has its object's lines checked against its total.
func TestReplacedResultsObjectIsRefused(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(func(c *coordinator.Config) { c.InMemoryResults = 5 })
	env.Worker(nil)
	const n = 20
	r := env.Submit(client.BatchRequest{Activity: "echo", Items: echoItems(n)})
	agg := env.Wait(r.BatchID, 30*time.Second)
	if agg.ResultsRef == nil || agg.ResultsRef.Digest == "" || len(agg.Results) != n {
		t.Fatalf("aggregate of %d items: results_ref %+v, %d results", n, agg.ResultsRef, len(agg.Results))
	}
	ctx := ctxFor(t, 30*time.Second)
	obs, err := jsOf(t, env).ObjectStore(ctx, agg.ResultsRef.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	readAll := func() (int, error) {
		got := 0
		for _, err := range env.Client.Results(ctx, r.BatchID) {
			if err != nil {
				return got, err
			}
			got++
		}
		return got, nil
	}
	if got, err := readAll(); err != nil || got != n {
		t.Fatalf("results read back: %d, %v", got, err)
	}
	forged := `{"item":0,"ok":false,"error":"forged"}` + "\n"
	if _, err := obs.PutString(ctx, agg.ResultsRef.Name, forged); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(); err == nil || !strings.Contains(err.Error(), "not the one referred to") {
		t.Fatalf("results of a replaced object: %d read, error %v", got, err)
	}
	if _, err := env.Client.Wait(ctx, r.BatchID, nil); err == nil {
		t.Error("Wait loaded the results of a replaced object")
	}

	// Without a recorded digest, the lines are checked.
	noDigest := *agg
	ref := *agg.ResultsRef
	ref.Digest, noDigest.ResultsRef, noDigest.Results = "", &ref, nil
	var lines []string
	for i := range n - 1 {
		lines = append(lines, fmt.Sprintf(`{"item":%d,"ok":true}`, i))
	}
	for name, body := range map[string]string{
		"a line short":      strings.Join(lines, "\n") + "\n",
		"a line too many":   strings.Join(append(lines, fmt.Sprintf(`{"item":%d,"ok":true}`, n-1), fmt.Sprintf(`{"item":%d,"ok":true}`, n)), "\n") + "\n",
		"out of item order": strings.Join(append([]string{lines[1], lines[0]}, append(lines[2:], fmt.Sprintf(`{"item":%d,"ok":true}`, n-1))...), "\n") + "\n",
	} {
		if _, err := obs.PutString(ctx, ref.Name, body); err != nil {
			t.Fatal(err)
		}
		err := objects.Results(ctx, jsOf(t, env), &noDigest, func(messages.ItemResult) error { return nil })
		if err == nil {
			t.Errorf("results object with %s was read", name)
		}
	}
}
