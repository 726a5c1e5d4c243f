package workertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/worker"
	"github.com/fanoutdev/fanout/worker/workertest"
)

type in struct {
	Kind string `json:"kind"`
}

type out struct {
	Kind    string `json:"kind"`
	Key     string `json:"key"`
	Attempt int    `json:"attempt"`
}

var errFlaky = errors.New("flaky")

// behave is a handler whose behaviour its input chooses. "hang" ignores
// its context until release is closed.
func behave(release <-chan struct{}) worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
		var v in
		if err := json.Unmarshal(input, &v); err != nil {
			return nil, worker.Permanent(err)
		}
		info, _ := worker.InfoFrom(ctx)
		switch v.Kind {
		case "ok":
			return json.Marshal(out{Kind: v.Kind, Key: info.IdempotencyKey, Attempt: info.Attempt})
		case "null":
			return nil, nil
		case "permanent":
			return nil, worker.Permanent(fmt.Errorf("bad input: %w", errFlaky))
		case "retry_after":
			return nil, worker.RetryAfter(250*time.Millisecond, errors.New("rate limited"))
		case "plain":
			return nil, fmt.Errorf("wrapped: %w", errFlaky)
		case "panic":
			panic("boom")
		case "not_json":
			return json.RawMessage("{not json"), nil
		case "hang":
			<-release
			return nil, errors.New("released")
		case "context":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, worker.Permanent(fmt.Errorf("unknown kind %q", v.Kind))
	})
}

func TestRun(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	h := behave(release)
	for _, tc := range []struct {
		name     string
		kind     string
		opts     []workertest.Option
		outcome  workertest.Outcome
		delay    time.Duration
		recorded string // prefix of Result.Recorded
		is       error  // errors.Is(err, is)
	}{
		{name: "success", kind: "ok", outcome: workertest.Succeeded},
		{name: "no output", kind: "null", outcome: workertest.Succeeded},
		{name: "permanent error fails at once", kind: "permanent", outcome: workertest.Failed, recorded: "bad input: flaky", is: errFlaky},
		{name: "retry after", kind: "retry_after", outcome: workertest.Retried, delay: 250 * time.Millisecond},
		{name: "retry after on the last attempt fails", kind: "retry_after", opts: []workertest.Option{workertest.Attempt(3)}, outcome: workertest.Failed, recorded: "rate limited"},
		{name: "plain error retries after the default backoff", kind: "plain", outcome: workertest.Retried, delay: time.Second, is: errFlaky},
		{name: "second attempt's backoff", kind: "plain", opts: []workertest.Option{workertest.Attempt(2)}, outcome: workertest.Retried, delay: 5 * time.Second},
		{name: "the last backoff repeats", kind: "plain", opts: []workertest.Option{workertest.Attempt(4), workertest.MaxAttempts(9), workertest.Backoff(time.Millisecond, 2*time.Millisecond)}, outcome: workertest.Retried, delay: 2 * time.Millisecond},
		{name: "plain error on the last attempt fails", kind: "plain", opts: []workertest.Option{workertest.Attempt(2), workertest.MaxAttempts(2)}, outcome: workertest.Failed, recorded: "wrapped: flaky", is: errFlaky},
		{name: "panic is a failed attempt with its stack", kind: "panic", opts: []workertest.Option{workertest.MaxAttempts(1)}, outcome: workertest.Failed, recorded: "handler panicked: boom\ngoroutine "},
		{name: "output that is not JSON fails at once", kind: "not_json", outcome: workertest.Failed, recorded: "handler returned output that is not JSON"},
		{name: "a handler ignoring its context is given up on", kind: "hang", opts: []workertest.Option{workertest.ItemTimeout(50 * time.Millisecond), workertest.MaxAttempts(1)}, outcome: workertest.Failed, recorded: "item timed out after 50ms (the handler did not return)"},
		{name: "a handler ending with its context", kind: "context", opts: []workertest.Option{workertest.ItemTimeout(50 * time.Millisecond)}, outcome: workertest.Retried, delay: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := workertest.Run(context.Background(), h, in{Kind: tc.kind}, tc.opts...)
			if res == nil {
				t.Fatalf("no result: %v", err)
			}
			if res.Outcome != tc.outcome || res.Delay != tc.delay || !strings.HasPrefix(res.Recorded, tc.recorded) {
				t.Fatalf("outcome %s delay %s recorded %q, want %s %s %q...", res.Outcome, res.Delay, res.Recorded, tc.outcome, tc.delay, tc.recorded)
			}
			if (err == nil) != (tc.outcome == workertest.Succeeded) || !errors.Is(err, res.Err) {
				t.Fatalf("error %v (result's %v) for outcome %s", err, res.Err, res.Outcome)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
			if tc.outcome == workertest.Failed && tc.recorded == "" {
				t.Fatal("test case without the recorded error")
			}
		})
	}
}

