package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/fanoutdev/fanout/client"
)

// progressView shows a batch's progress: a bar on a terminal, a plain line
// every few seconds otherwise (logs and pipes stay readable). Its rate and
// ETA are the coordinator's (Progress.RatePerSec, ETAMS: counted from the
// batch's acceptance), never the bar's own, which would count from when
// the bar opened; a finished batch shows the rate of its aggregate
// (aggregateRate), as the summary does.
type progressView struct {
	mu       sync.Mutex
	bar      *progressbar.ProgressBar
	out      io.Writer
	desc     string // the activity
	note     string // a warning shown with the progress ("no live worker ...")
	lastLine time.Time
	last     client.Progress
	seen     bool
	drawn    bool // the bar has been drawn: the cursor is on its line
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newProgressView makes a view of a batch of total items; bar: draw a bar
// (on a terminal) rather than plain lines.
func newProgressView(out io.Writer, total int, desc string, bar bool) *progressView {
	v := &progressView{out: out, desc: desc}
	if bar {
		v.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(out),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionShowCount(),
			progressbar.OptionSetElapsedTime(false),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }),
		)
	}
	return v
}

// rateText is a rate as the CLI writes it everywhere.
func rateText(perSec float64) string {
	return strconv.FormatFloat(perSec, 'f', 0, 64) + " items/s"
}

// aggregateRate is a finished batch's rate: items counted over its
// duration, from acceptance to the final decision, as the coordinator's
// rate_per_sec is at the end.
func aggregateRate(agg *client.Aggregate) float64 {
	if agg.DurationMS <= 0 {
		return 0
	}
	return float64(agg.Succeeded+agg.Failed) / (agg.DurationMS / 1000)
}

// describe is the text beside the bar: activity, rate, ETA, and the note.
func (v *progressView) describe(p client.Progress) string {
	s := v.desc
	if p.RatePerSec > 0 {
		s += "  " + rateText(p.RatePerSec)
	}
	if p.ETAMS > 0 {
		s += "  eta " + (time.Duration(p.ETAMS) * time.Millisecond).Round(time.Second).String()
	}
	if p.Paused {
		s += "  paused (fanout resume " + p.BatchID + ")"
	}
	if v.note != "" {
		s += "  " + v.note
	}
	return s
}

func (v *progressView) update(p client.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen && p.Done < v.last.Done {
		return // events can arrive out of order
	}
	v.last, v.seen = p, true
	v.show(false)
}

// setNote sets (or with "" clears) the warning shown with the progress.
func (v *progressView) setNote(note string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if note == v.note {
		return
	}
	v.note = note
	if v.seen {
		v.show(true)
	}
}

func (v *progressView) show(force bool) {
	p := v.last
	if v.bar != nil {
		v.bar.Describe(v.describe(p))
		_ = v.bar.Set(p.Done)
		v.drawn = true
		return
	}
	if force || time.Since(v.lastLine) >= 2*time.Second || p.Done == p.Total {
		v.lastLine = time.Now()
		line := fmt.Sprintf("%s: %d/%d done (%.1f%%), %d failed, %s", p.BatchID, p.Done, p.Total, p.Percent, p.Failed, rateText(p.RatePerSec))
		if p.Paused {
			line += ", paused"
		}
		if v.note != "" {
			line += "; " + v.note
		}
		fmt.Fprintln(v.out, line)
	}
}

func (v *progressView) finish(agg *client.Aggregate) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bar != nil {
		v.note = ""
		v.bar.Describe(v.desc + "  " + rateText(aggregateRate(agg)))
		_ = v.bar.Set(agg.Succeeded + agg.Failed)
		_ = v.bar.Finish()
	}
}

// abandon leaves the bar's line, so that what follows starts on a line of
// its own.
func (v *progressView) abandon() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bar != nil && v.drawn {
		fmt.Fprintln(v.out)
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
	if r := aggregateRate(agg); r > 0 {
		fmt.Fprintf(out, "rate       %s\n", rateText(r))
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
