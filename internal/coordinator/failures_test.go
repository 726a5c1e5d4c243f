package coordinator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
)

func failEvery(k int) func(int) string {
	return func(i int) string {
		if i%k == 0 {
			return fmt.Sprintf("item %d: disk full", i)
		}
		return ""
	}
}

// Partial failure: failed items are results of a completed batch, counted
// exactly, each with its own error message, and every other item succeeded.
func TestFailedItemsAreResults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts client.Options
		// attempts each failing item makes before it is given up on
		attempts int
	}{
		{"one attempt", client.Options{MaxAttempts: 1, MaxInFlight: 8}, 1},
		{"three attempts", client.Options{MaxAttempts: 3, Backoff: durations(10 * time.Millisecond), MaxInFlight: 8}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := testenv.Server(t)
			env.Coordinator(nil)
			env.Worker(nil)
			const total = 60
			fail := failEvery(4)
			r := env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(total, 1, fail), Options: tc.opts})
			agg := env.Wait(r.BatchID, 60*time.Second)
			wantFailed := (total + 3) / 4
			checkAggregate(t, agg, client.StatusCompleted, total, total-wantFailed, wantFailed)
			for i, res := range agg.Results {
				if msg := fail(i); msg != "" {
					if res.OK || res.Error != msg || res.Output != nil {
						t.Errorf("item %d: %+v, want failed with error %q", i, res, msg)
					}
					continue
				}
				if !res.OK || res.Error != "" || string(res.Output) != `{"slept_ms":1}` {
					t.Errorf("item %d: %+v (output %s), want ok with {\"slept_ms\":1}", i, res, res.Output)
				}
			}
			// The results stream says how many attempts each item took.
			for i, res := range resultMessages(t, env, r.BatchID, total) {
				want := 1
				if fail(i) != "" {
					want = tc.attempts
				}
				if res.Attempts != want {
					t.Errorf("item %d: %d attempts, want %d", i, res.Attempts, want)
				}
			}
		})
	}
}

// A batch whose every item fails still completes, with every item failed.
func TestAllItemsFailing(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil)
	r := env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(20, 0, func(int) string { return "no" }), Options: client.Options{MaxAttempts: 1}})
	agg := env.Wait(r.BatchID, 30*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, 20, 0, 20)
	// An input the activity cannot read fails at once (a permanent error),
	// whatever max_attempts says.
	r = env.Submit(client.BatchRequest{Activity: "sha256", Items: []json.RawMessage{json.RawMessage(`{"data":"a"}`), json.RawMessage(`{"nodata":1}`), json.RawMessage(`[1]`)}, Options: client.Options{MaxAttempts: 5, Backoff: durations(time.Hour)}})
	agg = env.Wait(r.BatchID, 30*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, 3, 1, 2)
	if agg.Results[1].Error != `input: "data" (a string) is required` {
		t.Errorf("item 1 error %q", agg.Results[1].Error)
	}
	for i, res := range resultMessages(t, env, r.BatchID, 3) {
		if res.Attempts != 1 {
			t.Errorf("item %d: %d attempts, want 1", i, res.Attempts)
		}
	}
}

// resultMessages reads a batch's result messages from the results stream,
// indexed by item.
func resultMessages(t *testing.T, env *testenv.Env, batch string, total int) []messages.ResultMessage {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	s, err := jsOf(t, env).Stream(ctx, names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]messages.ResultMessage, total)
	for i := range out {
		m, err := s.GetLastMsgForSubject(ctx, names.Result(batch, i))
		if err != nil {
			t.Fatalf("result of item %d: %v", i, err)
		}
		if err := json.Unmarshal(m.Data, &out[i]); err != nil {
			t.Fatalf("result of item %d: %v", i, err)
		}
		if out[i].BatchID != batch || out[i].Item != i {
			t.Fatalf("result on %s is of %s/%d", names.Result(batch, i), out[i].BatchID, out[i].Item)
		}
	}
	if _, err := s.GetLastMsgForSubject(ctx, names.Result(batch, total)); err == nil || !isNotFound(err) {
		t.Fatalf("a result for item %d of a %d-item batch: %v", total, total, err)
	}
	return out
}

func isNotFound(err error) bool { return errors.Is(err, jetstream.ErrMsgNotFound) }
