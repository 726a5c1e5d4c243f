package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/fanoutdev/fanout/client"
)

// progressView shows a batch's progress: a bar on a terminal, a plain line
// every few seconds otherwise (logs and pipes stay readable).
type progressView struct {
	mu       sync.Mutex
	bar      *progressbar.ProgressBar
	out      io.Writer
	lastLine time.Time
	last     int
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newProgressView(out io.Writer, total int, desc string) *progressView {
	v := &progressView{out: out}
	if isTerminal(out) {
		v.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(out),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("items"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }),
		)
	}
	return v
}

func (v *progressView) update(p client.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if p.Done <= v.last && v.last > 0 {
		return // events can arrive out of order, and the last one twice
	}
	v.last = p.Done
	if v.bar != nil {
		_ = v.bar.Set(p.Done)
		return
	}
	if time.Since(v.lastLine) >= 2*time.Second || p.Done == p.Total {
		v.lastLine = time.Now()
		fmt.Fprintf(v.out, "%s: %d/%d done (%.1f%%), %d failed, %.0f items/s\n",
			p.BatchID, p.Done, p.Total, p.Percent, p.Failed, p.RatePerSec)
	}
}

func (v *progressView) finish(agg *client.Aggregate) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bar != nil {
		_ = v.bar.Set(agg.Succeeded + agg.Failed)
		_ = v.bar.Finish()
	}
}

// printSummary writes an aggregate's counts and its first failures.
func printSummary(out io.Writer, agg *client.Aggregate) {
	fmt.Fprintf(out, "batch      %s\n", agg.BatchID)
	fmt.Fprintf(out, "activity   %s\n", agg.Activity)
	fmt.Fprintf(out, "status     %s\n", agg.Status)
	if agg.Reason != "" {
		fmt.Fprintf(out, "reason     %s\n", agg.Reason)
	}
	fmt.Fprintf(out, "total      %d\n", agg.Total)
	fmt.Fprintf(out, "succeeded  %d\n", agg.Succeeded)
	fmt.Fprintf(out, "failed     %d\n", agg.Failed)
	if agg.NotRun > 0 {
		fmt.Fprintf(out, "not run    %d\n", agg.NotRun)
	}
	fmt.Fprintf(out, "duration   %s\n", time.Duration(agg.DurationMS*float64(time.Millisecond)).Round(time.Millisecond))
	if agg.DurationMS > 0 {
		fmt.Fprintf(out, "rate       %.0f items/s\n", float64(agg.Total)/(agg.DurationMS/1000))
	}
	shown := 0
	for _, r := range agg.Results {
		if !r.OK && !r.NotRun && shown < 5 {
			if shown == 0 {
				fmt.Fprintln(out, "failures (first 5):")
			}
			fmt.Fprintf(out, "  item %d: %s\n", r.Item, r.Error)
			shown++
		}
	}
}
