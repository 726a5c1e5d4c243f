package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

var names = messages.MustNames(messages.DefaultPrefix)

// call is one run of a handler, as the handler saw it.
type call struct {
	info worker.Info
	at   time.Time
}

// recorder records every call of the handlers it wraps, per item.
type recorder struct {
	mu    sync.Mutex
	calls map[int][]call
}

func newRecorder() *recorder { return &recorder{calls: map[int][]call{}} }

func (r *recorder) wrap(fn worker.HandlerFunc) worker.HandlerFunc {
	return func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		info, ok := worker.InfoFrom(ctx)
		if !ok {
			return nil, worker.Permanent(errors.New("no worker.Info in the handler's context"))
		}
		r.mu.Lock()
		r.calls[info.Item] = append(r.calls[info.Item], call{info: info, at: time.Now()})
		r.mu.Unlock()
		return fn(ctx, in)
	}
}

func (r *recorder) of(item int) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls[item]...)
}

// setup starts a server, a coordinator and a worker serving activity with h.
func setup(t *testing.T, activity string, h worker.Handler, opts ...worker.Option) *testenv.Env {
	t.Helper()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(func(w *worker.Worker) { w.Handle(activity, h) }, opts...)
	return env
}

func items(n int) []json.RawMessage {
	out := make([]json.RawMessage, n)
	for i := range out {
		out[i] = json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))
	}
	return out
}

func backoff(ds ...time.Duration) []client.Duration {
	out := make([]client.Duration, len(ds))
	for i, d := range ds {
		out[i] = client.Duration(d)
	}
	return out
}

// resultMessage reads an item's result message from the results stream.
func resultMessage(t *testing.T, env *testenv.Env, batch string, item int) messages.ResultMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(env.Conn)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, names.Result(batch, item))
	if err != nil {
		t.Fatalf("result of %s/%d: %v", batch, item, err)
	}
	var res messages.ResultMessage
	if err := json.Unmarshal(m.Data, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

func checkCounts(t *testing.T, agg *client.Aggregate, succeeded, failed int) {
	t.Helper()
	if agg.Status != client.StatusCompleted || agg.Succeeded != succeeded || agg.Failed != failed || len(agg.Results) != agg.Total {
		t.Fatalf("aggregate: status %s succeeded %d failed %d results %d of %d; want completed %d/%d",
			agg.Status, agg.Succeeded, agg.Failed, len(agg.Results), agg.Total, succeeded, failed)
	}
}

// A permanent error fails the item on its first attempt, whatever
// max_attempts allows, also when wrapped.
func TestPermanentErrorFailsAtOnce(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	env := setup(t, "perm", rec.wrap(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		info, _ := worker.InfoFrom(ctx)
		err := worker.Permanent(fmt.Errorf("item %d: bad input", info.Item))
		if info.Item%2 == 1 {
			err = fmt.Errorf("validating: %w", err)
		}
		return nil, err
	}))
	r := env.Submit(client.BatchRequest{Activity: "perm", Items: items(4), Options: client.Options{MaxAttempts: 3, Backoff: backoff(10 * time.Millisecond)}})
	agg := env.Wait(r.BatchID, 30*time.Second)
	checkCounts(t, agg, 0, 4)
	for i, res := range agg.Results {
		want := fmt.Sprintf("item %d: bad input", i)
		if i%2 == 1 {
			want = "validating: " + want
		}
		if res.OK || res.Error != want {
			t.Errorf("item %d: %+v, want error %q", i, res, want)
		}
		if n := len(rec.of(i)); n != 1 {
			t.Errorf("item %d: handler called %d times, want 1", i, n)
		}
		if a := resultMessage(t, env, r.BatchID, i).Attempts; a != 1 {
			t.Errorf("item %d: result says %d attempts, want 1", i, a)
		}
	}
}

