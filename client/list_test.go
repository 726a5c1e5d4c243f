package client_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/testenv"
)

// List returns the newest batches first, with their counts and options.
func TestList(t *testing.T) {
	t.Parallel()
	env := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if bs, err := testenv.Server(t).Client.List(ctx, 10); err != nil || len(bs) != 0 {
		t.Fatalf("list with no coordinator ever: %+v, %v", bs, err)
	}
	var ids []string
	for i := range 4 {
		r := env.Submit(client.BatchRequest{Activity: "echo", Items: echoItems(i+1, 1), Options: client.Options{MaxInFlight: 7}})
		env.Wait(r.BatchID, time.Minute)
		ids = append(ids, r.BatchID)
	}
	all, err := env.Client.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 {
		t.Fatalf("%d batches, want 4: %+v; ids %v", len(all), all, ids)
	}
	for i, b := range all {
		want := ids[3-i]
		if b.BatchID != want || b.Status != client.StatusCompleted || b.Total != 4-i || b.Done != b.Total || b.Activity != "echo" {
			t.Fatalf("batch %d: %+v, want %s completed with %d items", i, b, want, 4-i)
		}
		if b.Options == nil || b.Options.MaxInFlight != 7 || b.CreatedAt.IsZero() {
			t.Fatalf("batch %d: options %+v, created %s", i, b.Options, b.CreatedAt)
		}
	}
	two, err := env.Client.List(ctx, 2)
	if err != nil || len(two) != 2 || two[0].BatchID != ids[3] || two[1].BatchID != ids[2] {
		t.Fatalf("list of 2: %+v, %v", two, err)
	}

	// A running batch is listed running.
	r := env.Submit(client.BatchRequest{Activity: "sleep", Items: []json.RawMessage{[]byte(`{"ms":500}`)}})
	one, err := env.Client.List(ctx, 1)
	if err != nil || len(one) != 1 || one[0].BatchID != r.BatchID || one[0].Status != client.StatusRunning {
		t.Fatalf("list with a running batch: %+v, %v", one, err)
	}
	env.Wait(r.BatchID, time.Minute)
}
