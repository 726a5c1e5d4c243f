// Package report is the worker side of the report example: "report
// generation: sections in parallel, then combine". Activity "section"
// renders one region's section of a sales report; activity "combine", run
// as the batch's reduce step, assembles the sections into one Markdown
// report from the aggregate's results, in item order.
package report

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/worker"
)

// Activity names.
const (
	SectionActivity = "section"
	CombineActivity = "combine"
)

// Region is one section's input.
type Region struct {
	Name string `json:"name"`
	// Days of sales data to generate and summarise.
	Days int `json:"days"`
	// Seed makes the region's generated data reproducible.
	Seed uint64 `json:"seed"`
}

// Regions are the sample report's sections, in report order.
func Regions(days int) []Region {
	names := []string{"North", "South", "East", "West", "Central"}
	out := make([]Region, len(names))
	for i, n := range names {
		out[i] = Region{Name: n, Days: days, Seed: uint64(i + 1)}
	}
	return out
}

// Stats summarise a region's daily sales.
type Stats struct {
	Days    int     `json:"days"`
	Total   int     `json:"total"`
	Mean    float64 `json:"mean"`
	Median  float64 `json:"median"`
	Min     int     `json:"min"`
	Max     int     `json:"max"`
	P90     int     `json:"p90"`
	BestDay int     `json:"best_day"` // 1-based
	// Growth is the last 30 days' sales over the first 30 days', in
	// percent (0 when there are fewer than 60 days).
	Growth float64 `json:"growth"`
	// Weekly are the totals of each full 7-day week.
	Weekly []int `json:"weekly"`
}

// Section is the output of activity "section".
type Section struct {
	Region   string `json:"region"`
	Stats    Stats  `json:"stats"`
	Markdown string `json:"markdown"`
}

// Sales generates a region's daily sales: a level, a trend, a weekly rhythm
// and noise, all drawn from the region's seed.
func Sales(r Region) []int {
	rng := rand.New(rand.NewPCG(r.Seed, 0x5eed))
	level := 200 + rng.Float64()*300
	trend := (rng.Float64() - 0.4) * 2 // per day
	out := make([]int, r.Days)
	for d := range out {
		weekly := 1.0
		if d%7 >= 5 {
			weekly = 0.6 // weekends are quieter
		}
		v := (level + trend*float64(d)) * weekly * (0.85 + 0.3*rng.Float64())
		out[d] = max(int(math.Round(v)), 0)
	}
	return out
}

// Summarise computes a region's statistics.
func Summarise(sales []int) Stats {
	s := Stats{Days: len(sales)}
	if len(sales) == 0 {
		return s
	}
	sorted := slices.Clone(sales)
	slices.Sort(sorted)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	s.P90 = sorted[(len(sorted)*9+9)/10-1]
	if n := len(sorted); n%2 == 1 {
		s.Median = float64(sorted[n/2])
	} else {
		s.Median = float64(sorted[n/2-1]+sorted[n/2]) / 2
	}
	best := 0
	for d, v := range sales {
		s.Total += v
		if v > sales[best] {
			best = d
		}
	}
	s.BestDay = best + 1
	for w := 0; w+7 <= len(sales); w += 7 {
		s.Weekly = append(s.Weekly, sum(sales[w:w+7]))
	}
	s.Mean = float64(s.Total) / float64(len(sales))
	if len(sales) >= 60 {
		first, last := sum(sales[:30]), sum(sales[len(sales)-30:])
		if first > 0 {
			s.Growth = math.Round(float64(last-first)*1000/float64(first)) / 10
		}
	}
	return s
}

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
}

// Render is the activity "section": one region's statistics and its part
// of the report.
func Render(_ context.Context, r Region) (Section, error) {
	if strings.TrimSpace(r.Name) == "" {
		return Section{}, worker.Permanent(errors.New("region: a name is required"))
	}
	if r.Days < 1 || r.Days > 3660 {
		return Section{}, worker.Permanent(fmt.Errorf("region %s: days %d must be 1 to 3660", r.Name, r.Days))
	}
	st := Summarise(Sales(r))
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n", r.Name)
	fmt.Fprintf(&b, "- Sales: **%s** over %d days, %.1f a day on average (median %.1f)\n", thousands(st.Total), st.Days, st.Mean, st.Median)
	fmt.Fprintf(&b, "- Range: %d to %d a day; 9 days in 10 stay at or under %d\n", st.Min, st.Max, st.P90)
	fmt.Fprintf(&b, "- Best day: day %d (%d)\n", st.BestDay, st.Max)
	if st.Days >= 60 {
		fmt.Fprintf(&b, "- Trend: %+.1f%% (last 30 days against the first 30)\n", st.Growth)
	}
	if len(st.Weekly) > 1 {
		fmt.Fprintf(&b, "- Weekly sales: `%s`\n", sparkline(st.Weekly))
	}
	return Section{Region: r.Name, Stats: st, Markdown: b.String()}, nil
}

