package ui

import (
	"context"
	"fmt"
	"html/template"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/fanoutdev/fanout/client"
)

// sampleSize is how many items' results the charts read: a sample spread
// evenly over the batch, so that a chart costs the same for 100 items and
// for 1,000,000.
const sampleSize = 400

// Chart geometry, in SVG user units.
const (
	chartW, chartH         = 560, 180
	padL, padR, padT, padB = 72, 12, 14, 30
	bars                   = 30
)

// charts draws a batch's throughput over time and its histogram of item
// durations from a sample of its results, as inline SVG. Everything drawn
// is a number or a fixed word: nothing read from the batch reaches the
// markup as text.
func (s *Server) charts(ctx context.Context, p *client.Progress) template.HTML {
	sample, err := s.c.SampleResults(ctx, p.BatchID, p.Total, sampleSize)
	if err != nil {
		return template.HTML(`<p class="muted">The charts could not be drawn: the results could not be read.</p>`)
	}
	if len(sample) == 0 {
		return template.HTML(`<p class="muted">No results yet: the charts appear with the first ones.</p>`)
	}
	var b strings.Builder
	b.WriteString(`<figure><figcaption>Throughput (items/s), estimated from `)
	fmt.Fprintf(&b, "%d sampled results", len(sample))
	b.WriteString(`</figcaption>`)
	throughput(&b, sample, p.Done)
	b.WriteString(`</figure><figure><figcaption>Item durations (ms), `)
	fmt.Fprintf(&b, "%d sampled results", len(sample))
	b.WriteString(`</figcaption>`)
	durations(&b, sample)
	b.WriteString(`</figure>`)
	return template.HTML(b.String())
}

// throughput draws items finished per second over the batch's time: the
// sample's finishing times in buckets, scaled to the items done.
func throughput(b *strings.Builder, sample []client.StoredResult, done int) {
	first, last := sample[0].StoredAt, sample[0].StoredAt
	for _, r := range sample {
		if r.StoredAt.Before(first) {
			first = r.StoredAt
		}
		if r.StoredAt.After(last) {
			last = r.StoredAt
		}
	}
	span := max(last.Sub(first), time.Second)
	counts := make([]float64, bars)
	for _, r := range sample {
		i := min(int(float64(r.StoredAt.Sub(first))/float64(span)*bars), bars-1)
		counts[i]++
	}
	scale := float64(max(done, len(sample))) / float64(len(sample)) / (span.Seconds() / bars)
	for i := range counts {
		counts[i] *= scale
	}
	barChart(b, counts, rate(slices.Max(counts)), "0", duration(float64(span.Milliseconds())), "throughput")
}

// durations draws the histogram of the sample's item durations.
func durations(b *strings.Builder, sample []client.StoredResult) {
	ds := make([]float64, len(sample))
	for i, r := range sample {
		ds[i] = r.DurationMS
	}
	slices.Sort(ds)
	// The buckets span the fastest item to the 99th percentile, so that
	// one slow item does not squash the rest into one bar; slower ones go
	// in the last.
	low := ds[0]
	top := max(ds[min(len(ds)-1, len(ds)*99/100)], low+1)
	counts := make([]float64, bars)
	for _, d := range ds {
		counts[min(int((d-low)/(top-low)*bars), bars-1)]++
	}
	p50, p90 := ds[len(ds)/2], ds[min(len(ds)-1, len(ds)*9/10)]
	barChart(b, counts, fmt.Sprintf("%.0f items", slices.Max(counts)), duration(low), duration(top)+"+", "durations")
	fmt.Fprintf(b, `<p class="muted">p50 %s · p90 %s · max %s</p>`, duration(p50), duration(p90), duration(ds[len(ds)-1]))
}

// barChart draws bars with a y label at the top and x labels at both ends.
func barChart(b *strings.Builder, values []float64, yTop, xStart, xEnd, class string) {
	peak := slices.Max(values)
	if peak <= 0 || math.IsNaN(peak) {
		peak = 1
	}
	fmt.Fprintf(b, `<svg class="chart %s" viewBox="0 0 %d %d" width="%d" height="%d" role="img" xmlns="http://www.w3.org/2000/svg">`, class, chartW, chartH, chartW, chartH)
	plotW, plotH := float64(chartW-padL-padR), float64(chartH-padT-padB)
	fmt.Fprintf(b, `<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, chartH-padB, chartW-padR, chartH-padB)
	fmt.Fprintf(b, `<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, padT, padL, chartH-padB)
	w := plotW / float64(len(values))
	for i, v := range values {
		h := v / peak * plotH
		fmt.Fprintf(b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`, float64(padL)+float64(i)*w+1, float64(chartH-padB)-h, max(w-2, 1), h)
	}
	fmt.Fprintf(b, `<text class="label" x="%d" y="%d" text-anchor="end">%s</text>`, padL-4, padT+10, template.HTMLEscapeString(yTop))
	fmt.Fprintf(b, `<text class="label" x="%d" y="%d">%s</text>`, padL, chartH-8, template.HTMLEscapeString(xStart))
	fmt.Fprintf(b, `<text class="label" x="%d" y="%d" text-anchor="end">%s</text>`, chartW-padR, chartH-8, template.HTMLEscapeString(xEnd))
	b.WriteString(`</svg>`)
}
