package coordinator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
)

// Big batches: items from a JSON Lines object instead of the request, and
// an aggregate too large to hold in memory streamed to the object store in
// item order. The coordinator here keeps at most 50 results in memory.
func TestItemsFromObjectStore(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(func(c *coordinator.Config) { c.InMemoryResults = 50 })
	env.Worker(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, _ := jetstream.New(env.Conn)
	obs, err := js.ObjectStore(ctx, "FANOUT_BLOBS")
	if err != nil {
		t.Fatal(err)
	}
	const n = 1500
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, "{\"n\":%d}\n", i)
	}
	if _, err := obs.PutBytes(ctx, "inputs/big.jsonl", buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	r := env.Submit(client.BatchRequest{Activity: "echo", ItemsRef: &messages.ObjectRef{Name: "inputs/big.jsonl"}, Options: client.Options{MaxInFlight: 64}})
	if r.Total != n {
		t.Fatalf("submit reply total %d, want %d", r.Total, n)
	}
	agg := env.Wait(r.BatchID, 60*time.Second)
	if agg.Status != client.StatusCompleted || agg.Succeeded != n || agg.ResultsRef == nil {
		t.Fatalf("aggregate %s %d/%d ref %v", agg.Status, agg.Succeeded, agg.Total, agg.ResultsRef)
	}
	if len(agg.Results) != n {
		t.Fatalf("%d results loaded from %s, want %d", len(agg.Results), agg.ResultsRef.Name, n)
	}
	for i, res := range agg.Results {
		var v struct{ N int }
		if json.Unmarshal(res.Output, &v) != nil || v.N != i || res.Item != i || !res.OK {
			t.Fatalf("result %d: %+v", i, res)
		}
	}
	// A missing object is refused at submit, with a message that says so.
	_, err = env.Client.Submit(ctx, client.BatchRequest{Activity: "echo", ItemsRef: &messages.ObjectRef{Name: "inputs/missing.jsonl"}})
	if e, ok := err.(*client.Error); !ok || e.Code != client.CodeInvalidRequest {
		t.Fatalf("submit of a missing items object: %v", err)
	}
}