// Report is the output of activity "combine": the batch's output.
type Report struct {
	Title    string `json:"title"`
	Markdown string `json:"markdown"`
	// Sections is how many sections made it in; Missing lists the items
	// whose section failed.
	Sections int   `json:"sections"`
	Missing  []int `json:"missing,omitempty"`
}

// Title heads the report.
const Title = "Sales report"

// Combine is the activity "combine", the batch's reduce step: its input is
// the batch's aggregate (status still "running"), results in item order.
// A failed section leaves a note in its place instead of failing the
// report. js reads the results from the Object Store when the aggregate
// was too large for one message and carries results_ref instead.
func Combine(ctx context.Context, js jetstream.JetStream, agg client.Aggregate) (Report, error) {
	if info, ok := worker.InfoFrom(ctx); ok && info.Step != "reduce" {
		return Report{}, worker.Permanent(fmt.Errorf("combine runs as a batch's reduce step, not as %q", info.Step))
	}
	results, err := Results(ctx, js, &agg)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Title: Title}
	var summary, body strings.Builder
	grand := 0
	summary.WriteString("| Region | Sales | Daily mean | Best day | Trend |\n|---|---:|---:|---:|---:|\n")
	for _, r := range results {
		var s Section
		if !r.OK || json.Unmarshal(r.Output, &s) != nil {
			rep.Missing = append(rep.Missing, r.Item)
			why := r.Error
			if r.OK {
				why = "its output is not a section"
			}
			fmt.Fprintf(&body, "## Section %d is missing\n\n_%s_\n\n", r.Item+1, why)
			continue
		}
		rep.Sections++
		grand += s.Stats.Total
		fmt.Fprintf(&summary, "| %s | %s | %.1f | day %d | %+.1f%% |\n", s.Region, thousands(s.Stats.Total), s.Stats.Mean, s.Stats.BestDay, s.Stats.Growth)
		body.WriteString(s.Markdown)
		body.WriteString("\n")
	}
	fmt.Fprintf(&summary, "| **All regions** | **%s** | | | |\n", thousands(grand))
	var md strings.Builder
	fmt.Fprintf(&md, "# %s\n\n", Title)
	fmt.Fprintf(&md, "%d sections of %d, rendered in parallel by batch `%s` and combined in item order.\n\n", rep.Sections, len(results), agg.BatchID)
	md.WriteString(summary.String())
	md.WriteString("\n")
	md.WriteString(body.String())
	rep.Markdown = strings.TrimRight(md.String(), "\n") + "\n"
	return rep, nil
}

// Results returns an aggregate's per-item results in item order: inline,
// or read from the JSON Lines object its results_ref names.
func Results(ctx context.Context, js jetstream.JetStream, agg *client.Aggregate) ([]client.ItemResult, error) {
	ref := agg.ResultsRef
	if ref == nil {
		return agg.Results, nil
	}
	store, err := js.ObjectStore(ctx, ref.Bucket)
	if err != nil {
		return nil, fmt.Errorf("results bucket %s: %w", ref.Bucket, err)
	}
	data, err := store.GetBytes(ctx, ref.Name)
	if err != nil {
		return nil, fmt.Errorf("results object %s: %w", ref.Name, err)
	}
	out := make([]client.ItemResult, 0, agg.Total)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r client.ItemResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, worker.Permanent(fmt.Errorf("results object %s line %d: %w", ref.Name, len(out)+1, err))
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// Register adds "section" and "combine" to w.
func Register(w *worker.Worker, js jetstream.JetStream) {
	worker.Handle(w, SectionActivity, Render)
	worker.Handle(w, CombineActivity, func(ctx context.Context, agg client.Aggregate) (Report, error) {
		return Combine(ctx, js, agg)
	})
}

// sparkline draws values as a row of block characters.
func sparkline(vals []int) string {
	if len(vals) == 0 {
		return ""
	}
	bars := []rune("▁▂▃▄▅▆▇█")
	lo, hi := slices.Min(vals), slices.Max(vals)
	var b strings.Builder
	for _, v := range vals {
		i := 0
		if hi > lo {
			i = (v - lo) * (len(bars) - 1) / (hi - lo)
		}
		b.WriteRune(bars[i])
	}
	return b.String()
}

// thousands formats n with comma separators.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
