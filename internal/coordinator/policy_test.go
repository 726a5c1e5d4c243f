package coordinator_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/testenv"
)

// sleepBatch makes n sleep items of ms, the ones in failing failing.
func sleepBatch(n, ms int, failing ...int) []json.RawMessage {
	bad := map[int]bool{}
	for _, i := range failing {
		bad[i] = true
	}
	items := make([]json.RawMessage, n)
	for i := range items {
		if bad[i] {
			items[i] = json.RawMessage(fmt.Sprintf(`{"ms":%d,"fail":"item %d is bad"}`, ms, i))
		} else {
			items[i] = json.RawMessage(fmt.Sprintf(`{"ms":%d}`, ms))
		}
	}
	return items
}

// Failure policies: fail_fast and tolerated_failures end a batch failed
// once exceeded, remove its queued work and mark the rest not run; within
// the threshold the batch completes with its failures as results.
func TestFailurePolicies(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil)
	two, five := 2, 5
	cases := []struct {
		name       string
		opts       client.Options
		failing    []int
		wantStatus client.Status
		wantReason string
	}{
		{"fail_fast", client.Options{FailurePolicy: "fail_fast"}, []int{40}, client.StatusFailed, "fail_fast"},
		{"over tolerated_failures", client.Options{ToleratedFailures: &two}, []int{10, 30, 50}, client.StatusFailed, "tolerated_failures"},
		{"within tolerated_failures", client.Options{ToleratedFailures: &five}, []int{10, 30, 50}, client.StatusCompleted, ""},
	}
	for _, tc := range cases {
		tc.opts.MaxAttempts, tc.opts.MaxInFlight = 1, 4
		r := env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepBatch(400, 2, tc.failing...), Options: tc.opts})
		agg := env.Wait(r.BatchID, 60*time.Second)
		if agg.Status != tc.wantStatus || !strings.Contains(agg.Reason, tc.wantReason) {
			t.Fatalf("%s: status %s (%q), want %s (%q)", tc.name, agg.Status, agg.Reason, tc.wantStatus, tc.wantReason)
		}
		if agg.Succeeded+agg.Failed+agg.NotRun != 400 || len(agg.Results) != 400 {
			t.Fatalf("%s: %d+%d+%d results of 400", tc.name, agg.Succeeded, agg.Failed, agg.NotRun)
		}
		if tc.wantStatus == client.StatusCompleted {
			if agg.Failed != len(tc.failing) || agg.NotRun != 0 {
				t.Fatalf("%s: failed %d not run %d", tc.name, agg.Failed, agg.NotRun)
			}
			continue
		}
		if agg.NotRun == 0 {
			t.Fatalf("%s: ended failed with every item run", tc.name)
		}
		// Earlier cases' batches are over: what is left is this batch's.
		if n := batchWork(t, env); n > 4 { // at most the window's last attempts, acked as they finish
			t.Fatalf("%s: %d work messages left after the batch failed", tc.name, n)
		}
	}
}
