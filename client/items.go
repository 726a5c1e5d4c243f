package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
)

// ResultMessage is one item's result as a worker published it.
type ResultMessage = messages.ResultMessage

// StoredResult is an item's result as the results stream (FANOUT_RESULTS)
// holds it: the worker's message, its stream sequence and when it was
// stored. An output larger than the claim-check threshold is not loaded:
// OutputRef names it.
type StoredResult struct {
	ResultMessage
	Seq      uint64
	StoredAt time.Time
}

// ResultsQuery selects a page of ResultsPage.
type ResultsQuery struct {
	// AfterSeq continues after this results-stream sequence: the NextSeq
	// of the page before (0: from the batch's first result).
	AfterSeq uint64
	// Limit is how many results a page holds at most (default 50).
	Limit int
	// FailedOnly keeps only failed results.
	FailedOnly bool
	// MaxScan bounds how many stored results one call reads (default
	// 10,000): with FailedOnly and few failures, a page may come back
	// short, with End false; ask again from NextSeq to read on.
	MaxScan int
}

// ResultsPage is one page of a batch's stored results, in the order they
// were stored.
type ResultsPage struct {
	Results []StoredResult
	// NextSeq is where the next page starts (pass it as AfterSeq).
	NextSeq uint64
	// Scanned is how many stored results this call read.
	Scanned int
	// End is true when the call read every result stored when it began.
	End bool
}

// ResultsPage reads a page of a batch's per-item results from the results
// stream, in the order they were stored, running or finished, with each
// result's attempts, worker and duration (which aggregates do not carry).
// It reads at most q.MaxScan results and holds at most q.Limit: its cost
// does not grow with the batch. Step results (source, reduce) are left out.
//
// The connection's user needs to create, read and delete a consumer on the
// results stream (the ui role of docs/security.md).
func (c *Client) ResultsPage(ctx context.Context, batchID string, q ResultsQuery) (*ResultsPage, error) {
	if !messages.ValidToken(batchID) {
		return nil, messages.Errorf(messages.CodeInvalidRequest, "batch_id: %q is not a batch id", batchID)
	}
	q.Limit = cmpOr(q.Limit, 50)
	q.MaxScan = cmpOr(q.MaxScan, 10_000)
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	stream, err := c.stream(ctx, c.names.ResultsStream())
	if err != nil {
		return nil, fmt.Errorf("results of %s: %w", batchID, err)
	}
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     c.names.ResultItemsFilter(batchID),
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	}
	if q.AfterSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, q.AfterSeq+1
	}
	cons, err := stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("results of %s: %w", batchID, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = stream.DeleteConsumer(ctx, cons.CachedInfo().Name)
	}()
	stored := int(cons.CachedInfo().NumPending)
	toRead := min(stored, q.MaxScan)
	page := &ResultsPage{NextSeq: q.AfterSeq}
	for page.Scanned < toRead && len(page.Results) < q.Limit {
		batch, err := cons.Fetch(min(toRead-page.Scanned, 256), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("results of %s: %w", batchID, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if len(page.Results) == q.Limit {
				continue // past the page: the next one starts at NextSeq
			}
			page.Scanned++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			page.NextSeq = meta.Sequence.Stream
			r, ok := c.storedResult(batchID, m.Subject(), m.Data(), meta.Sequence.Stream, meta.Timestamp)
			if ok && (!q.FailedOnly || !r.OK) {
				page.Results = append(page.Results, r)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("results of %s: %w", batchID, err)
		}
		if got == 0 {
			break // fewer stored than counted: results removed meanwhile
		}
	}
	page.End = page.Scanned >= stored
	return page, nil
}

// storedResult decodes an item's result read from subject; ok is false for
// a step's result or for what is not the result of that item.
func (c *Client) storedResult(batchID, subject string, data []byte, seq uint64, at time.Time) (StoredResult, bool) {
	b, item, ok := c.names.ParseResultSubject(subject)
	if !ok || b != batchID {
		return StoredResult{}, false
	}
	var r StoredResult
	if messages.Decode(data, &r.ResultMessage) != nil || r.CheckResult(batchID, item, "") != nil {
		return StoredResult{}, false
	}
	r.Seq, r.StoredAt = seq, at
	return r, true
}

// Result returns one item's stored result: an *Error with CodeNotFound when
// the item has none (yet, or the batch has no such item).
func (c *Client) Result(ctx context.Context, batchID string, item int) (*StoredResult, error) {
	if !messages.ValidToken(batchID) {
		return nil, messages.Errorf(messages.CodeInvalidRequest, "batch_id: %q is not a batch id", batchID)
	}
	if item < 0 {
		return nil, messages.Errorf(messages.CodeInvalidRequest, "item %d: items are numbered from 0", item)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	r, found, err := c.getResult(ctx, batchID, item)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, messages.Errorf(messages.CodeNotFound, "item %d of batch %s has no result stored", item, batchID)
	}
	return r, nil
}

func (c *Client) getResult(ctx context.Context, batchID string, item int) (*StoredResult, bool, error) {
	stream, err := c.stream(ctx, c.names.ResultsStream())
	if err != nil {
		return nil, false, fmt.Errorf("result of %s item %d: %w", batchID, item, err)
	}
	subject := c.names.Result(batchID, item)
	m, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("result of %s item %d: %w", batchID, item, err)
	}
	r, ok := c.storedResult(batchID, m.Subject, m.Data, m.Sequence, m.Time)
	if !ok {
		return nil, false, nil
	}
	return &r, true, nil
}

// SampleResults reads the stored results of up to n items spread evenly
// over [0, total): a sample of a batch's results whose cost does not grow
// with the batch (n direct reads), for estimates such as a histogram of
// item durations or of when items finished. Items without a result yet
// are left out.
func (c *Client) SampleResults(ctx context.Context, batchID string, total, n int) ([]StoredResult, error) {
	if !messages.ValidToken(batchID) {
		return nil, messages.Errorf(messages.CodeInvalidRequest, "batch_id: %q is not a batch id", batchID)
	}
	n = min(n, total)
	if n <= 0 {
		return nil, nil
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	out := make([]*StoredResult, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(n, 8) { // a few reads in flight hide the round trips
		wg.Go(func() {
			for i := range next {
				item := int(int64(i) * int64(total) / int64(n))
				out[i], _, errs[i] = c.getResult(ctx, batchID, item)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var sample []StoredResult
	for _, r := range out {
		if r != nil {
			sample = append(sample, *r)
		}
	}
	return sample, nil
}

// Aggregate returns a batch's aggregate as it was published, without
// reading results stored in the object store (ResultsRef), or nil when
// the batch has not ended (or does not exist).
func (c *Client) Aggregate(ctx context.Context, batchID string) (*Aggregate, error) {
	if !messages.ValidToken(batchID) {
		return nil, messages.Errorf(messages.CodeInvalidRequest, "batch_id: %q is not a batch id", batchID)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	return c.storedAggregate(ctx, batchID)
}

func cmpOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}
