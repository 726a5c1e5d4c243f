package cli

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
)

// waitFlags are the output flags of the commands that wait for a batch.
type waitFlags struct {
	json  bool
	quiet bool
}

func (f *waitFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.json, "json", false, "print the aggregate as JSON (results included) instead of a table")
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "show no progress")
}

func newWatchCmd(g *globals) *cobra.Command {
	var f waitFlags
	cmd := &cobra.Command{
		Use:   "watch BATCH",
		Short: "Show a batch's progress until it ends, then its aggregate",
		Long: `Show a batch's progress until it ends, then print its aggregate: counts,
timing and the first failures as a table, or everything as JSON with --json.

The progress bar (on standard error) is drawn on a terminal only; otherwise
a plain line is written every few seconds. A batch that has already ended
is printed at once. Interrupting watch does not stop the batch.

Exit code 0 when every item succeeded, 1 when some failed, were not run,
or the batch ended otherwise than completed.`,
		Example: `  fanout watch 6b0c2f6e-8a4b-4b55-9d3c-8f1d5c2e7a10
  fanout watch nightly-2024-06-01 --json | jq '.results[] | select(.ok | not)'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			ctx := cmd.Context()
			st, err := c.Status(ctx, args[0])
			if err != nil {
				return exitError(err)
			}
			return g.wait(ctx, c, st, f)
		},
	}
	g.batchIDArg(cmd, true)
	f.register(cmd)
	return cmd
}

// submitted ends submit and redrive: without --wait it prints the new
// batch's id (its reply with --json); with --wait it says what started
// (headline, on stderr) and waits for the batch like watch.
func (g *globals) submitted(ctx context.Context, c *client.Client, r *client.SubmitReply, activity string, wait bool, wf waitFlags, headline string) error {
	if !wait {
		if wf.json {
			return writeJSON(g.out, r)
		}
		fmt.Fprintln(g.out, r.BatchID)
		return nil
	}
	if !wf.quiet && !wf.json {
		fmt.Fprintln(g.errOut, headline)
	}
	return g.wait(ctx, c, &client.Progress{BatchID: r.BatchID, Activity: activity, Status: r.Status, Total: r.Total}, wf)
}

// wait shows a batch's progress from its state st until it ends, prints
// its aggregate, and returns the batch's exit status. Interrupted, it
// says how to go on waiting.
func (g *globals) wait(ctx context.Context, c *client.Client, st *client.Progress, f waitFlags) error {
	var view *batchProgress
	onProgress := func(client.Progress) {}
	if !f.quiet {
		view = &batchProgress{out: g.errOut, desc: st.Activity, bar: isTerminal(g.errOut)}
		view.update(*st)
		onProgress = view.update
		stopWatch := g.watchServed(ctx, c, st.Activity, view.setNote)
		defer stopWatch()
	}
	agg, err := c.Wait(ctx, st.BatchID, onProgress)
	if err != nil {
		if ctx.Err() != nil {
			if view != nil {
				view.abandon()
			}
			return &interruptedError{msg: fmt.Sprintf("stopped waiting; batch %s goes on: fanout watch %s", st.BatchID, st.BatchID)}
		}
		return exitError(err)
	}
	if view != nil {
		view.finish(agg)
	}
	if f.json {
		if err := writeJSON(g.out, agg); err != nil {
			return err
		}
	} else {
		printAggregate(g.out, agg)
	}
	return outcome(agg)
}

// servedEvery is how often a waiting command checks that the batch's
// activity has a live worker.
const servedEvery = 3 * time.Second

// watchServed calls note with a warning while activity has work queued
// and no live worker (client.ActivityQueue.Unserved), and with "" once it
// has one again, until the returned function is called. A user who may
// not read the workers bucket or the work stream's consumers gets no
// warning.
func (g *globals) watchServed(ctx context.Context, c *client.Client, activity string, note func(string)) (stop func()) {
	if activity == "" {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			note(unservedNote(ctx, c, activity))
			t.Reset(servedEvery)
		}
	}()
	return func() { cancel(); <-done }
}

// unservedNote is the warning for an activity with work and no worker to
// take it, or "".
func unservedNote(ctx context.Context, c *client.Client, activity string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	q, live, err := c.Serving(ctx, activity)
	if err != nil || !q.Unserved(live) {
		return ""
	}
	return fmt.Sprintf("no live worker serves `%s`: its work waits until one starts", activity)
}

// batchProgress feeds a progressView, made once the batch's total is known
// (a batch with a source step learns it late) and ignoring events that
// arrive after the end.
type batchProgress struct {
	mu    sync.Mutex
	out   io.Writer
	desc  string
	bar   bool
	note  string
	view  *progressView
	total int
	ended bool
}

func (b *batchProgress) update(p client.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended || p.Total <= 0 {
		return
	}
	switch {
	case b.view == nil:
		b.view = newProgressView(b.out, p.Total, b.desc, b.bar)
		b.view.note = b.note
	case p.Total != b.total && b.view.bar != nil:
		b.view.bar.ChangeMax(p.Total)
	}
	b.total = p.Total
	b.view.update(p)
}

func (b *batchProgress) setNote(note string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended {
		return
	}
	b.note = note
	if b.view != nil {
		b.view.setNote(note)
	}
}

func (b *batchProgress) abandon() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ended = true
	if b.view != nil {
		b.view.abandon()
	}
}

func (b *batchProgress) finish(agg *client.Aggregate) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ended = true
	if b.view == nil {
		return
	}
	if agg.Total != b.total && b.view.bar != nil {
		b.view.bar.ChangeMax(agg.Total)
	}
	if b.view.bar == nil && b.view.last.Done < agg.Succeeded+agg.Failed {
		// Plain lines: say where the batch ended if the last event did not.
		p := client.Progress{BatchID: agg.BatchID, Total: agg.Total, Done: agg.Succeeded + agg.Failed, Failed: agg.Failed,
			RatePerSec: aggregateRate(agg)}
		if agg.Total > 0 {
			p.Percent = float64(p.Done) * 100 / float64(agg.Total)
		}
		b.view.note = ""
		b.view.update(p)
	}
	b.view.finish(agg)
}
