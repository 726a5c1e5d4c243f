// Package builtin holds the activities cmd/worker serves out of the box:
// echo, sha256 and sleep.
package builtin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/fanoutdev/fanout/worker"
)

// Handlers returns every built-in activity by name.
func Handlers() map[string]worker.Handler {
	return map[string]worker.Handler{
		"echo":   worker.HandlerFunc(Echo),
		"sha256": worker.Typed(SHA256),
		"sleep":  worker.Typed(Sleep),
	}
}

// Register adds every built-in activity to w.
func Register(w *worker.Worker) {
	for name, h := range Handlers() {
		w.Handle(name, h)
	}
}

// Echo returns its input as its output.
func Echo(_ context.Context, input json.RawMessage) (json.RawMessage, error) {
	return input, nil
}

// SHA256Input is the sha256 activity's input.
type SHA256Input struct {
	Data *string `json:"data"`
}

// SHA256Output is the sha256 activity's output.
type SHA256Output struct {
	SHA256 string `json:"sha256"`
}

// SHA256 hashes the UTF-8 bytes of data.
func SHA256(_ context.Context, in SHA256Input) (SHA256Output, error) {
	if in.Data == nil {
		return SHA256Output{}, worker.Permanent(errors.New(`input: "data" (a string) is required`))
	}
	sum := sha256.Sum256([]byte(*in.Data))
	return SHA256Output{SHA256: hex.EncodeToString(sum[:])}, nil
}

// SleepInput is the sleep activity's input.
type SleepInput struct {
	MS   int64  `json:"ms"`
	Fail string `json:"fail,omitempty"`
}

// SleepOutput is the sleep activity's output.
type SleepOutput struct {
	SleptMS int64 `json:"slept_ms"`
}

// Sleep waits ms milliseconds (or until canceled), then fails with the
// message fail if one is given.
func Sleep(ctx context.Context, in SleepInput) (SleepOutput, error) {
	if in.MS < 0 {
		return SleepOutput{}, worker.Permanent(errors.New(`input: "ms" must not be negative`))
	}
	t := time.NewTimer(time.Duration(in.MS) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return SleepOutput{}, ctx.Err()
	}
	if in.Fail != "" {
		return SleepOutput{}, errors.New(in.Fail)
	}
	return SleepOutput{SleptMS: in.MS}, nil
}
