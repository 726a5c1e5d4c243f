package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fanoutdev/fanout/client"
)

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer) *table {
	return &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

func (t *table) row(cells ...string) { fmt.Fprintln(t.tw, strings.Join(cells, "\t")) }

func (t *table) flush() { _ = t.tw.Flush() }

func localTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// ago says how long before now t was, to the second.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

func percent(done, total int) string {
	if total == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(done)*100/float64(total), 'f', 1, 64) + "%"
}

// truncate shortens s to n runes, marking the cut.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// printAggregate writes a finished batch as a two-column table, then its
// first failures.
func printAggregate(w io.Writer, agg *client.Aggregate) {
	t := newTable(w)
	t.row("batch", agg.BatchID)
	t.row("activity", agg.Activity)
	t.row("status", string(agg.Status))
	if agg.Reason != "" {
		t.row("reason", agg.Reason)
	}
	t.row("total", strconv.Itoa(agg.Total))
	t.row("succeeded", strconv.Itoa(agg.Succeeded))
	t.row("failed", strconv.Itoa(agg.Failed))
	if agg.NotRun > 0 {
		t.row("not run", strconv.Itoa(agg.NotRun))
	}
	t.row("started", localTime(agg.StartedAt))
	t.row("finished", localTime(agg.FinishedAt))
	d := time.Duration(agg.DurationMS * float64(time.Millisecond))
	t.row("duration", d.Round(time.Millisecond).String())
	if r := aggregateRate(agg); r > 0 {
		t.row("rate", rateText(r))
	}
	if len(agg.Output) > 0 {
		t.row("output", truncate(string(agg.Output), 200))
	}
	if agg.RedriveOf != nil {
		t.row("redrive of", agg.RedriveOf.BatchID+" (items "+itemList(agg.RedriveOf.Items, 20)+")")
	}
	t.flush()
	shown := 0
	for _, r := range agg.Results {
		if r.OK || r.NotRun {
			continue
		}
		if shown == 0 {
			fmt.Fprintln(w, "failures (first 5):")
		}
		fmt.Fprintf(w, "  item %d%s: %s\n", r.Item, originalItem(agg, r.Item), truncate(firstLine(r.Error), 200))
		if shown++; shown == 5 {
			break
		}
	}
	if agg.Failed > 0 || agg.NotRun > 0 {
		fmt.Fprintf(w, "all of them: fanout results %s --failed\n", agg.BatchID)
	}
}

// itemList writes item numbers, at most n of them.
func itemList(items []int, n int) string {
	parts := make([]string, 0, min(len(items), n)+1)
	for i, it := range items {
		if i == n {
			parts = append(parts, fmt.Sprintf("… %d more", len(items)-n))
			break
		}
		parts = append(parts, strconv.Itoa(it))
	}
	return strings.Join(parts, ", ")
}

// originalItem is " (item N of BATCH)" for an item of a redriven batch.
func originalItem(agg *client.Aggregate, item int) string {
	if agg.RedriveOf == nil || item < 0 || item >= len(agg.RedriveOf.Items) {
		return ""
	}
	return fmt.Sprintf(" (item %d of %s)", agg.RedriveOf.Items[item], agg.RedriveOf.BatchID)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// printProgress writes a batch's state as a two-column table.
func printProgress(w io.Writer, p *client.Progress) {
	t := newTable(w)
	t.row("batch", p.BatchID)
	t.row("activity", p.Activity)
	t.row("status", string(p.Status))
	if p.Reason != "" {
		t.row("reason", p.Reason)
	}
	t.row("done", fmt.Sprintf("%d/%d (%s)", p.Done, p.Total, percent(p.Done, p.Total)))
	t.row("succeeded", strconv.Itoa(p.Succeeded))
	t.row("failed", strconv.Itoa(p.Failed))
	if !p.Status.Final() {
		t.row("in flight", strconv.Itoa(p.InFlight))
	}
	if p.Paused {
		t.row("paused", "yes: no new work goes out until fanout resume "+p.BatchID)
	}
	if p.RatePerSec > 0 {
		t.row("rate", rateText(p.RatePerSec))
	}
	if p.ETAMS > 0 {
		t.row("eta", (time.Duration(p.ETAMS) * time.Millisecond).Round(time.Second).String())
	}
	t.row("created", localTime(p.CreatedAt))
	if !p.FinishedAt.IsZero() {
		t.row("finished", localTime(p.FinishedAt))
		t.row("duration", p.FinishedAt.Sub(p.CreatedAt).Round(time.Millisecond).String())
	}
	t.row("updated", localTime(p.UpdatedAt))
	if p.Options != nil {
		t.row("options", formatOptions(p.Options))
	}
	t.flush()
}

// formatOptions writes options as the flags of fanout submit would set them;
// "auto" for the options the coordinator chooses when they are left out.
func formatOptions(o *client.Options) string {
	var parts []string
	add := func(name, v string) { parts = append(parts, name+"="+v) }
	orAuto := func(n int) string {
		if n > 0 {
			return strconv.Itoa(n)
		}
		return "auto"
	}
	add("max_in_flight", orAuto(o.MaxInFlight))
	add("items_per_message", orAuto(o.ItemsPerMessage))
	if o.MaxAttempts > 0 {
		add("max_attempts", strconv.Itoa(o.MaxAttempts))
	}
	if len(o.Backoff) > 0 {
		ds := make([]string, len(o.Backoff))
		for i, d := range o.Backoff {
			ds[i] = d.Std().String()
		}
		add("backoff", strings.Join(ds, ","))
	}
	if o.ItemTimeout > 0 {
		add("item_timeout", o.ItemTimeout.Std().String())
	}
	if o.Timeout > 0 {
		add("timeout", o.Timeout.Std().String())
	}
	if o.FailurePolicy != "" {
		add("failure_policy", string(o.FailurePolicy))
	}
	if o.ToleratedFailures != nil {
		add("tolerated_failures", strconv.Itoa(*o.ToleratedFailures))
	}
	if o.ToleratedFailurePercent != nil {
		add("tolerated_failure_percent", strconv.FormatFloat(*o.ToleratedFailurePercent, 'f', -1, 64))
	}
	return strings.Join(parts, " ")
}
