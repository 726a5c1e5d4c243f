package procs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
)

// ReadyTimeout bounds how long a coordinator or worker may take to become
// ready (a race-built binary on a busy 2-core machine is slow to start).
var ReadyTimeout = 30 * time.Second

// Env is one test's fanout deployment of real processes: a nats-server,
// the coordinators and workers the test starts, and a client connection.
type Env struct {
	T      testing.TB
	Bins   *Binaries
	Server *Server
	// Conn, JS and Client are the test's own connection (it reconnects
	// across server restarts) and what is built on it.
	Conn   *nats.Conn
	JS     jetstream.JetStream
	Client *client.Client
	Names  messages.Names

	mu           sync.Mutex
	coordinators int
	workers      int
}

// NewEnv starts a nats-server and connects a client. It skips the test
// when bins is nil (go test -short).
func NewEnv(t testing.TB, bins *Binaries) *Env {
	t.Helper()
	if bins == nil {
		t.Skip("end-to-end test: the binaries are not built with -short")
	}
	e := &Env{T: t, Bins: bins, Names: messages.MustNames(messages.DefaultPrefix)}
	e.Server = StartServer(t, bins)
	e.Conn = e.Server.Connect()
	var err error
	if e.JS, err = jetstream.New(e.Conn); err != nil {
		t.Fatal(err)
	}
	if e.Client, err = client.New(e.Conn, client.WithRequestTimeout(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	return e
}

// Context is a context for the test's calls, ended after timeout.
func (e *Env) Context(timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	e.T.Cleanup(cancel)
	return ctx
}

func (e *Env) natsEnv() []string {
	return []string{"NATS_URL=" + e.Server.URL, "FANOUT_LOG_FORMAT=json"}
}

// flagValue is the value args give the flag name (as -name v, --name v,
// -name=v or --name=v), or "".
func flagValue(args []string, name string) string {
	for i, a := range args {
		a = strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// StartCoordinator starts a coordinator process without waiting for it.
// Its defaults for tests are --name coordinator-<n>, --lease 2s and
// --log-level info; args come after them, so they override them. NATS_URL
// points at the server.
func (e *Env) StartCoordinator(args ...string) *Proc {
	e.T.Helper()
	e.mu.Lock()
	e.coordinators++
	n := e.coordinators
	e.mu.Unlock()
	name := flagValue(args, "name")
	if name == "" {
		name = fmt.Sprintf("coordinator-%d", n)
		args = append([]string{"--name", name}, args...)
	}
	args = append([]string{"--lease", "2s", "--log-level", "info"}, args...)
	return StartProc(e.T, ProcSpec{Name: name, Path: e.Bins.Coordinator, Args: args, Env: e.natsEnv()})
}

// Coordinator starts a coordinator process (see StartCoordinator) and
// waits until it is ready (WaitCoordinatorReady).
func (e *Env) Coordinator(args ...string) *Proc {
	e.T.Helper()
	p := e.StartCoordinator(args...)
	e.WaitCoordinatorReady(p)
	return p
}

// WaitCoordinatorReady waits for p's "coordinator started" log line (it
// serves requests from then on), then for a status request about a batch
// that does not exist to be answered not_found.
func (e *Env) WaitCoordinatorReady(p *Proc) {
	e.T.Helper()
	p.AwaitLog(ReadyTimeout, "coordinator started")
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	_, err := e.Client.Status(ctx, "e2e-no-such-batch")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != client.CodeNotFound {
		e.T.Fatalf("%s: status of an unknown batch: want a not_found error reply, got %v", p.Name, err)
	}
}

// StartWorker starts a worker process without waiting for it. Its defaults
// for tests are --name worker-<n>, --ack-wait 2s, --shutdown-timeout 10s
// and --log-level info; args come after them, so they override them.
func (e *Env) StartWorker(args ...string) *Proc {
	e.T.Helper()
	return e.StartWorkerEnv(nil, args...)
}

// StartWorkerEnv is StartWorker with variables added to the worker's
// environment (the fault hooks' FANOUT_FAULT_*, say).
func (e *Env) StartWorkerEnv(env []string, args ...string) *Proc {
	e.T.Helper()
	e.mu.Lock()
	e.workers++
	n := e.workers
	e.mu.Unlock()
	name := flagValue(args, "name")
	if name == "" {
		name = fmt.Sprintf("worker-%d", n)
		args = append([]string{"--name", name}, args...)
	}
	args = append([]string{"--ack-wait", "2s", "--shutdown-timeout", "10s", "--log-level", "info"}, args...)
	return StartProc(e.T, ProcSpec{Name: name, Path: e.Bins.Worker, Args: args, Env: append(e.natsEnv(), env...)})
}

// Worker starts a worker process (see StartWorker) and waits until it is
// ready (WaitWorkerReady).
func (e *Env) Worker(args ...string) *Proc {
	e.T.Helper()
	p := e.StartWorker(args...)
	e.WaitWorkerReady(p)
	return p
}

// WaitWorkerReady waits for p's "worker started" log line (it consumes
// from then on), then checks that the work consumer "work-<activity>" of
// each activity it serves exists on stream FANOUT_WORK.
func (e *Env) WaitWorkerReady(p *Proc) {
	e.T.Helper()
	l := p.AwaitLog(ReadyTimeout, "worker started")
	var activities []string
	if raw, ok := l.Fields["activities"].([]any); ok {
		for _, a := range raw {
			if s, ok := a.(string); ok {
				activities = append(activities, s)
			}
		}
	}
	if len(activities) == 0 {
		e.T.Fatalf("%s: no activities in %s", p.Name, l.Raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	for _, a := range activities {
		if _, err := e.JS.Consumer(ctx, e.Names.WorkStream(), e.Names.WorkConsumer(a)); err != nil {
			e.T.Fatalf("%s: consumer %s on %s: %v", p.Name, e.Names.WorkConsumer(a), e.Names.WorkStream(), err)
		}
	}
}

// Submit submits a batch; the test fails if it is refused.
func (e *Env) Submit(ctx context.Context, req client.BatchRequest) *client.SubmitReply {
	e.T.Helper()
	r, err := e.Client.Submit(ctx, req)
	if err != nil {
		e.T.Fatalf("submit: %v", err)
	}
	return r
}

// Wait waits for a batch's aggregate; the test fails if ctx ends first.
func (e *Env) Wait(ctx context.Context, batchID string, onProgress func(client.Progress)) *client.Aggregate {
	e.T.Helper()
	agg, err := e.Client.Wait(ctx, batchID, onProgress)
	if err != nil {
		st, serr := e.Client.Status(context.Background(), batchID)
		e.T.Fatalf("wait for the aggregate of %s: %v (status: %+v, %v)", batchID, err, st, serr)
	}
	return agg
}

// AwaitStatus polls the batch's status (every 25ms) until cond holds, and
// returns it; the test fails if ctx ends first.
func (e *Env) AwaitStatus(ctx context.Context, batchID string, cond func(*client.Progress) bool) *client.Progress {
	e.T.Helper()
	var last *client.Progress
	var lastErr error
	for {
		p, err := e.Client.Status(ctx, batchID)
		if err == nil && cond(p) {
			return p
		}
		last, lastErr = p, err
		select {
		case <-ctx.Done():
			e.T.Fatalf("batch %s: condition not reached: last status %+v, error %v", batchID, last, lastErr)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// DoneCount is how many messages stream FANOUT_DONE holds on the batch's
// subject fanout.done.<batch>.
func (e *Env) DoneCount(ctx context.Context, batchID string) uint64 {
	e.T.Helper()
	s, err := e.JS.Stream(ctx, e.Names.DoneStream())
	if err != nil {
		e.T.Fatalf("stream %s: %v", e.Names.DoneStream(), err)
	}
	subj := e.Names.Done(batchID)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		e.T.Fatalf("stream %s info: %v", e.Names.DoneStream(), err)
	}
	return info.State.Subjects[subj]
}

// StoredResult is a result message as stored in FANOUT_RESULTS.
type StoredResult struct {
	messages.ResultMessage
	Subject string
	Seq     uint64
	// Time is when the server stored it (the server's clock: the test's
	// own on one machine).
	Time time.Time
}

// StoredResults reads every result of the batch from stream FANOUT_RESULTS
// in stream order (not its unpack requests: see StoredUnpackRequests).
func (e *Env) StoredResults(ctx context.Context, batchID string) []StoredResult {
	var out []StoredResult
	for _, r := range e.storedResults(ctx, batchID) {
		if r.Unpack == nil {
			out = append(out, r)
		}
	}
	return out
}

// StoredUnpackRequests reads the batch's unpack requests (auto-packed
// groups delivered again) from stream FANOUT_RESULTS in stream order.
func (e *Env) StoredUnpackRequests(ctx context.Context, batchID string) []StoredResult {
	var out []StoredResult
	for _, r := range e.storedResults(ctx, batchID) {
		if r.Unpack != nil {
			out = append(out, r)
		}
	}
	return out
}

func (e *Env) storedResults(ctx context.Context, batchID string) []StoredResult {
	e.T.Helper()
	s, err := e.JS.Stream(ctx, e.Names.ResultsStream())
	if err != nil {
		e.T.Fatalf("stream %s: %v", e.Names.ResultsStream(), err)
	}
	filter := e.Names.ResultBatchFilter(batchID)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		e.T.Fatalf("stream %s info: %v", e.Names.ResultsStream(), err)
	}
	var want uint64
	for _, n := range info.State.Subjects {
		want += n
	}
	if want == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		e.T.Fatalf("results consumer: %v", err)
	}
	out := make([]StoredResult, 0, want)
	for uint64(len(out)) < want {
		batch, err := cons.Fetch(int(min(want-uint64(len(out)), 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			e.T.Fatalf("read results: %v", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				e.T.Fatalf("result metadata: %v", err)
			}
			r := StoredResult{Subject: m.Subject(), Seq: meta.Sequence.Stream, Time: meta.Timestamp}
			if err := json.Unmarshal(m.Data(), &r.ResultMessage); err != nil {
				e.T.Fatalf("result on %s: %v", m.Subject(), err)
			}
			out = append(out, r)
		}
		if err := batch.Error(); err != nil {
			e.T.Fatalf("read results: %v", err)
		}
		if n == 0 {
			e.T.Fatalf("read results: %d of %d, then nothing", len(out), want)
		}
	}
	return out
}

// ResultWatch sees each batch result as it is published (a core NATS
// subscription on fanout.result.<batch>.>): an event to act on mid-batch.
// A refused duplicate publish is seen too, so count from the stream
// (StoredResults) when exactness matters.
type ResultWatch struct {
	sub     *nats.Subscription
	mu      sync.Mutex
	seen    []SeenResult
	changed chan struct{}
}

// SeenResult is a result message and when the test received it.
type SeenResult struct {
	messages.ResultMessage
	At time.Time
}

// WatchResults subscribes to the batch's results; call it before the
// results flow (before Submit, with the batch's id set by the test).
func (e *Env) WatchResults(batchID string) *ResultWatch {
	e.T.Helper()
	w := &ResultWatch{changed: make(chan struct{})}
	w.sub = e.subscribeAll(e.Names.ResultBatchFilter(batchID), func(m *nats.Msg) {
		r := SeenResult{At: time.Now()}
		if json.Unmarshal(m.Data, &r.ResultMessage) != nil || r.Unpack != nil {
			return // not a result (an unpack request)
		}
		w.mu.Lock()
		w.seen = append(w.seen, r)
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	})
	return w
}

// subscribeAll subscribes to subject without a pending limit (a test must
// not lose results to a slow consumer), is registered at the server when
// it returns, and unsubscribes when the test ends.
func (e *Env) subscribeAll(subject string, fn nats.MsgHandler) *nats.Subscription {
	e.T.Helper()
	sub, err := e.Conn.Subscribe(subject, fn)
	if err != nil {
		e.T.Fatalf("subscribe to %s: %v", subject, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		e.T.Fatal(err)
	}
	if err := e.Conn.Flush(); err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}

// Seen returns the results seen so far, in the order they arrived.
func (w *ResultWatch) Seen() []SeenResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}

// Await waits until cond holds for the results seen so far.
func (w *ResultWatch) Await(ctx context.Context, cond func(seen []SeenResult) bool) ([]SeenResult, error) {
	for {
		w.mu.Lock()
		seen, changed := slices.Clone(w.seen), w.changed
		w.mu.Unlock()
		if cond(seen) {
			return seen, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return seen, fmt.Errorf("%d results seen, condition not met: %w", len(seen), ctx.Err())
		}
	}
}
