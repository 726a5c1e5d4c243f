package workertest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
	"github.com/fanoutdev/fanout/worker/workertest"
)

// workertest classifies an attempt as the worker does: the same handlers
// run by a real worker on an embedded server end with the results that
// repeated workertest.Run calls predict, attempt by attempt.
func TestRunAgreesWithTheWorker(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // registered first: runs after the worker has stopped
	h := behave(release)
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(func(w *worker.Worker) { w.Handle("behave", h) }, worker.WithName("conformance"))

	kinds := []string{"ok", "null", "permanent", "retry_after", "plain", "panic", "not_json", "hang"}
	items := make([]json.RawMessage, len(kinds))
	for i, k := range kinds {
		items[i], _ = json.Marshal(in{Kind: k})
	}
	const maxAttempts = 2
	itemTimeout := 300 * time.Millisecond
	r := env.Submit(client.BatchRequest{Activity: "behave", Items: items, Options: client.Options{
		MaxAttempts: maxAttempts, Backoff: []client.Duration{client.Duration(10 * time.Millisecond)},
		ItemTimeout: client.Duration(itemTimeout),
	}})
	env.Wait(r.BatchID, time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	results := env.Stream(ctx, messages.MustNames("").ResultsStream())
	for i, kind := range kinds {
		msg, err := results.GetLastMsgForSubject(ctx, messages.MustNames("").Result(r.BatchID, i))
		if err != nil {
			t.Fatalf("result of item %d: %v", i, err)
		}
		var real messages.ResultMessage
		if err := json.Unmarshal(msg.Data, &real); err != nil {
			t.Fatal(err)
		}

		var res *workertest.Result
		attempts := 0
		for attempt := 1; attempt <= maxAttempts; attempt++ {
			attempts = attempt
			res, _ = workertest.Run(ctx, h, items[i], workertest.Item(r.BatchID, i), workertest.Activity("behave"),
				workertest.Attempt(attempt), workertest.MaxAttempts(maxAttempts),
				workertest.Backoff(10*time.Millisecond), workertest.ItemTimeout(itemTimeout))
			if res == nil {
				t.Fatalf("%s: attempt %d did not run", kind, attempt)
			}
			if res.Outcome != workertest.Retried {
				break
			}
		}
		predicted := messages.ResultMessage{OK: res.Outcome == workertest.Succeeded, Output: res.Output, Error: res.Recorded, Attempts: attempts}
		if got, want := describe(real), describe(predicted); got != want {
			t.Errorf("%s: the worker recorded %s; workertest predicted %s", kind, got, want)
		}
	}
}

// describe is a result as compared: a panic's stack differs between the
// two, so only an error's first line counts.
func describe(r messages.ResultMessage) string {
	line, _, _ := strings.Cut(r.Error, "\n")
	return fmt.Sprintf("ok=%t output=%s error=%q attempts=%d", r.OK, r.Output, line, r.Attempts)
}
