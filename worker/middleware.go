package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"
)

// Logging logs each attempt of each item at debug level when it succeeds
// and at warn level when it fails, with batch_id, item, activity and
// attempt, so that a handler's logs can be followed item by item.
func Logging(l zerolog.Logger) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
			info, _ := InfoFrom(ctx)
			start := time.Now()
			out, err := next.Handle(ctx, input)
			ev := l.Debug()
			if err != nil {
				ev = l.Warn().Err(err)
			}
			ev.Str("batch_id", info.BatchID).Int("item", info.Item).Str("activity", info.Activity).
				Int("attempt", info.Attempt).Stringer("took", time.Since(start)).Msg("item attempt")
			return out, err
		})
	}
}

// Recover turns a panic in the handlers it wraps into an error carrying the
// panic value and stack. The worker recovers panics anyway; use this to
// have a panic pass through other middleware (logging, metrics) as an error.
func Recover() Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, input json.RawMessage) (out json.RawMessage, err error) {
			defer func() {
				if r := recover(); r != nil {
					out, err = nil, fmt.Errorf("handler panicked: %v\n%s", r, debug.Stack())
				}
			}()
			return next.Handle(ctx, input)
		})
	}
}

// Measure calls record after each attempt with its activity, run time and
// error: the hook for metrics of your own (the worker binary's Prometheus
// metrics use WithObserver).
func Measure(record func(activity string, took time.Duration, err error)) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
			info, _ := InfoFrom(ctx)
			start := time.Now()
			out, err := next.Handle(ctx, input)
			record(info.Activity, time.Since(start), err)
			return out, err
		})
	}
}
