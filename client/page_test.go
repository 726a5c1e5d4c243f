package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
)

// sleepItems makes n sleep items; those whose index is in failing fail
// with "item <i> failed".
func sleepItems(n int, ms int, failing func(i int) bool) []json.RawMessage {
	items := make([]json.RawMessage, n)
	for i := range items {
		fail := ""
		if failing != nil && failing(i) {
			fail = fmt.Sprintf("item %d failed", i)
		}
		items[i], _ = json.Marshal(map[string]any{"ms": ms, "fail": fail})
	}
	return items
}

// ListPage moves through the batches newest first, a page at a time, in
// both directions, and filters by status and activity.
func TestListPage(t *testing.T) {
	t.Parallel()
	env := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ids []string // oldest first
	for i := range 7 {
		activity := "echo"
		if i%3 == 0 {
			activity = "sha256"
		}
		item := json.RawMessage(`{"data":"x"}`)
		r := env.Submit(client.BatchRequest{Activity: activity, Items: []json.RawMessage{item}})
		env.Wait(r.BatchID, time.Minute)
		ids = append(ids, r.BatchID)
	}
	newest := slices.Clone(ids)
	slices.Reverse(newest)
	idsOf := func(p *client.BatchPage) []string {
		var out []string
		for _, b := range p.Batches {
			out = append(out, b.BatchID)
		}
		return out
	}
	page := func(q client.ListQuery) *client.BatchPage {
		t.Helper()
		p, err := env.Client.ListPage(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	first := page(client.ListQuery{Limit: 3})
	if !slices.Equal(idsOf(first), newest[:3]) || first.Newer || !first.Older || first.Matched != 7 {
		t.Fatalf("first page: %v newer %v older %v matched %d, want %v, older only, 7", idsOf(first), first.Newer, first.Older, first.Matched, newest[:3])
	}
	last := first.Batches[2]
	cur := client.ListCursor{CreatedAt: last.CreatedAt, BatchID: last.BatchID}
	parsed, err := client.ParseListCursor(cur.String())
	if err != nil || parsed.BatchID != cur.BatchID || !parsed.CreatedAt.Equal(cur.CreatedAt) {
		t.Fatalf("cursor %q read back as %+v, %v", cur.String(), parsed, err)
	}
	second := page(client.ListQuery{Limit: 3, Before: &parsed})
	if !slices.Equal(idsOf(second), newest[3:6]) || !second.Newer || !second.Older {
		t.Fatalf("second page: %v newer %v older %v, want %v, both", idsOf(second), second.Newer, second.Older, newest[3:6])
	}
	end := second.Batches[2]
	third := page(client.ListQuery{Limit: 3, Before: &client.ListCursor{CreatedAt: end.CreatedAt, BatchID: end.BatchID}})
	if !slices.Equal(idsOf(third), newest[6:]) || !third.Newer || third.Older {
		t.Fatalf("third page: %v newer %v older %v, want %v, newer only", idsOf(third), third.Newer, third.Older, newest[6:])
	}
	// Back from the third page: the three just newer than its first batch.
	top := third.Batches[0]
	back := page(client.ListQuery{Limit: 3, After: &client.ListCursor{CreatedAt: top.CreatedAt, BatchID: top.BatchID}})
	if !slices.Equal(idsOf(back), newest[3:6]) || !back.Newer || !back.Older {
		t.Fatalf("page after %s: %v newer %v older %v, want %v", top.BatchID, idsOf(back), back.Newer, back.Older, newest[3:6])
	}

	sha := page(client.ListQuery{Activity: "sha256"})
	if !slices.Equal(idsOf(sha), []string{ids[6], ids[3], ids[0]}) || sha.Matched != 3 || sha.Newer || sha.Older {
		t.Fatalf("sha256 batches: %v (matched %d), want %v", idsOf(sha), sha.Matched, []string{ids[6], ids[3], ids[0]})
	}
	if p := page(client.ListQuery{Status: client.StatusRunning}); len(p.Batches) != 0 || p.Matched != 0 {
		t.Fatalf("running batches: %v, want none", idsOf(p))
	}
	if p := page(client.ListQuery{Status: client.StatusCompleted, Activity: "echo"}); len(p.Batches) != 4 || p.Matched != 4 {
		t.Fatalf("completed echo batches: %v, want 4", idsOf(p))
	}

	var ce *client.Error
	if _, err := env.Client.ListPage(ctx, client.ListQuery{Status: "done"}); !errors.As(err, &ce) || ce.Code != client.CodeInvalidRequest {
		t.Fatalf("status done: %v, want invalid_request", err)
	}
	if _, err := env.Client.ListPage(ctx, client.ListQuery{Before: &cur, After: &cur}); !errors.As(err, &ce) {
		t.Fatalf("both cursors: %v, want invalid_request", err)
	}
	if _, err := client.ParseListCursor("yesterday"); !errors.As(err, &ce) || ce.Code != client.CodeInvalidRequest {
		t.Fatalf("cursor yesterday: %v, want invalid_request", err)
	}
}

// ResultsPage reads a batch's failed results a page at a time, with their
// error, attempts and worker, and stops at MaxScan; Result and
// SampleResults read single items.
func TestResultsPageAndSample(t *testing.T) {
	t.Parallel()
	env := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 60
	failing := func(i int) bool { return i%6 == 0 } // 10 failures
	r := env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(n, 0, failing), Options: client.Options{MaxAttempts: 1}})
	agg := env.Wait(r.BatchID, time.Minute)
	if agg.Failed != 10 {
		t.Fatalf("%d failed, want 10", agg.Failed)
	}

	var failed []client.StoredResult
	var after uint64
	pages := 0
	for {
		p, err := env.Client.ResultsPage(ctx, r.BatchID, client.ResultsQuery{AfterSeq: after, Limit: 4, FailedOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		failed = append(failed, p.Results...)
		if p.End {
			break
		}
		if p.NextSeq <= after || pages > 10 {
			t.Fatalf("page %d: next seq %d after %d", pages, p.NextSeq, after)
		}
		after = p.NextSeq
	}
	if len(failed) != 10 || pages != 3 {
		t.Fatalf("%d failed results in %d pages, want 10 in 3", len(failed), pages)
	}
	seen := map[int]bool{}
	for _, f := range failed {
		if f.OK || !failing(f.Item) || f.Error != fmt.Sprintf("item %d failed", f.Item) || f.Attempts != 1 || f.Worker == "" || f.Seq == 0 || f.StoredAt.IsZero() || seen[f.Item] {
			t.Fatalf("failed result %+v", f)
		}
		seen[f.Item] = true
	}

	all, err := env.Client.ResultsPage(ctx, r.BatchID, client.ResultsQuery{Limit: 1000})
	if err != nil || len(all.Results) != n || !all.End || all.Scanned != n {
		t.Fatalf("all results: %d scanned %d end %v, %v; want %d", len(all.Results), all.Scanned, all.End, err, n)
	}
	short, err := env.Client.ResultsPage(ctx, r.BatchID, client.ResultsQuery{Limit: 1000, MaxScan: 7})
	if err != nil || len(short.Results) != 7 || short.End || short.Scanned != 7 || short.NextSeq != all.Results[6].Seq {
		t.Fatalf("results with MaxScan 7: %d scanned %d end %v next %d, %v", len(short.Results), short.Scanned, short.End, short.NextSeq, err)
	}

	one, err := env.Client.Result(ctx, r.BatchID, 6)
	if err != nil || one.OK || one.Error != "item 6 failed" || one.Item != 6 {
		t.Fatalf("item 6: %+v, %v", one, err)
	}
	var ce *client.Error
	if _, err := env.Client.Result(ctx, r.BatchID, n); !errors.As(err, &ce) || ce.Code != client.CodeNotFound {
		t.Fatalf("item %d: %v, want not_found", n, err)
	}
	if _, err := env.Client.Result(ctx, "no such batch", 0); !errors.As(err, &ce) || ce.Code != client.CodeInvalidRequest {
		t.Fatalf("bad batch id: %v, want invalid_request", err)
	}

	sample, err := env.Client.SampleResults(ctx, r.BatchID, n, 12)
	if err != nil || len(sample) != 12 {
		t.Fatalf("sample: %d, %v; want 12", len(sample), err)
	}
	for i, s := range sample {
		if s.Item != i*n/12 {
			t.Fatalf("sample %d is item %d, want %d", i, s.Item, i*n/12)
		}
	}

	got, err := env.Client.Aggregate(ctx, r.BatchID)
	if err != nil || got == nil || got.Failed != 10 || got.Status != client.StatusCompleted {
		t.Fatalf("aggregate: %+v, %v", got, err)
	}
	if none, err := env.Client.Aggregate(ctx, "not-a-batch"); none != nil || err != nil {
		t.Fatalf("aggregate of an unknown batch: %+v, %v; want nil", none, err)
	}
}

// Activities shows the work queued for an activity, SubscribeProgress the
// progress events of a running batch.
func TestActivitiesAndProgress(t *testing.T) {
	t.Parallel()
	env := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	acts, err := env.Client.Activities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range acts {
		names = append(names, a.Activity)
	}
	if !slices.Contains(names, "sleep") || !slices.Contains(names, "sha256") || !slices.IsSorted(names) {
		t.Fatalf("activities %v, want the built-in ones, sorted", names)
	}

	// A batch much longer than the window: work stays queued.
	r := env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(200, 20, nil), Options: client.Options{MaxInFlight: 100, ItemsPerMessage: 1}})
	events := make(chan client.Progress, 100)
	stop, err := env.Client.SubscribeProgress(r.BatchID, func(p client.Progress) {
		select {
		case events <- p:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	select {
	case p := <-events:
		if p.BatchID != r.BatchID || p.Total != 200 {
			t.Fatalf("progress event %+v", p)
		}
	case <-ctx.Done():
		t.Fatal("no progress event")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		acts, err := env.Client.Activities(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(acts, func(a client.ActivityQueue) bool { return a.Activity == "sleep" })
		if i >= 0 && acts[i].Queued > 0 && acts[i].Running > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep never had work queued and running: %+v", acts)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := env.Client.SubscribeProgress("a.b", func(client.Progress) {}); err == nil {
		t.Fatal("subscribed to the progress of a bad batch id")
	}
	env.Wait(r.BatchID, time.Minute)
}
