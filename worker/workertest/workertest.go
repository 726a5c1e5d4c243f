// Package workertest runs worker handlers in unit tests, without a NATS
// server: one attempt of one item, as a worker would run it.
//
// The handler gets a context carrying worker.Info (batch id, item,
// attempt, idempotency key, deadline) and bounded by the item timeout. A
// panic becomes a failed attempt with its stack, output that is not JSON a
// permanent failure, and the error is classified as the worker classifies
// it: a permanent error (worker.Permanent) or the last attempt fails the
// item, a retry-after error (worker.RetryAfter) asks for the next attempt
// after its delay, any other error retries after the batch's backoff.
//
//	res, err := workertest.Run(ctx, worker.Typed(fetch), In{URL: "https://example.org"}, workertest.Attempt(3))
//	if res.Outcome != workertest.Failed { ... }
package workertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fanoutdev/fanout/internal/attempt"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/worker"
)

// Outcome is what a worker does with an item after an attempt.
type Outcome string

const (
	// Succeeded: the output is the item's result.
	Succeeded Outcome = "succeeded"
	// Failed: the item fails with Result.Recorded as its error, whatever
	// attempts remain (a permanent error), or because none remain.
	Failed Outcome = "failed"
	// Retried: the item runs again, Result.Delay from now.
	Retried Outcome = "retried"
)

// Result is one attempt as a worker would record it.
type Result struct {
	Outcome Outcome
	// Output is the handler's output, when it succeeded.
	Output json.RawMessage
	// Err is the attempt's error as the handler returned it (or the
	// panic, timeout or invalid output it stands for); nil on success.
	Err error
	// Recorded is the error text the item's failed result would carry.
	Recorded string
	// Delay is how long until the next attempt, when Retried.
	Delay time.Duration
	// Info is what the handler found in its context.
	Info worker.Info
	// Duration is how long the handler ran.
	Duration time.Duration
}

// ErrInvalidRun is wrapped by the errors of a run that could not start:
// an input that is not JSON, a bad option.
var ErrInvalidRun = errors.New("workertest: invalid run")

type config struct {
	info        worker.Info
	backoff     []time.Duration
	itemTimeout time.Duration
}

// Option sets up a run.
type Option func(*config) error

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidRun, fmt.Sprintf(format, args...))
}

// Attempt sets the attempt number, counted from 1 (default 1).
func Attempt(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("attempt %d: counts from 1", n)
		}
		c.info.Attempt = n
		return nil
	}
}

// MaxAttempts sets the batch's max_attempts (default 3).
func MaxAttempts(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("max attempts %d: must be at least 1", n)
		}
		c.info.MaxAttempts = n
		return nil
	}
}

// Backoff sets the batch's backoff: the delay before the 2nd, 3rd, ...
// attempt, the last repeating (default 1s, 5s, 30s).
func Backoff(ds ...time.Duration) Option {
	return func(c *config) error {
		for _, d := range ds {
			if d < 0 {
				return invalid("backoff %s: must not be negative", d)
			}
		}
		c.backoff = ds
		return nil
	}
}

// ItemTimeout sets the batch's item_timeout, the deadline of the handler's
// context (default 5m).
func ItemTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return invalid("item timeout %s: must be positive", d)
		}
		c.itemTimeout = d
		return nil
	}
}

// Item sets the batch id and item index (default "workertest" and 0); the
// idempotency key follows from them.
func Item(batchID string, item int) Option {
	return func(c *config) error {
		if !messages.ValidToken(batchID) || item < 0 {
			return invalid("item %q/%d: a batch id is 1-64 characters of A-Z a-z 0-9 _ -, an item at least 0", batchID, item)
		}
		c.info.BatchID, c.info.Item = batchID, item
		return nil
	}
}

// Activity sets the activity name (default "test").
func Activity(name string) Option {
	return func(c *config) error {
		if !messages.ValidToken(name) {
			return invalid("activity %q: 1-64 characters of A-Z a-z 0-9 _ -", name)
		}
		c.info.Activity = name
		return nil
	}
}

// Step runs the handler as a batch's "source" or "reduce" step.
func Step(step string) Option {
	return func(c *config) error {
		switch messages.Step(step) {
		case messages.StepSource, messages.StepReduce:
			c.info.Step = step
			return nil
		}
		return invalid("step %q: source or reduce", step)
	}
}

// Run runs one attempt of h on input and returns what a worker would do
// with the item. input is JSON as json.RawMessage or []byte, or any other
// value, which is encoded to JSON.
//
// The returned error is the attempt's (Result.Err), so that a test can
// write `if _, err := workertest.Run(...); err != nil`; the Result is
// returned with it. A run that cannot start returns a nil Result and an
// error wrapping ErrInvalidRun; one whose ctx ends first returns a nil
// Result and ctx's error (a worker shutting down gives such an item back
// without using an attempt).
func Run(ctx context.Context, h worker.Handler, input any, opts ...Option) (*Result, error) {
	cfg := config{
		info:        worker.Info{BatchID: "workertest", Activity: "test", Attempt: 1, MaxAttempts: messages.DefaultMaxAttempts},
		itemTimeout: messages.DefaultItemTimeout,
	}
	for _, d := range messages.DefaultBackoff {
		cfg.backoff = append(cfg.backoff, d.Std())
	}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if h == nil {
		return nil, invalid("nil handler")
	}
	in, err := encodeInput(input)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	info := cfg.info
	if info.Step != "" {
		info.Item = 0
	}
	info.IdempotencyKey = messages.IdempotencyKey(info.BatchID, info.Item)
	runCtx, cancel := context.WithTimeout(ctx, cfg.itemTimeout)
	defer cancel()
	info.Deadline, _ = runCtx.Deadline()
	runCtx = worker.WithInfo(runCtx, info)

	start := time.Now()
	out, err := attempt.Call(runCtx, h.Handle, in, cfg.itemTimeout, nil)
	res := &Result{Info: info, Duration: time.Since(start)}
	if err == nil && out != nil && !json.Valid(out) {
		err = attempt.ErrNotJSON
	}
	if err == nil {
		res.Outcome, res.Output = Succeeded, out
		return res, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	res.Err = err
	again, delay, recorded := attempt.Decide(err, info.Attempt, info.MaxAttempts, backoff(cfg.backoff, info.Attempt))
	if again {
		res.Outcome, res.Delay = Retried, delay
	} else {
		res.Outcome, res.Recorded = Failed, recorded
	}
	return res, err
}

// RunTyped is Run for a typed handler (worker.Typed, worker.Handle): the
// input is encoded from In and a successful output decoded into Out.
func RunTyped[In, Out any](ctx context.Context, fn func(context.Context, In) (Out, error), in In, opts ...Option) (Out, *Result, error) {
	var out Out
	res, err := Run(ctx, worker.Typed(fn), in, opts...)
	if res != nil && res.Outcome == Succeeded && len(res.Output) > 0 {
		if derr := json.Unmarshal(res.Output, &out); derr != nil {
			return out, res, fmt.Errorf("decode output: %w", derr)
		}
	}
	return out, res, err
}

func encodeInput(input any) (json.RawMessage, error) {
	var in []byte
	switch v := input.(type) {
	case json.RawMessage:
		in = v
	case []byte:
		in = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, invalid("input: %v", err)
		}
		in = b
	}
	if !json.Valid(in) {
		return nil, invalid("input is not JSON: %.80q", in)
	}
	return in, nil
}

// backoff is the delay before the attempt after attempt: the batch's
// backoff list by attempt, the last repeating.
func backoff(ds []time.Duration, attempt int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(max(attempt, 1), len(ds))-1]
}
