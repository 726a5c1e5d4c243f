package coordinator_test

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/testenv"
)

// On a memory-stored results stream a batch's reader starts after the
// results stored before the batch was accepted (its token records where),
// since a memory store finds a batch's first result by scanning from the
// reader's start; on a file-stored one it starts at the stream's start,
// which the store's subject index finds at once.
func TestMemoryResultsAreReadFromTheBatchOn(t *testing.T) {
	t.Parallel()
	for _, memory := range []bool{true, false} {
		t.Run(fmt.Sprintf("memory %v", memory), func(t *testing.T) {
			t.Parallel()
			env := testenv.Server(t)
			env.Coordinator(func(c *coordinator.Config) { c.Topology.Memory = memory })
			env.Worker(nil)
			items, _ := sha256Items(20)
			first := env.Submit(client.BatchRequest{Activity: "sha256", Items: items})
			env.Wait(first.BatchID, 30*time.Second)
			ctx := ctxFor(t, 30*time.Second)
			js := jsOf(t, env)
			results, err := js.Stream(ctx, names.ResultsStream())
			if err != nil {
				t.Fatal(err)
			}
			info, err := results.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			c, batch, _, release := heldBatch(t, env, 10, 5)
			defer release()
			consumers := results.ListConsumers(ctx)
			var start uint64
			for ci := range consumers.Info() {
				if ci.Config.FilterSubject == names.ResultBatchFilter(batch) || slices.Contains(ci.Config.FilterSubjects, names.ResultBatchFilter(batch)) {
					start = ci.Config.OptStartSeq
				}
			}
			if err := consumers.Err(); err != nil {
				t.Fatal(err)
			}
			release()
			checkCounted(t, env, c, env.Wait(batch, 30*time.Second), 10)
			control, err := js.Stream(ctx, names.ControlStream())
			if err != nil {
				t.Fatal(err)
			}
			tok, err := control.GetLastMsgForSubject(ctx, names.Token(batch))
			if err != nil {
				t.Fatal(err)
			}
			after, _ := strconv.ParseUint(tok.Header.Get("Fanout-Results-After"), 10, 64)
			switch {
			case memory && (after != info.State.LastSeq || start != after+1):
				t.Fatalf("results read from sequence %d, the token says after %d; %d were stored before the submit", start, after, info.State.LastSeq)
			case !memory && (after != 0 || start > 1):
				t.Fatalf("results read from sequence %d, the token says after %d, on file storage", start, after)
			}
		})
	}
}
