package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanoutdev/fanout/worker"
)

func TestMiddleware(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	var recorded []string
	boom := worker.HandlerFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		if string(in) == `"panic"` {
			panic("kaput")
		}
		return nil, errors.New("bad input")
	})
	// Outermost first, as Worker.Use applies them.
	h := worker.Logging(zerolog.New(&logs))(worker.Measure(func(a string, _ time.Duration, err error) {
		recorded = append(recorded, a+":"+err.Error()[:8])
	})(worker.Recover()(boom)))
	ctx := worker.WithInfo(context.Background(), worker.Info{BatchID: "b", Item: 7, Activity: "act", Attempt: 2})
	if _, err := h.Handle(ctx, json.RawMessage(`"panic"`)); err == nil || !strings.Contains(err.Error(), "kaput") {
		t.Fatalf("panic not turned into an error: %v", err)
	}
	if _, err := h.Handle(ctx, json.RawMessage(`1`)); err == nil || err.Error() != "bad input" {
		t.Fatalf("error changed: %v", err)
	}
	if len(recorded) != 2 || recorded[0] != "act:handler " || recorded[1] != "act:bad inpu" {
		t.Fatalf("recorded %q", recorded)
	}
	var took struct{ Took string }
	if err := json.Unmarshal(bytes.SplitN(logs.Bytes(), []byte("\n"), 2)[0], &took); err != nil {
		t.Fatalf("log line: %v", err)
	} else if _, err := time.ParseDuration(took.Took); err != nil {
		t.Errorf("took %q is not a duration such as 1.5ms: %v", took.Took, err)
	}
	for _, want := range []string{`"batch_id":"b"`, `"item":7`, `"attempt":2`, `"level":"warn"`} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("log lacks %s: %s", want, logs.String())
		}
	}
}
