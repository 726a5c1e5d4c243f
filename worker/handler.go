package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fanoutdev/fanout/internal/attempt"
	"github.com/fanoutdev/fanout/internal/messages"
)

// Handler runs an activity on one item. Input is the item's JSON; the
// returned bytes must be JSON (or nil for no output). The error decides
// what happens to the item: see Permanent and RetryAfter.
type Handler interface {
	Handle(ctx context.Context, input json.RawMessage) (json.RawMessage, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, input json.RawMessage) (json.RawMessage, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	return f(ctx, input)
}

// Middleware wraps a handler (logging, metrics, tracing...).
type Middleware func(Handler) Handler

// Typed turns a function of Go values into a Handler: the input is decoded
// from JSON into In (a decoding failure is a permanent error, as retrying
// cannot fix it) and the output encoded from Out.
func Typed[In, Out any](fn func(ctx context.Context, in In) (Out, error)) Handler {
	return HandlerFunc(func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
		var in In
		if err := messages.Decode(input, &in); err != nil {
			return nil, Permanent(fmt.Errorf("input: %w", err))
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		return messages.Encode(out)
	})
}

// Handle registers a typed handler for an activity on w.
func Handle[In, Out any](w *Worker, activity string, fn func(ctx context.Context, in In) (Out, error)) {
	w.Handle(activity, Typed(fn))
}

// PermanentError marks a failure that retrying cannot fix: the item fails
// at once, whatever attempts remain. Its field Err is the cause. (It and
// RetryAfterError are defined where worker/workertest shares the worker's
// rules.)
type PermanentError = attempt.PermanentError

// Permanent wraps err so that the item fails without further attempts.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// RetryAfterError asks for the next attempt after Delay instead of the
// batch's backoff. When no attempts remain the item fails with Err.
type RetryAfterError = attempt.RetryAfterError

// RetryAfter wraps err so that the item is retried after d.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		err = errors.New("retry requested")
	}
	return &RetryAfterError{Delay: d, Err: err}
}

// Info describes the item a handler is running. Get it with InfoFrom.
type Info struct {
	BatchID  string
	Item     int
	Activity string
	// Attempt counts from 1; a worker that crashed or lost the item also
	// used an attempt.
	Attempt     int
	MaxAttempts int
	// IdempotencyKey is "<batch>/<item>", the same on every attempt: use it
	// to make side effects happen once.
	IdempotencyKey string
	// Deadline is when this attempt times out (the batch's item_timeout).
	Deadline time.Time
	// Step is "source" or "reduce" when the handler runs a batch's source or
	// reduce step instead of an item (Item is then 0).
	Step string
}

type infoKey struct{}

// InfoFrom returns the item a handler's context belongs to.
func InfoFrom(ctx context.Context) (Info, bool) {
	i, ok := ctx.Value(infoKey{}).(Info)
	return i, ok
}

// WithInfo returns a context carrying info, for calling a handler outside a
// worker (tests).
func WithInfo(ctx context.Context, info Info) context.Context {
	return context.WithValue(ctx, infoKey{}, info)
}
