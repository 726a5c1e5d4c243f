// Package attempt holds the rules of one attempt of an item: how a handler
// is run, and what its error means. The worker and worker/workertest both
// use it, so that a handler tested with workertest behaves as it will in a
// worker.
package attempt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"
)

// PermanentError marks a failure that retrying cannot fix: the item fails
// at once, whatever attempts remain.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// RetryAfterError asks for the next attempt after Delay instead of the
// batch's backoff. When no attempts remain the item fails with Err.
type RetryAfterError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.Err, e.Delay)
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// ErrNotJSON is the permanent failure of a handler whose output is not JSON.
var ErrNotJSON = &PermanentError{Err: errors.New("handler returned output that is not JSON")}

// Call runs fn on input: a panic becomes an error with its stack, and a
// handler that ignores its context past the item timeout is given up on
// (it is left to end by itself). spawn runs fn's call on a goroutine of
// its choice (nil: a new one).
func Call(ctx context.Context, fn func(context.Context, json.RawMessage) (json.RawMessage, error), input json.RawMessage, timeout time.Duration, spawn func(func())) (json.RawMessage, error) {
	type outcome struct {
		out json.RawMessage
		err error
	}
	done := make(chan outcome, 1)
	run := func() {
		defer func() {
			if r := recover(); r != nil {
				done <- outcome{err: fmt.Errorf("handler panicked: %v\n%s", r, debug.Stack())}
			}
		}()
		out, err := fn(ctx, input)
		done <- outcome{out, err}
	}
	if spawn != nil {
		spawn(run)
	} else {
		go run()
	}
	select {
	case o := <-done:
		if o.err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("item timed out after %s: %w", timeout, o.err)
		}
		return o.out, o.err
	case <-ctx.Done():
		select {
		case o := <-done: // the handler returned as its context ended
			if o.err == nil {
				return o.out, nil
			}
		default:
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("item timed out after %s (the handler did not return)", timeout)
		}
		return nil, ctx.Err()
	}
}

// Decide says what a failed attempt (err != nil) leads to: a retry after
// delay, or the item's failure with the error text to record. backoff is
// the batch's delay after this attempt.
func Decide(err error, attempt, maxAttempts int, backoff time.Duration) (retry bool, delay time.Duration, recorded string) {
	var perm *PermanentError
	var later *RetryAfterError
	switch {
	case errors.As(err, &perm) || attempt >= maxAttempts:
		if errors.As(err, &later) {
			return false, 0, later.Err.Error() // no retry is coming
		}
		return false, 0, err.Error()
	case errors.As(err, &later):
		return true, later.Delay, ""
	default:
		return true, backoff, ""
	}
}
