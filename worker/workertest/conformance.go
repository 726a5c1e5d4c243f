package workertest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/fanoutdev/fanout/worker"
)

// ConformanceInput is the input of the conformance activity: what the
// conformance check (`fanout conformance`) asks the worker under test to
// do with an item. See docs/protocol.md, "Proving a worker".
type ConformanceInput struct {
	// SleepMS: first sleep this long (ending early, failed, if the item's
	// deadline passes).
	SleepMS int `json:"sleep_ms,omitempty"`
	// Fail: fail with this error, as a permanent failure when Permanent is
	// set, else as a retryable one while the attempt is below Until.
	Fail      string `json:"fail,omitempty"`
	Permanent bool   `json:"permanent,omitempty"`
	Until     int    `json:"until,omitempty"`
	// Bytes: succeed with a JSON string of this many "x".
	Bytes int `json:"bytes,omitempty"`
	// Echo: succeed with ConformanceOutput.
	Echo json.RawMessage `json:"echo,omitempty"`
}

// ConformanceOutput is the conformance activity's output for an item
// without Bytes: the input's Echo, and the attempt and idempotency key the
// worker gave the handler.
type ConformanceOutput struct {
	Echo    json.RawMessage `json:"echo"`
	Attempt int             `json:"attempt"`
	Key     string          `json:"key"`
}

// Conformance is the handler of the conformance activity for a Go worker:
// register it under the activity name given to `fanout conformance
// --activity`, with a short ack wait (the heartbeat case runs an item for
// 2.5 ack waits):
//
//	w, _ := worker.New(nc, worker.WithAckWait(time.Second))
//	w.Handle("conformance", workertest.Conformance())
func Conformance() worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
		var in ConformanceInput
		if err := json.Unmarshal(input, &in); err != nil {
			return nil, worker.Permanent(errors.New("conformance input: " + err.Error()))
		}
		info, _ := worker.InfoFrom(ctx)
		if in.SleepMS > 0 {
			select {
			case <-time.After(time.Duration(in.SleepMS) * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		switch {
		case in.Fail != "" && in.Permanent:
			return nil, worker.Permanent(errors.New(in.Fail))
		case in.Fail != "" && info.Attempt < in.Until:
			return nil, errors.New(in.Fail)
		case in.Bytes > 0:
			return json.Marshal(strings.Repeat("x", in.Bytes))
		}
		echo := in.Echo
		if echo == nil {
			echo = json.RawMessage("null")
		}
		return json.Marshal(ConformanceOutput{Echo: echo, Attempt: info.Attempt, Key: info.IdempotencyKey})
	})
}