// A plain error retries under the batch's policy: the handler sees attempts
// 1..max_attempts, each with the same idempotency key "<batch>/<item>", and
// the item fails with the last error; an item that succeeds on a retry is a
// success.
func TestPlainErrorRetriesUpToMaxAttempts(t *testing.T) {
	t.Parallel()
	const maxAttempts = 4
	rec := newRecorder()
	env := setup(t, "flaky", rec.wrap(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		info, _ := worker.InfoFrom(ctx)
		switch {
		case info.Item == 0: // never works
			return nil, fmt.Errorf("attempt %d: connection refused", info.Attempt)
		case info.Item == 1 && info.Attempt < 3: // works on the third try
			return nil, errors.New("try again")
		}
		return in, nil
	}))
	r := env.Submit(client.BatchRequest{Activity: "flaky", Items: items(3), Options: client.Options{MaxAttempts: maxAttempts, Backoff: backoff(10*time.Millisecond, 20*time.Millisecond)}})
	agg := env.Wait(r.BatchID, 30*time.Second)
	checkCounts(t, agg, 2, 1)
	if res := agg.Results[0]; res.OK || res.Error != fmt.Sprintf("attempt %d: connection refused", maxAttempts) {
		t.Errorf("item 0: %+v, want the last attempt's error", res)
	}
	if res := agg.Results[1]; !res.OK || string(res.Output) != `{"i":1}` {
		t.Errorf("item 1: %+v", res)
	}
	for item, want := range map[int]int{0: maxAttempts, 1: 3, 2: 1} {
		calls := rec.of(item)
		if len(calls) != want {
			t.Errorf("item %d: %d calls, want %d", item, len(calls), want)
			continue
		}
		key := r.BatchID + "/" + fmt.Sprint(item)
		for n, c := range calls {
			if c.info.Attempt != n+1 || c.info.IdempotencyKey != key || c.info.MaxAttempts != maxAttempts ||
				c.info.BatchID != r.BatchID || c.info.Item != item || c.info.Activity != "flaky" {
				t.Errorf("item %d call %d: %+v, want attempt %d key %q", item, n, c.info, n+1, key)
			}
		}
		if a := resultMessage(t, env, r.BatchID, item).Attempts; a != want {
			t.Errorf("item %d: result says %d attempts, want %d", item, a, want)
		}
	}
}

// RetryAfter sets the delay before the next attempt, instead of the batch's
// backoff (an hour here, which the test would not survive).
func TestRetryAfterDelays(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	rec := newRecorder()
	env := setup(t, "later", rec.wrap(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		info, _ := worker.InfoFrom(ctx)
		if info.Attempt == 1 {
			return nil, worker.RetryAfter(delay, errors.New("rate limited"))
		}
		return in, nil
	}))
	r := env.Submit(client.BatchRequest{Activity: "later", Items: items(2), Options: client.Options{MaxAttempts: 3, Backoff: backoff(time.Hour)}})
	agg := env.Wait(r.BatchID, 30*time.Second)
	checkCounts(t, agg, 2, 0)
	for item := range 2 {
		calls := rec.of(item)
		if len(calls) != 2 {
			t.Fatalf("item %d: %d calls, want 2", item, len(calls))
		}
		if gap := calls[1].at.Sub(calls[0].at); gap < delay {
			t.Errorf("item %d: retried after %s, before the %s asked for", item, gap, delay)
		}
	}

	// With no attempt left, RetryAfter fails the item with its error.
	r = env.Submit(client.BatchRequest{Activity: "later", Items: items(1), Options: client.Options{MaxAttempts: 1}})
	agg = env.Wait(r.BatchID, 30*time.Second)
	checkCounts(t, agg, 0, 1)
	if res := agg.Results[0]; !strings.Contains(res.Error, "rate limited") {
		t.Errorf("item failed with %q, want the RetryAfter error", res.Error)
	}
}