func TestRunInfo(t *testing.T) {
	t.Parallel()
	var got worker.Info
	h := worker.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		got, _ = worker.InfoFrom(ctx)
		return json.RawMessage(`1`), nil
	})
	before := time.Now()
	res, err := workertest.Run(context.Background(), h, json.RawMessage(`{"x":1}`),
		workertest.Item("b-1", 7), workertest.Activity("resize"), workertest.Attempt(2), workertest.MaxAttempts(4), workertest.ItemTimeout(time.Minute))
	if err != nil || string(res.Output) != "1" {
		t.Fatalf("%+v, %v", res, err)
	}
	want := worker.Info{BatchID: "b-1", Item: 7, Activity: "resize", Attempt: 2, MaxAttempts: 4, IdempotencyKey: "b-1/7", Deadline: got.Deadline}
	if got != want || res.Info != want {
		t.Fatalf("info %+v (result's %+v), want %+v", got, res.Info, want)
	}
	if got.Deadline.Before(before.Add(time.Minute)) || got.Deadline.After(time.Now().Add(time.Minute)) {
		t.Fatalf("deadline %s is not a minute from the run", got.Deadline)
	}

	// Defaults, and a reduce step.
	if _, err := workertest.Run(context.Background(), h, []byte(`[]`), workertest.Step("reduce")); err != nil {
		t.Fatal(err)
	}
	if got.BatchID != "workertest" || got.Activity != "test" || got.Attempt != 1 || got.MaxAttempts != 3 || got.IdempotencyKey != "workertest/0" || got.Step != "reduce" {
		t.Fatalf("default info %+v", got)
	}
}

func TestRunTyped(t *testing.T) {
	t.Parallel()
	double := func(_ context.Context, n int) (int, error) {
		if n < 0 {
			return 0, worker.Permanent(errors.New("negative"))
		}
		return 2 * n, nil
	}
	got, res, err := workertest.RunTyped(context.Background(), double, 21)
	if err != nil || got != 42 || res.Outcome != workertest.Succeeded {
		t.Fatalf("%d, %+v, %v", got, res, err)
	}
	_, res, err = workertest.RunTyped(context.Background(), double, -1)
	if err == nil || res.Outcome != workertest.Failed || res.Recorded != "negative" {
		t.Fatalf("%+v, %v", res, err)
	}
	// Input a typed handler cannot decode fails at once, as in a worker.
	res, err = workertest.Run(context.Background(), worker.Typed(double), "twenty")
	if err == nil || res.Outcome != workertest.Failed || !strings.HasPrefix(res.Recorded, "input: ") {
		t.Fatalf("%+v, %v", res, err)
	}
}

func TestRunRefusesBadSetup(t *testing.T) {
	t.Parallel()
	h := behave(nil)
	for name, run := range map[string]func() (*workertest.Result, error){
		"input not JSON":      func() (*workertest.Result, error) { return workertest.Run(context.Background(), h, []byte("{")) },
		"input not encodable": func() (*workertest.Result, error) { return workertest.Run(context.Background(), h, func() {}) },
		"nil handler":         func() (*workertest.Result, error) { return workertest.Run(context.Background(), nil, 1) },
		"attempt 0": func() (*workertest.Result, error) {
			return workertest.Run(context.Background(), h, 1, workertest.Attempt(0))
		},
		"bad batch id": func() (*workertest.Result, error) {
			return workertest.Run(context.Background(), h, 1, workertest.Item("a b", 0))
		},
		"bad step": func() (*workertest.Result, error) {
			return workertest.Run(context.Background(), h, 1, workertest.Step("map"))
		},
	} {
		if res, err := run(); res != nil || !errors.Is(err, workertest.ErrInvalidRun) {
			t.Errorf("%s: %+v, %v; want ErrInvalidRun", name, res, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res, err := workertest.Run(ctx, h, in{Kind: "ok"}); res != nil || !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %+v, %v", res, err)
	}
}
