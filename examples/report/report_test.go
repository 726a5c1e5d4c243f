package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/examples/report/report"
	"github.com/fanoutdev/fanout/internal/embedded"
	"github.com/fanoutdev/fanout/worker"
)

// devStack starts what `fanout dev` runs (real embedded NATS, a
// coordinator, a built-in worker) on a free port, stopped with the test.
func devStack(t *testing.T) *embedded.Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stack, err := embedded.StartStack(ctx, embedded.StackConfig{DataDir: t.TempDir(), Port: 0, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stack.Stop(context.Background()) })
	return stack
}

// The example as `go run ./examples/report` runs it: the sections run as
// items, the reduce step combines them, and the printed report holds every
// region's section, in item order, with the figures the section computes.
func TestReport(t *testing.T) {
	t.Parallel()
	stack := devStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var out bytes.Buffer
	res, err := run(ctx, []string{"-server", stack.URL, "-days", "63"}, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	regions := report.Regions(63)
	agg := res.Aggregate
	if agg.Status != client.StatusCompleted || agg.Total != len(regions) || agg.Succeeded != len(regions) || agg.Failed != 0 {
		t.Fatalf("aggregate %s %d/%d succeeded, %d failed", agg.Status, agg.Succeeded, agg.Total, agg.Failed)
	}
	rep := res.Report
	if rep.Sections != len(regions) || len(rep.Missing) != 0 || rep.Title != report.Title {
		t.Fatalf("report: %d sections, missing %v, title %q", rep.Sections, rep.Missing, rep.Title)
	}
	printed := out.String()
	if !strings.Contains(printed, rep.Markdown) || !strings.HasPrefix(rep.Markdown, "# "+report.Title+"\n") {
		t.Fatalf("printed output does not hold the report's Markdown")
	}
	// Each section appears once, in item order, with its own figures; the
	// summary table has a row per region in the same order.
	grand := 0
	lastSection, lastRow := 0, 0
	for i, r := range regions {
		want, err := report.Render(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		var got report.Section
		if err := json.Unmarshal(agg.Results[i].Output, &got); err != nil || got.Region != r.Name || got.Stats.Total != want.Stats.Total {
			t.Fatalf("item %d: %s (%v), want region %s with total %d", i, agg.Results[i].Output, err, r.Name, want.Stats.Total)
		}
		grand += want.Stats.Total
		at := strings.Index(rep.Markdown, want.Markdown)
		if at < 0 || strings.Count(rep.Markdown, "## "+r.Name+"\n") != 1 {
			t.Fatalf("section %s missing or repeated in the report", r.Name)
		}
		if at < lastSection {
			t.Errorf("section %s is out of item order", r.Name)
		}
		lastSection = at
		row := strings.Index(rep.Markdown, "| "+r.Name+" | ")
		if row < lastRow || row > lastSection {
			t.Errorf("summary row of %s out of order or after the sections", r.Name)
		}
		lastRow = row
	}
	if !strings.Contains(rep.Markdown, "| **All regions** | **"+commas(grand)+"** |") {
		t.Errorf("report lacks the grand total %d", grand)
	}
	if !strings.Contains(rep.Markdown, agg.BatchID) {
		t.Errorf("report does not name its batch")
	}
}

// A section that fails leaves a note in its place; the report still
// completes. And when the aggregate carries results_ref instead of results
// (a batch too large for one message), combine reads them from the Object
// Store. Both run the handlers directly on a real server's store.
func TestCombine(t *testing.T) {
	t.Parallel()
	stack := devStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := nats.Connect(stack.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	regions := report.Regions(14)
	results := make([]client.ItemResult, len(regions))
	for i, r := range regions {
		s, err := report.Render(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := json.Marshal(s)
		results[i] = client.ItemResult{Item: i, OK: true, Output: out}
	}
	results[2] = client.ItemResult{Item: 2, Error: "database unreachable"}

	reduceCtx := worker.WithInfo(ctx, worker.Info{BatchID: "b1", Step: "reduce"})
	inline, err := report.Combine(reduceCtx, js, client.Aggregate{BatchID: "b1", Status: client.StatusRunning, Total: len(results), Results: results})
	if err != nil {
		t.Fatal(err)
	}
	if inline.Sections != len(regions)-1 || len(inline.Missing) != 1 || inline.Missing[0] != 2 {
		t.Fatalf("report with a failed section: %d sections, missing %v", inline.Sections, inline.Missing)
	}
	if !strings.Contains(inline.Markdown, "## Section 3 is missing\n\n_database unreachable_") || strings.Contains(inline.Markdown, "## "+regions[2].Name+"\n") {
		t.Errorf("failed section not noted in its place:\n%s", inline.Markdown)
	}

	// The same results as a JSON Lines object, referenced.
	var lines bytes.Buffer
	for _, r := range results {
		b, _ := json.Marshal(r)
		lines.Write(append(b, '\n'))
	}
	store, err := js.ObjectStore(ctx, "FANOUT_BLOBS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := store.PutBytes(ctx, "reduce-input/b1.jsonl", lines.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var ref client.Aggregate
	wire := fmt.Sprintf(`{"batch_id":"b1","status":"running","total":%d,"results_ref":{"bucket":"FANOUT_BLOBS","name":"reduce-input/b1.jsonl","size":%d}}`, len(results), info.Size)
	if err := json.Unmarshal([]byte(wire), &ref); err != nil {
		t.Fatal(err)
	}
	byRef, err := report.Combine(reduceCtx, js, ref)
	if err != nil {
		t.Fatal(err)
	}
	if byRef.Markdown != inline.Markdown {
		t.Errorf("report from results_ref differs from the inline one:\n%s\n---\n%s", byRef.Markdown, inline.Markdown)
	}

	// Run as an item instead of a reduce step, combine refuses.
	if _, err := report.Combine(worker.WithInfo(ctx, worker.Info{Step: ""}), js, client.Aggregate{}); err == nil {
		t.Errorf("combine ran outside a reduce step")
	}
}

func commas(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
