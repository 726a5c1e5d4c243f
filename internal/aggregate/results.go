package aggregate

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/topology"
)

// Results gathers the per-item results of a batch in item order.
type Results struct {
	items []messages.ItemResult
	have  []bool
}

// NewResults makes room for total items.
func NewResults(total int) *Results {
	return &Results{items: make([]messages.ItemResult, total), have: make([]bool, total)}
}

// Add records one item's result; out-of-range items are ignored.
func (r *Results) Add(res *messages.ResultMessage, item int) {
	if item < 0 || item >= len(r.items) {
		return
	}
	r.items[item] = messages.ItemResult{Item: item, OK: res.OK, Output: res.Output, OutputRef: res.OutputRef, Error: res.Error}
	r.have[item] = true
}

// Has reports whether an item's result was added.
func (r *Results) Has(item int) bool { return item >= 0 && item < len(r.have) && r.have[item] }

// Final returns all results in item order; items without a result are
// marked not run with the given reason.
func (r *Results) Final(reason string) []messages.ItemResult {
	for i := range r.items {
		if !r.have[i] {
			r.items[i] = messages.ItemResult{Item: i, NotRun: true, Error: "not run: " + reason}
		}
	}
	return r.items
}

// ReadResults reads a batch's results from the results stream in stream
// order, up to and including sequence lastSeq, into r.
func ReadResults(ctx context.Context, results jetstream.Stream, n messages.Names, batch string, lastSeq uint64, r *Results) error {
	return eachResult(ctx, results, n, batch, lastSeq, func(item int, res *messages.ResultMessage) error {
		r.Add(res, item)
		return nil
	})
}

// eachResult calls fn with each item result of a batch in stream order, up
// to and including sequence lastSeq (step results are skipped).
func eachResult(ctx context.Context, results jetstream.Stream, n messages.Names, batch string, lastSeq uint64, fn func(item int, res *messages.ResultMessage) error) error {
	if lastSeq == 0 {
		return nil
	}
	cons, err := results.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{n.ResultBatchFilter(batch)},
		InactiveThreshold: topology.ReaderIdle,
	})
	if err != nil {
		return fmt.Errorf("read results of %s: %w", batch, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return fmt.Errorf("read results of %s: %w", batch, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read results of %s: %w", batch, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read results of %s: %w", batch, err)
		}
		if meta.Sequence.Stream > lastSeq {
			return nil
		}
		if _, item, ok := n.ParseResultSubject(msg.Subject()); ok {
			var res messages.ResultMessage
			if messages.Decode(msg.Data(), &res) != nil {
				res = messages.ResultMessage{Error: "result message was not valid JSON"}
			}
			if err := fn(item, &res); err != nil {
				return err
			}
		}
		if meta.Sequence.Stream == lastSeq || meta.NumPending == 0 {
			return nil
		}
	}
}

// Build assembles the aggregate of a finished state.
func Build(st *messages.BatchState, results []messages.ItemResult, now time.Time) *messages.Aggregate {
	agg := &messages.Aggregate{
		BatchID: st.BatchID, Activity: st.Activity, Status: st.Status, Reason: st.Reason,
		Total: st.Total, Succeeded: st.Succeeded, Failed: st.Failed,
		NotRun:    st.Total - st.Succeeded - st.Failed,
		Results:   results,
		StartedAt: st.CreatedAt, FinishedAt: st.FinishedAt,
		RedriveOf: st.RedriveOf,
	}
	if agg.FinishedAt.IsZero() {
		agg.FinishedAt = now
	}
	agg.DurationMS = float64(agg.FinishedAt.Sub(agg.StartedAt).Microseconds()) / 1000
	return agg
}

// LoadResults reads results written by StoreResults-style JSON Lines from
// the object store. total (the aggregate's) sizes the slice up front.
func LoadResults(ctx context.Context, js jetstream.JetStream, ref *messages.ObjectRef, total int) ([]messages.ItemResult, error) {
	obs, err := js.ObjectStore(ctx, ref.Bucket)
	if err != nil {
		return nil, fmt.Errorf("results object store %s: %w", ref.Bucket, err)
	}
	// Read as it arrives: GetBytes grows one buffer to the object's size,
	// copying it again at each step (7% of the CPU of a 100,000-item run).
	obj, err := obs.Get(ctx, ref.Name)
	if err != nil {
		return nil, fmt.Errorf("results object %s: %w", ref.Name, err)
	}
	defer func() { _ = obj.Close() }()
	out := make([]messages.ItemResult, 0, min(max(total, 0), 1<<24))
	sc := bufio.NewScanner(obj)
	sc.Buffer(make([]byte, 64*1024), 64*1024*1024)
	for sc.Scan() {
		out = append(out, messages.ItemResult{})
		if err := messages.Decode(sc.Bytes(), &out[len(out)-1]); err != nil {
			return nil, fmt.Errorf("results object %s: %w", ref.Name, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("results object %s: %w", ref.Name, err)
	}
	return out, nil
}

// WriteOrdered writes a batch's results as JSON Lines of ItemResult in
// item order, reading them from the results stream up to lastSeq. Memory
// is bounded by how far out of item order results arrived (about the
// window, plus items finished while a slow one was retried), not by the
// batch. Items without a result are written as not run with reason.
func WriteOrdered(ctx context.Context, results jetstream.Stream, n messages.Names, batch string, lastSeq uint64, total int, reason string, w io.Writer) error {
	ow := NewOrderedWriter(w, total)
	err := eachResult(ctx, results, n, batch, lastSeq, func(item int, res *messages.ResultMessage) error {
		return ow.Add(item, res)
	})
	if err != nil {
		return err
	}
	return ow.Close(reason)
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
	o.early[item] = messages.ItemResult{Item: item, OK: res.OK, Output: res.Output, OutputRef: res.OutputRef, Error: res.Error}
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
			r = messages.ItemResult{Item: o.next, NotRun: true, Error: "not run: " + reason}
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
