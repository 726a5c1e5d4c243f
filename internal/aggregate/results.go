package aggregate

import (
	"bufio"
	"encoding/json"
	"io"
	"time"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Results assembles a batch's per-item results, given in any order, in
// item order: in memory for a batch small enough to carry them in its
// aggregate, or else written as they come to a JSON Lines object (the
// aggregate's results_ref), holding only the results that arrived ahead
// of an earlier item still missing, so that memory does not grow with the
// batch.
type Results struct {
	total  int
	items  []messages.ItemResult // in memory, or nil
	have   []bool
	lines  *OrderedWriter // written as they come, or nil
	output json.RawMessage
}

// NewResults assembles the results of total items in memory.
func NewResults(total int) *Results {
	return &Results{total: total, items: make([]messages.ItemResult, total), have: make([]bool, total)}
}

// NewStreamedResults assembles the results of total items as JSON Lines
// written to w.
func NewStreamedResults(total int, w io.Writer) *Results {
	return &Results{total: total, lines: NewOrderedWriter(w, total)}
}

// Streamed reports whether the results are written to an object.
func (r *Results) Streamed() bool { return r.lines != nil }

// Add takes an item's result; items out of range or given before are
// ignored. It fails only when writing the object fails.
func (r *Results) Add(item int, res *messages.ResultMessage) error {
	if r.lines != nil {
		return r.lines.Add(item, res)
	}
	if item >= 0 && item < r.total && !r.have[item] {
		r.items[item] = itemResult(item, res)
		r.have[item] = true
	}
	return nil
}

// SetOutput takes the reduce step's output.
func (r *Results) SetOutput(out json.RawMessage) { r.output = out }

// Output is the reduce step's output, if any.
func (r *Results) Output() json.RawMessage { return r.output }

// List returns the in-memory results in item order, items without a
// result marked not run with reason.
func (r *Results) List(reason string) []messages.ItemResult {
	out := make([]messages.ItemResult, r.total)
	for i := range out {
		if r.have[i] {
			out[i] = r.items[i]
		} else {
			out[i] = notRun(i, reason)
		}
	}
	return out
}

// Close writes the items without a result as not run with reason, then
// flushes the object's lines.
func (r *Results) Close(reason string) error { return r.lines.Close(reason) }

// WriteLines writes results as JSON Lines in item order.
func WriteLines(w io.Writer, results []messages.ItemResult) error {
	ow := NewOrderedWriter(w, len(results))
	for i := range results {
		if err := ow.emit(&results[i]); err != nil {
			return err
		}
	}
	return ow.bw.Flush()
}

// Build makes the aggregate of a finished (or, for a reduce step's input,
// running) state with its results: inline, or in the object ref names.
func Build(st *messages.BatchState, results []messages.ItemResult, ref *messages.ObjectRef, output json.RawMessage, now time.Time) *messages.Aggregate {
	agg := &messages.Aggregate{
		BatchID: st.BatchID, Activity: st.Activity, Status: st.Status, Reason: st.Reason,
		Total: st.Total, Succeeded: st.Succeeded, Failed: st.Failed,
		NotRun:  st.Total - st.Succeeded - st.Failed,
		Results: results, ResultsRef: ref, Output: output,
		StartedAt: st.CreatedAt, FinishedAt: st.FinishedAt,
		RedriveOf: st.RedriveOf,
	}
	if agg.FinishedAt.IsZero() {
		agg.FinishedAt = now
	}
	agg.DurationMS = float64(agg.FinishedAt.Sub(agg.StartedAt).Microseconds()) / 1000
	return agg
}

func itemResult(item int, res *messages.ResultMessage) messages.ItemResult {
	return messages.ItemResult{Item: item, OK: res.OK, Output: res.Output, OutputRef: res.OutputRef, Error: res.Error}
}

func notRun(item int, reason string) messages.ItemResult {
	return messages.ItemResult{Item: item, NotRun: true, Error: "not run: " + reason}
}

// OrderedWriter writes results given in any order as JSON Lines of
// ItemResult in item order, holding only those that arrived before an
// item still missing.
type OrderedWriter struct {
	bw    *bufio.Writer
	total int
	next  int
	early map[int]messages.ItemResult
}

// NewOrderedWriter writes the results of a batch of total items to w.
func NewOrderedWriter(w io.Writer, total int) *OrderedWriter {
	return &OrderedWriter{bw: bufio.NewWriterSize(w, 64*1024), total: total, early: map[int]messages.ItemResult{}}
}

// Add takes one item's result; items out of range or already written are
// ignored.
func (o *OrderedWriter) Add(item int, res *messages.ResultMessage) error {
	if item < o.next || item >= o.total {
		return nil
	}
	if _, ok := o.early[item]; ok {
		return nil
	}
	o.early[item] = itemResult(item, res)
	for r, ok := o.early[o.next]; ok; r, ok = o.early[o.next] {
		if err := o.emit(&r); err != nil {
			return err
		}
		delete(o.early, o.next)
		o.next++
	}
	return nil
}

// Held is how many results wait for an earlier item's.
func (o *OrderedWriter) Held() int { return len(o.early) }

// Close writes every item still missing as not run with reason, in order
// with those held, and flushes.
func (o *OrderedWriter) Close(reason string) error {
	for ; o.next < o.total; o.next++ {
		r, ok := o.early[o.next]
		if !ok {
			r = notRun(o.next, reason)
		}
		if err := o.emit(&r); err != nil {
			return err
		}
	}
	clear(o.early)
	return o.bw.Flush()
}

func (o *OrderedWriter) emit(r *messages.ItemResult) error {
	line, err := messages.Encode(r)
	if err != nil {
		return err
	}
	_, _ = o.bw.Write(line)
	return o.bw.WriteByte('\n')
}
