package coordinator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

// Big payloads: an item input and output larger than the claim-check
// threshold travel through the object store, and neither the handler nor
// the client sees a reference.
func TestClaimCheckBigPayloads(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	var sawRef atomic.Bool
	env.Worker(func(w *worker.Worker) {
		w.HandleFunc("double", func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
			var s string
			if err := json.Unmarshal(in, &s); err != nil {
				sawRef.Store(true) // a reference, or anything but the string
				return nil, worker.Permanent(err)
			}
			return json.Marshal(s + s)
		})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	big := strings.Repeat("x", 600*1024) // over the 256 KiB threshold, under max_payload
	var lines bytes.Buffer
	for _, s := range []string{"small", big, "also small"} {
		b, _ := json.Marshal(s)
		lines.Write(append(b, '\n'))
	}
	js, _ := jetstream.New(env.Conn)
	obs, err := js.ObjectStore(ctx, "FANOUT_BLOBS")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, "inputs/big-payloads.jsonl", lines.Bytes()); err != nil {
		t.Fatal(err)
	}
	r := env.Submit(client.BatchRequest{Activity: "double", ItemsRef: &messages.ObjectRef{Name: "inputs/big-payloads.jsonl"}})
	agg := env.Wait(r.BatchID, 60*time.Second)
	if agg.Status != client.StatusCompleted || agg.Succeeded != 3 || sawRef.Load() {
		t.Fatalf("aggregate %s %d/3 (handler saw a reference: %v): %+v", agg.Status, agg.Succeeded, sawRef.Load(), agg.Results)
	}
	var out string
	if err := json.Unmarshal(agg.Results[1].Output, &out); err != nil || out != big+big {
		t.Fatalf("big output: %d bytes, err %v", len(out), err)
	}
	if agg.Results[1].OutputRef == nil || !strings.HasPrefix(agg.Results[1].OutputRef.Name, "payloads/") {
		t.Fatalf("big output did not travel by claim check: %+v", agg.Results[1].OutputRef)
	}
	if agg.Results[0].OutputRef != nil || string(agg.Results[0].Output) != `"smallsmall"` {
		t.Fatalf("small output: %s ref %v", agg.Results[0].Output, agg.Results[0].OutputRef)
	}
	if _, err := obs.GetInfo(ctx, messages.PayloadObject(r.BatchID, 1, "in")); err != nil {
		t.Fatalf("the big input was not claim-checked: %v", err)
	}
}