// A panicking handler is a failed attempt (retried like any error), then a
// failed item whose error says it panicked, with the panic value and stack;
// the worker goes on serving.
func TestPanicBecomesFailedResult(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	env := setup(t, "panicky", rec.wrap(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		if info, _ := worker.InfoFrom(ctx); info.Item == 0 {
			panic("kaboom")
		}
		return in, nil
	}))
	r := env.Submit(client.BatchRequest{Activity: "panicky", Items: items(3), Options: client.Options{MaxAttempts: 2, Backoff: backoff(10 * time.Millisecond)}})
	agg := env.Wait(r.BatchID, 30*time.Second)
	checkCounts(t, agg, 2, 1)
	e := agg.Results[0].Error
	if !strings.Contains(e, "panicked") || !strings.Contains(e, "kaboom") || !strings.Contains(e, "goroutine") {
		t.Errorf("item 0 error %q: want it to say it panicked, with the value and the stack", e)
	}
	if n := len(rec.of(0)); n != 2 {
		t.Errorf("panicking item ran %d times, want 2 (max_attempts)", n)
	}
	if a := resultMessage(t, env, r.BatchID, 0).Attempts; a != 2 {
		t.Errorf("result says %d attempts, want 2", a)
	}
}

// An item that outlives item_timeout fails with a timeout error, whether its
// handler returns on the canceled context or ignores it.
func TestItemTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	release := make(chan struct{})
	var once sync.Once
	deadlines := make(chan time.Time, 4)
	rec := newRecorder()
	env := setup(t, "slow", rec.wrap(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		info, _ := worker.InfoFrom(ctx)
		deadlines <- info.Deadline
		switch info.Item {
		case 0: // returns when its context ends
			<-ctx.Done()
			return nil, ctx.Err()
		case 1: // ignores its context
			<-release
			return in, nil
		}
		return in, nil
	}))
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	r := env.Submit(client.BatchRequest{Activity: "slow", Items: items(3), Options: client.Options{MaxAttempts: 1, ItemTimeout: client.Duration(timeout)}})
	agg := env.Wait(r.BatchID, 30*time.Second)
	checkCounts(t, agg, 1, 2)
	for item := range 2 {
		if res := agg.Results[item]; res.OK || !strings.Contains(res.Error, "timed out") || !strings.Contains(res.Error, timeout.String()) {
			t.Errorf("item %d: %+v, want a timeout error naming %s", item, res, timeout)
		}
	}
	for range 3 {
		// Each attempt's deadline is set, and no later than item_timeout
		// after the attempt began (which is before this check).
		if d := <-deadlines; d.IsZero() || time.Until(d) > timeout {
			t.Errorf("handler's deadline %v, want within item_timeout %s", d, timeout)
		}
	}
}

func TestRegistrationErrors(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	echo := worker.HandlerFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil })
	for name, register := range map[string]func(*worker.Worker){
		"nothing registered": func(*worker.Worker) {},
		"registered twice":   func(w *worker.Worker) { w.Handle("a", echo); w.Handle("a", echo) },
		"bad name":           func(w *worker.Worker) { w.Handle("a.b", echo) },
		"empty name":         func(w *worker.Worker) { w.Handle("", echo) },
		"nil handler":        func(w *worker.Worker) { w.Handle("a", nil) },
	} {
		w, err := worker.New(env.Conn)
		if err != nil {
			t.Fatal(err)
		}
		register(w)
		if err := w.Start(ctx); err == nil {
			_ = w.Stop(ctx)
			t.Errorf("%s: Start succeeded", name)
		}
	}
	for name, opt := range map[string]worker.Option{
		"concurrency 0":     worker.WithConcurrency(0),
		"ack wait 1ms":      worker.WithAckWait(time.Millisecond),
		"prefix with a dot": worker.WithPrefix("a.b"),
		"empty name":        worker.WithName(""),
		"max ack pending 0": worker.WithMaxAckPending(0),
		"zero shutdown":     worker.WithShutdownTimeout(0),
		"6 replicas":        worker.WithStreams(6, false),
		"domain with a dot": worker.WithJetStreamDomain("a.b"),
		"empty domain":      worker.WithJetStreamDomain(""),
	} {
		if _, err := worker.New(env.Conn, opt); !errors.Is(err, worker.ErrInvalidOption) {
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
	}
}
