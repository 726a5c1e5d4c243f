package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/topology"
)

// catchUpWait bounds the wait for results the checkpoint covers but the
// reader has not read yet; past it they are taken as gone (expired).
const catchUpWait = 30 * time.Second

// resultsAssembly is a batch's results for its aggregate: in memory, or
// written while they come to the object results/<batch>.jsonl.
type resultsAssembly struct {
	res  *aggregate.Results
	err  error // adding to the object failed: read them again at the end
	pw   *io.PipeWriter
	done chan struct{} // closed when the object's Put returns
	put  error         // the Put's error, once done
	info *jetstream.ObjectInfo
	ref  *messages.ObjectRef // the object, once complete
}

// newResults starts assembling the results of total items.
func (d *driver) newResults(total int) *resultsAssembly {
	if total <= d.c.cfg.InMemoryResults {
		return &resultsAssembly{res: aggregate.NewResults(total)}
	}
	pr, pw := io.Pipe()
	a := &resultsAssembly{res: aggregate.NewStreamedResults(total, pw), pw: pw, done: make(chan struct{})}
	name := resultsObject(d.batch)
	go func() {
		defer close(a.done)
		a.info, a.put = d.c.blobs.Put(d.c.runCtx, jetstream.ObjectMeta{Name: name}, pr)
		_ = pr.CloseWithError(a.put) // unblocks the driver if the Put gave up
	}()
	return a
}

func resultsObject(batch string) string { return "results/" + batch + ".jsonl" }

func (a *resultsAssembly) add(item int, res *messages.ResultMessage) {
	if a.err == nil {
		a.err = a.res.Add(item, res)
	}
}

// finish completes the object, items without a result written as not run
// with reason; a second call returns the same object.
func (a *resultsAssembly) finish(bucket, reason string) (*messages.ObjectRef, error) {
	if a.ref != nil {
		return a.ref, nil
	}
	if a.err == nil {
		a.err = a.res.Close(reason)
	}
	if a.err != nil {
		a.abort()
		return nil, a.err
	}
	_ = a.pw.Close()
	<-a.done
	if a.put != nil {
		a.err = a.put
		return nil, fmt.Errorf("store results: %w", a.put)
	}
	a.ref = &messages.ObjectRef{Bucket: bucket, Name: a.info.Name, Size: a.info.Size, Digest: a.info.Digest}
	return a.ref, nil
}

// abort drops an object being written.
func (a *resultsAssembly) abort() {
	if a.pw != nil && a.ref == nil {
		_ = a.pw.CloseWithError(errors.New("results assembly dropped"))
		<-a.done
	}
}

// restartResults reads the batch's results again from the start into a
// new assembly (after writing the object failed): the machine counts
// nothing twice, it only keeps what it counted before.
func (d *driver) restartResults() {
	d.reader.stop()
	d.results.abort()
	d.reader, d.readSeq = d.c.readResults(d.batch, d.after), 0
	d.results = d.newResults(d.m.State().Total)
}

// catchUp reads until the reader has reached the checkpoint's position:
// a driver that resumed a batch has read fewer results than it counted.
func (d *driver) catchUp(ctx context.Context) error {
	timeout := time.NewTimer(catchUpWait)
	defer timeout.Stop()
	for d.readSeq < d.m.State().LastSeq {
		select {
		case m, ok := <-d.reader.in:
			if !ok {
				return d.reader.err
			}
			d.onResult(m)
			if m.pending == 0 && d.readSeq < d.m.State().LastSeq {
				d.log.Warn().Uint64("read", d.readSeq).Uint64("last_seq", d.m.State().LastSeq).Msg("results counted before are gone from the results stream")
				return nil
			}
		case <-timeout.C:
			d.log.Warn().Uint64("read", d.readSeq).Uint64("last_seq", d.m.State().LastSeq).Msg("results counted before were not read back in time")
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// publishAggregate publishes the aggregate of the machine's final state.
// The done stream keeps one per batch: one out already (published by a
// driver that then lost the batch, or died before saving its final state)
// decides the outcome.
func (d *driver) publishAggregate(ctx context.Context, checkFirst bool) error {
	if checkFirst {
		if decided, _, err := d.adoptAggregate(ctx); decided || err != nil {
			return err
		}
	}
	st := d.m.State()
	reason := "batch " + string(st.Status)
	if st.Reason != "" {
		reason += ": " + st.Reason
	}
	data, err := d.aggregateJSON(ctx, reason)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(d.c.names.Done(d.batch))
	msg.Data = data
	// The results-stream sequence its counts reach: a coordinator that
	// finds the aggregate out brings the state's last_seq to it.
	msg.Header.Set(messages.LastSeqHeader, strconv.FormatUint(st.LastSeq, 10))
	d.traceHd.Set(msg.Header)
	ack, err := d.c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(messages.DoneMsgID(d.batch)))
	if topology.IsDuplicateResult(err) || (err == nil && ack.Duplicate) {
		decided, removed, err := d.adoptAggregate(ctx)
		switch {
		case decided || err != nil:
			return err
		case removed:
			return errConflict // publish again, at once
		}
		return errors.New("the aggregate was refused as a duplicate, and none is stored")
	}
	return err
}

// adoptAggregate takes the outcome of the batch's aggregate if one is out.
// Something else stored in its place, which would refuse the real one, is
// removed.
func (d *driver) adoptAggregate(ctx context.Context) (decided, removed bool, err error) {
	out, bad, err := d.c.storedOutcome(ctx, d.batch)
	switch {
	case err != nil:
		return false, false, err
	case out != nil:
		d.feed(aggregate.Decided{Outcome: *out})
		return true, false, nil
	case bad == 0:
		return false, false, nil
	}
	if err := d.c.stores.Done.DeleteMsg(ctx, bad); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, false, fmt.Errorf("remove what is stored in place of the aggregate: %w", err)
	}
	return false, true, nil
}

// aggregateJSON encodes the aggregate of the machine's state with its
// results in item order, items without a result marked not run with
// reason: inline, or in the results object when the batch is too large to
// hold them in memory or they do not fit in one message.
func (d *driver) aggregateJSON(ctx context.Context, reason string) ([]byte, error) {
	if err := d.catchUp(ctx); err != nil {
		return nil, err
	}
	if err := d.results.err; err != nil {
		d.log.Warn().Err(err).Msg("results not assembled while counted; reading them again")
		d.restartResults()
		return nil, err
	}
	st := d.m.State()
	now := time.Now().UTC()
	var output json.RawMessage // the reduce step's, once it completed the batch
	if st.Status == messages.StatusCompleted {
		output = d.results.res.Output()
	}
	bucket := d.c.names.BlobBucket()
	if d.results.res.Streamed() {
		ref, err := d.results.finish(bucket, reason)
		if err != nil {
			return nil, err
		}
		return messages.Encode(aggregate.Build(&st, nil, ref, output, now))
	}
	list := d.results.res.List(reason)
	agg := aggregate.Build(&st, list, nil, output, now)
	data, err := messages.Encode(agg)
	if err != nil || int64(len(data)) <= d.c.nc.MaxPayload()-8*1024 {
		return data, err
	}
	var buf bytes.Buffer
	if err := aggregate.WriteLines(&buf, list); err != nil {
		return nil, err
	}
	info, err := d.c.blobs.PutBytes(ctx, resultsObject(d.batch), buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("store results: %w", err)
	}
	agg.Results, agg.ResultsRef = nil, &messages.ObjectRef{Bucket: bucket, Name: info.Name, Size: info.Size, Digest: info.Digest}
	return messages.Encode(agg)
}
