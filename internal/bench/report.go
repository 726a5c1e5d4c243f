package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The project's targets, shown next to the measured ratios: throughput at
// least 0.8 of raw JetStream, a 10-item batch's p50 at most 3.5 times raw
// JetStream's, and a coordinator's memory flat in the batch size.
const (
	TargetRatio      = 0.8
	TargetLatencyX   = 3.5
	targetRSSAt1MStr = "64 MiB"
)

// WriteTable prints the report as a table.
func (r *Report) WriteTable(w io.Writer) error {
	m, s := r.Machine, r.Setup
	fmt.Fprintf(w, "fanout bench: %d CPUs (%s), %s/%s, %s, nats-server %s, nats.go %s\n",
		m.CPUs, orDash(m.CPUModel), m.OS, m.Arch, m.Go, m.NATSServer, m.NATSClient)
	fmt.Fprintf(w, "setup: %s storage, %d workers (fanout: concurrency %d each), %d-byte items, max_in_flight %s, median of %d runs\n",
		s.Storage, s.Workers, s.Concurrency, s.ItemSize, orDefault(s.MaxInFlight), s.Runs)
	fmt.Fprintf(w, "durability: %s\n", s.Durability)
	if m.LoadBefore != "" {
		fmt.Fprintf(w, "load average: %s before, %s after\n", m.LoadBefore, orDash(m.LoadAfter))
	}
	fmt.Fprintln(w)

	var t table
	t.add("measurement", "N", "value", "unit", "CPU µs/item", "runs")
	for _, row := range r.Rows {
		n := count(row.N)
		t.add("(a) raw JetStream round trip", n, count(int(row.Raw)), "items/s", f1(row.RawCPU), runs(row.RawRuns, "%.0f"))
		if row.RawGuard > 0 {
			t.add("    raw + per-item result guard", n, count(int(row.RawGuard)), "items/s", f1(row.RawGuardCPU), runs(row.RawGuardRuns, "%.0f"))
		}
		t.add("(b) fanout end to end", n, count(int(row.Fanout)), "items/s", f1(row.FanoutCPU), runs(row.FanoutRuns, "%.0f"))
		t.add(fmt.Sprintf("(c) b ÷ a  (target ≥ %.1f)", TargetRatio), n, fmt.Sprintf("%.2f", row.Ratio), "", fmt.Sprintf("%.2f", row.CPURatio), runs(row.RunRatios, "%.2f"))
		for i, ph := range row.Phases {
			t.add(fmt.Sprintf("    run %d: submit reply/1st/last result/aggregate", i+1), n,
				fmt.Sprintf("%.0f/%.0f/%.0f/%.0f", ph.SubmitReplyMS, ph.FirstResultMS, ph.LastResultMS, ph.AggregateMS), "ms", "", "")
		}
	}
	if l := r.Latency; l.Batches > 0 {
		k := strconv.Itoa(l.Items)
		b := fmt.Sprintf("%d×%s", l.Batches, k)
		perItem := func(cpuMS float64) string { return f1(cpuMS * 1000 / float64(l.Items)) }
		t.add("(d) fanout "+k+"-item batch p50", b, fmt.Sprintf("%.2f", l.FanoutP50), "ms", perItem(l.FanoutCPUMS), "")
		t.add("(d) fanout "+k+"-item batch p99", b, fmt.Sprintf("%.2f", l.FanoutP99), "ms", "", "")
		t.add("    of which until the submit reply, p50", b, fmt.Sprintf("%.2f", l.FanoutSubmitP50), "ms", "", "")
		t.add("(d) raw "+k+"-item round trip p50", b, fmt.Sprintf("%.2f", l.RawP50), "ms", perItem(l.RawCPUMS), "")
		t.add("(d) raw "+k+"-item round trip p99", b, fmt.Sprintf("%.2f", l.RawP99), "ms", "", "")
		cpuRatio := ""
		if l.RawCPUMS > 0 {
			cpuRatio = fmt.Sprintf("%.1f", l.FanoutCPUMS/l.RawCPUMS)
		}
		t.add(fmt.Sprintf("(d) fanout p50 ÷ raw p50  (target ≤ %.1f)", TargetLatencyX), "", fmt.Sprintf("%.1f", l.RatioP50), "×", cpuRatio, "")
	}
	b := r.Batching
	label, n, val, unit := "(e) fanout with items_per_message", "", "n/a", ""
	if b.ItemsPerMessage > 0 {
		label += "=" + strconv.Itoa(b.ItemsPerMessage)
	}
	if b.Measured {
		n, val, unit = count(b.N), count(int(b.ItemsPerSec)), "items/s"
	}
	t.add(label, n, val, unit, "", "")
	for _, mr := range r.Memory {
		n := count(mr.N)
		if !mr.Measured {
			t.add("(f) coordinator peak RSS / heap", n, "n/a", "", "", "")
			continue
		}
		heap, live := "n/a", "n/a"
		if mr.PeakHeap > 0 {
			heap, live = mibNum(mr.PeakHeap), mibNum(mr.PeakLiveHeap)
		}
		t.add("(f) coordinator peak RSS (VmHWM)", n, mibNum(mr.PeakRSS), "MiB", "", "")
		t.add("    coordinator RSS before the batch", n, mibNum(mr.BaselineRSS), "MiB", "", "")
		t.add("(f) coordinator peak heap (sampled 5 ms)", n, heap, "MiB", "", "")
		t.add("    coordinator peak live heap (after GC)", n, live, "MiB", "", "")
	}
	if err := t.write(w); err != nil {
		return err
	}
	var notes []string
	if len(r.Rows) > 0 {
		notes = append(notes, "CPU µs/item is the whole process's CPU time (server included) per item; on the (c) line it is raw ÷ fanout, on the (d) ratio line fanout ÷ raw (a small batch's latency follows its CPU on two cores)")
	}
	if r.Latency.Batches > 0 {
		notes = append(notes, fmt.Sprintf("(d): raw and fanout take turns, %d batches each at a time, so that the machine's drift hits both", latencyBlock))
	}
	if !b.Measured && b.Reason != "" {
		notes = append(notes, "(e) "+b.Reason)
	}
	for _, mr := range r.Memory {
		if !mr.Measured {
			notes = append(notes, fmt.Sprintf("(f) %s items: %s", count(mr.N), mr.Reason))
		}
	}
	if len(r.Memory) > 0 {
		notes = append(notes, "(f) target: coordinator RSS at 1,000,000 items ≤ "+targetRSSAt1MStr+" and not growing with N")
	}
	notes = append(notes, r.Notes...)
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, "note: "+n)
		}
	}
	return nil
}

// table lines up columns: the first left-aligned, the others right-aligned.
type table struct{ rows [][]string }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) error {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		if _, err := fmt.Fprintln(w, strings.TrimRight(b.String(), " ")); err != nil {
			return err
		}
	}
	return nil
}

func f1(v float64) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// count formats n with thousands separators.
func count(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func runs(v []float64, format string) string {
	if len(v) < 2 {
		return ""
	}
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " ")
}

func mibNum(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orDefault(n int) string {
	if n == 0 {
		return "default"
	}
	return strconv.Itoa(n)
}
