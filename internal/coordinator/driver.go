package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/tracing"
)

// errLost means another coordinator took the batch over: stop touching it.
var errLost = errors.New("batch taken over by another coordinator")

// errSettled means the token needs no driving (finished, or a duplicate).
var errSettled = errors.New("token settled")

// driver runs one batch: it loads and fences the batch, then feeds the
// batch's state machine (aggregate.Batch) with what happens and runs the
// actions it returns. The machine decides; the driver does the I/O. All
// fields are owned by the driver's goroutine.
type driver struct {
	c     *Coordinator
	batch string
	log   zerolog.Logger
	lease jetstream.Msg // the batch's token, held un-acked while it runs
	pokes chan struct{}

	token // the batch's accepted request, from its token
	m     *aggregate.Batch
	rev   uint64 // of the state last read or written
	epoch uint64
	todo  []aggregate.Action // actions not run yet, in order

	items   *itemReader
	pending []pendingPub // work publishes not yet acknowledged, in order
	stored  int          // the work stream has stored every item below it

	reader  *resultsReader
	readSeq uint64 // the last results-stream sequence read
	results *resultsAssembly

	span    trace.Span      // the batch's, from load to release
	traceHd tracing.Headers // the span's context, for work and aggregate

	inFlight int  // this driver's share of the in-flight items metric
	unsaved  int  // results counted since the last checkpoint, for its metric
	released bool // the batch is finished and its token acked
}

func (d *driver) poke() {
	select {
	case d.pokes <- struct{}{}:
	default:
	}
}

// drive takes a batch token and runs the batch to its end, or until the
// coordinator stops or loses the batch.
func (c *Coordinator) drive(ctx context.Context, tok jetstream.Msg) {
	batch, ok := c.names.BatchFromToken(tok.Subject())
	if !ok {
		c.log.Warn().Str("subject", tok.Subject()).Msg("removing a malformed batch token")
		_ = tok.TermWithReason("not a batch token")
		return
	}
	meta, err := tok.Metadata()
	if err != nil {
		c.log.Warn().Err(err).Str("batch_id", batch).Msg("token without metadata")
		return
	}
	d := &driver{c: c, batch: batch, lease: tok, log: c.log.With().Str("batch_id", batch).Logger(), pokes: make(chan struct{}, 1)}
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	defer stopHeartbeat()
	go d.heartbeat(hbCtx)
	c.register(d)
	defer c.unregister(d)
	c.cfg.Metrics.BatchStarted()
	defer c.cfg.Metrics.BatchStopped()
	defer func() { c.cfg.Metrics.Released(d.inFlight) }()
	defer d.close()

	err = d.load(ctx, meta)
	if err == nil {
		d.startSpan(meta.NumDelivered > 1)
		err = d.run(ctx)
		d.endSpan(err)
	}
	switch {
	case err == nil, errors.Is(err, errSettled):
	case errors.Is(err, errLost):
		d.log.Warn().Msg("batch taken over by another coordinator; letting go")
	case ctx.Err() != nil:
		// Shutting down: hand the batch back at once instead of after a lease.
		_ = tok.Nak()
		d.log.Info().Msg("batch handed back on shutdown")
	default:
		// Let the lease expire so the batch is retried, here or elsewhere.
		d.log.Error().Err(err).Msg("driving batch failed; it will be resumed after the lease")
	}
}

// heartbeat keeps the token (the batch's lease) while the driver lives.
func (d *driver) heartbeat(ctx context.Context) {
	t := time.NewTicker(d.c.cfg.Lease / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.lease.InProgress(); err != nil {
				d.log.Warn().Err(err).Msg("token heartbeat")
			}
		}
	}
}

// load reads the batch's token and claims the batch's state: from then
// on, a driver with an older epoch cannot write the state (every write is
// a compare-and-set, and a driver that loses one and finds a newer epoch
// stops).
func (d *driver) load(ctx context.Context, meta *jetstream.MsgMetadata) error {
	tok, err := decodeToken(d.batch, d.lease.Data(), d.lease.Headers(), meta.Sequence.Stream, meta.Timestamp)
	if err != nil {
		d.c.ignore("token", d.batch, err)
		_ = d.lease.TermWithReason("batch request unreadable")
		return errSettled
	}
	if tok.total < 0 { // a token of an older coordinator: count the items_ref
		n, e := d.c.countItems(ctx, tok.req.ItemsRef)
		if e != nil {
			return e
		}
		tok.total = n
	}
	d.token = *tok
	d.c.cfg.Metrics.Activity(tok.req.Activity)
	st, rev, err := d.claim(ctx, tok, meta.NumDelivered)
	if errors.Is(err, errDuplicateToken) {
		d.log.Warn().Uint64("token_seq", tok.seq).Msg("removing a duplicate batch token")
		_ = d.lease.TermWithReason("duplicate batch token")
		return errSettled
	} else if err != nil {
		return err
	}
	d.m = aggregate.New(d.c.machineConfig(), *st, d.req.Reduce != nil)
	d.rev, d.epoch, d.stored = rev, st.Epoch, st.Published
	if meta.NumDelivered > 1 {
		d.c.cfg.Metrics.TakenOver()
		d.log.Info().Uint64("epoch", st.Epoch).Int("succeeded", st.Succeeded).Int("failed", st.Failed).
			Uint64("last_seq", st.LastSeq).Msg("resuming batch from checkpoint")
	}
	return d.openItems(ctx, st)
}

// errDuplicateToken: the batch's state names another token.
var errDuplicateToken = errors.New("duplicate batch token")

// claim returns the batch's state with this driver's epoch, and its
// revision (0: not read). The first delivery of a token starts from the
// token, without reading the state: nobody has driven the batch, and its
// epoch is written with the first checkpoint. A later one raises the
// epoch above every driver's before (and to at least the delivery count:
// a driver before may not have saved its epoch yet) and saves it at once,
// which fences off the earlier drivers.
func (d *driver) claim(ctx context.Context, tok *token, delivered uint64) (*messages.BatchState, uint64, error) {
	if delivered == 1 {
		if err := d.removeEarlyResults(ctx); err != nil {
			return nil, 0, err
		}
		st := tok.state()
		st.Epoch, st.Owner = 1, d.c.cfg.Name
		return st, 0, nil
	}
	for {
		st, rev, err := d.c.state.get(ctx, d.batch)
		if errors.Is(err, errNotFound) { // rev: of a value that is no state
			st, err = tok.state(), nil
		}
		if err == nil {
			// A driver before this one may have published the aggregate.
			err = d.c.settle(ctx, st)
		}
		if err != nil {
			return nil, 0, err
		}
		if st.TokenSeq != tok.seq {
			return nil, 0, errDuplicateToken
		}
		st.Epoch = max(st.Epoch+1, delivered)
		st.Owner = d.c.cfg.Name
		st.UpdatedAt = time.Now().UTC()
		if rev, err = d.c.state.update(ctx, st, rev); !errors.Is(err, errConflict) {
			return st, rev, err
		}
	}
}

// removeEarlyResults removes what is stored under the batch's results
// subjects before its first work is published: published before the batch
// was accepted (an id can be guessed), it is no result of the batch, and
// the one-result-per-subject rule would refuse the item's real one.
func (d *driver) removeEarlyResults(ctx context.Context) error {
	return d.retry(ctx, "remove results stored before the batch", func(ctx context.Context) error {
		n, err := d.c.purge(ctx, d.c.names.ResultsStream(), d.c.names.ResultBatchFilter(d.batch))
		if n > 0 {
			d.log.Warn().Uint64("removed", n).Msg("removed results stored before the batch was accepted")
			d.c.cfg.Metrics.Ignored("early_result", n)
		}
		return err
	})
}

// startSpan starts the batch's span under the trace context its token
// carries (the accept's). Without a tracer provider it is that context
// itself, passed on to the work and the aggregate; with neither, nothing.
func (d *driver) startSpan(resumed bool) {
	if !d.c.tracing && !d.parent.IsValid() {
		d.span = trace.SpanFromContext(context.Background()) // records nothing
		return
	}
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), d.parent)
	st := d.m.State()
	_, d.span = d.c.tracer.Start(ctx, tracing.SpanName(tracing.SpanBatch, d.req.Activity), trace.WithAttributes(
		tracing.BatchIDKey.String(d.batch), tracing.ActivityKey.String(d.req.Activity),
		tracing.TotalKey.Int(st.Total), tracing.EpochKey.Int64(int64(d.epoch)), tracing.ResumedKey.Bool(resumed),
		tracing.CoordinatorKey.String(d.c.cfg.Name)))
	d.traceHd = tracing.HeadersOf(d.span.SpanContext())
}

// endSpan ends the batch's span with its outcome, or with why this driver
// let the batch go.
func (d *driver) endSpan(err error) {
	if !d.span.IsRecording() {
		return
	}
	st := d.m.State()
	d.span.SetAttributes(tracing.SucceededKey.Int(st.Succeeded), tracing.FailedKey.Int(st.Failed))
	switch {
	case d.released:
		d.span.SetAttributes(tracing.OutcomeKey.String(string(st.Status)))
		if st.Reason != "" {
			d.span.SetAttributes(tracing.ReasonKey.String(st.Reason))
		}
		if st.Status == messages.StatusFailed || st.Status == messages.StatusTimedOut {
			d.span.SetStatus(codes.Error, "batch "+string(st.Status))
		}
	case err != nil && !errors.Is(err, errSettled):
		d.span.SetAttributes(tracing.HandedBackKey.Bool(true))
		d.span.RecordError(err)
	}
	d.span.End()
}

func (c *Coordinator) machineConfig() aggregate.Config {
	return aggregate.Config{CheckpointEvery: c.cfg.CheckpointEvery, ProgressInterval: c.cfg.ProgressInterval, AutoPack: c.cfg.AutoPack}
}

// run feeds the state machine until the batch is finished. Everything
// that happens to the batch arrives here: its stored results, the tick of
// the checkpoint interval (with a read of the state every lease ÷ 4, for
// requests and lost ownership), a poke (a request changed the state), its
// deadline, and the coordinator's stop.
func (d *driver) run(ctx context.Context) error {
	d.reader = d.c.readResults(d.batch, d.after)
	d.results = d.newResults(d.m.State().Total)
	d.feed(aggregate.Started{})
	tick := time.NewTicker(d.c.cfg.CheckpointInterval)
	defer tick.Stop()
	var deadline <-chan time.Time
	if at := d.m.Deadline(); !at.IsZero() {
		t := time.NewTimer(time.Until(at))
		defer t.Stop()
		deadline = t.C
	}
	refreshEvery := max(int(d.c.cfg.Lease/4/d.c.cfg.CheckpointInterval), 1)
	for ticks := 0; ; {
		if err := d.act(ctx); err != nil || d.released {
			return err
		}
		select {
		case <-ctx.Done():
			return d.handBack(ctx)
		case m, ok := <-d.reader.in:
			if !ok {
				return d.reader.err
			}
			d.onResult(m)
		case <-tick.C:
			if ticks++; ticks%refreshEvery == 0 {
				if err := d.refresh(ctx); err != nil {
					return err
				}
			}
			if err := d.confirm(ctx, false); err != nil {
				return err
			}
			d.feed(aggregate.Tick{})
		case <-d.pokes:
			if err := d.refresh(ctx); err != nil {
				return err
			}
		case <-deadline:
			d.feed(aggregate.Tick{})
		}
	}
}

// onResult gives the machine a message read from the results stream, if
// it is what its subject says: a message that is not is ignored (the
// item's real result cannot be stored after it, and the batch ends at its
// timeout with the item not run).
func (d *driver) onResult(m resultMsg) {
	d.readSeq = m.seq
	res := &messages.ResultMessage{}
	err := messages.Decode(m.data, res)
	var ev aggregate.Event
	n := d.c.names
	if _, first, ok := n.ParseUnpackRequest(m.subject); ok {
		if err == nil {
			err = res.CheckUnpack(d.batch, first)
		}
		if err == nil {
			ev = aggregate.UnpackStored{Seq: m.seq, First: first, Attempt: res.Unpack.Attempt}
		}
	} else if _, step, ok := n.ParseStepResult(m.subject); ok {
		if err == nil {
			err = res.CheckResult(d.batch, 0, step)
		}
		ev = aggregate.StepStored{Seq: m.seq, Step: step, Result: res}
	} else if _, item, ok := n.ParseResultSubject(m.subject); ok {
		if err == nil {
			err = res.CheckResult(d.batch, item, "")
		}
		ev = aggregate.ResultStored{Seq: m.seq, Item: item, Result: res}
	} else {
		err = fmt.Errorf("%s is not a result subject", m.subject)
	}
	if err != nil {
		d.c.ignore("result", d.batch, fmt.Errorf("stream sequence %d: %w", m.seq, err))
		return
	}
	d.feed(ev)
}

// feed gives the machine an event and queues the actions it returns.
// Keep is run at once: it only adds a result to the aggregate's.
func (d *driver) feed(ev aggregate.Event) {
	for _, a := range d.m.Step(time.Now(), ev) {
		if a.Kind == aggregate.Keep {
			d.keep(a)
			continue
		}
		d.todo = append(d.todo, a)
	}
}

// act runs the queued actions in order, and those they give rise to.
func (d *driver) act(ctx context.Context) error {
	for i := 0; i < len(d.todo); i++ {
		if err := d.do(ctx, d.todo[i]); err != nil {
			return err
		}
	}
	d.todo = d.todo[:0]
	return nil
}

func (d *driver) do(ctx context.Context, a aggregate.Action) error {
	switch a.Kind {
	case aggregate.PublishWork:
		if d.m.Ended() {
			return nil // decided meanwhile: no more work for the batch
		}
		return d.publishWork(ctx, a)
	case aggregate.Unpack:
		return d.unpack(ctx, a)
	case aggregate.PublishStep:
		return d.publishStep(ctx, a.Step)
	case aggregate.LoadSource:
		return d.loadSource(ctx, a.Result)
	case aggregate.Checkpoint:
		return d.checkpoint(ctx)
	case aggregate.Progress:
		d.publishProgress()
	case aggregate.Purge:
		// Every publish stored first, so that the purge removes it.
		if err := d.confirm(ctx, true); err != nil {
			return err
		}
		return d.retry(ctx, "remove queued work", func(ctx context.Context) error {
			return d.c.stores.Work.Purge(ctx, jetstream.WithPurgeSubject(d.c.names.PurgeBatchWork(d.batch)))
		})
	case aggregate.PublishAggregate:
		return d.retry(ctx, "publish aggregate", func(ctx context.Context) error { return d.publishAggregate(ctx, a.CheckFirst) })
	case aggregate.Release:
		d.release()
	}
	return nil
}

// keep adds a result to the aggregate's.
func (d *driver) keep(a aggregate.Action) {
	if a.Step == messages.StepReduce {
		d.results.res.SetOutput(a.Result.Output)
		return
	}
	if a.Counted {
		d.inFlight--
		d.unsaved++
		d.c.cfg.Metrics.Counted(d.req.Activity, a.Result.OK)
	}
	d.results.add(a.Item, a.Result)
}

// checkpoint writes the machine's state with compare-and-set. A conflict
// with a request (cancel, update) writes again with the request's fields
// and then gives them to the machine; a newer epoch means the batch was
// lost. Other errors are retried: nothing else can move meanwhile.
func (d *driver) checkpoint(ctx context.Context) error {
	if err := d.confirm(ctx, false); err != nil {
		return err
	}
	if d.rev == 0 {
		// The first write of a driver that started from the token: the
		// submitter has most likely made the state meanwhile.
		if err := d.refresh(ctx); err != nil {
			return err
		}
	}
	var requested *messages.BatchState
	err := d.retry(ctx, "save batch state", func(ctx context.Context) error {
		st := d.m.State()
		if requested != nil {
			st.CancelRequested = st.CancelRequested || requested.CancelRequested
			st.Options = requested.Options
			st.Paused = requested.Paused
		}
		st.UpdatedAt = time.Now().UTC()
		rev, err := d.c.state.update(ctx, &st, d.rev)
		if errors.Is(err, errConflict) {
			cur, rev, err := d.c.state.get(ctx, d.batch)
			if errors.Is(err, errNotFound) {
				d.rev = rev // write over what is there
				return errConflict
			}
			if err != nil {
				return err
			}
			if cur.Epoch > d.epoch {
				return errLost
			}
			requested, d.rev = cur, rev
			return errConflict
		}
		if err == nil {
			d.rev = rev
			d.c.cfg.Metrics.Checkpointed(d.unsaved)
			d.unsaved = 0
		}
		return err
	})
	if err == nil && requested != nil {
		d.feed(aggregate.RequestedBy(requested))
	}
	return err
}

// refresh reads the state for requests and lost ownership between
// checkpoints.
func (d *driver) refresh(ctx context.Context) error {
	cur, rev, err := d.c.state.get(ctx, d.batch)
	if errors.Is(err, errNotFound) {
		if rev != 0 && rev != d.rev {
			// A value that is no state: write over it.
			d.rev = rev
			d.todo = append(d.todo, aggregate.Action{Kind: aggregate.Checkpoint})
		}
		return nil // no request
	}
	if err != nil {
		d.log.Warn().Err(err).Msg("reading batch state")
		return nil
	}
	if cur.Epoch > d.epoch {
		return errLost
	}
	if rev != d.rev {
		d.rev = rev
		d.feed(aggregate.RequestedBy(cur))
	}
	return nil
}

// handBack saves what is counted when the coordinator stops, so that the
// next driver starts from it, at once.
func (d *driver) handBack(ctx context.Context) error {
	saveCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = d.checkpoint(saveCtx)
	return ctx.Err()
}

func (d *driver) publishProgress() {
	b, _ := messages.Encode(d.m.Progress(time.Now()))
	_ = d.c.nc.Publish(d.c.names.Progress(d.batch), b)
}

// release acks the token: the batch is finished. A lost ack only means a
// later coordinator finds the batch final, finds its aggregate out, and
// acks again.
func (d *driver) release() {
	st := d.m.State()
	took := time.Since(st.CreatedAt)
	if !st.FinishedAt.IsZero() {
		took = st.FinishedAt.Sub(st.CreatedAt)
	}
	d.c.cfg.Metrics.BatchFinished(d.req.Activity, string(st.Status), took)
	d.log.Info().Str("status", string(st.Status)).Int("succeeded", st.Succeeded).Int("failed", st.Failed).
		Int("total", st.Total).Str("reason", st.Reason).Msg("batch finished")
	if err := d.lease.Ack(); err != nil {
		d.log.Warn().Err(err).Msg("release batch token")
	}
	d.released = true
}

func (d *driver) close() {
	if d.reader != nil {
		d.reader.stop()
	}
	if d.results != nil {
		d.results.abort()
	}
	d.items.Close()
}

// retry runs fn until it succeeds, the batch is lost or ctx ends.
func (d *driver) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	for {
		err := fn(ctx)
		if err == nil || errors.Is(err, errLost) || ctx.Err() != nil {
			return err
		}
		if !errors.Is(err, errConflict) {
			d.log.Warn().Err(err).Msg(what + "; retrying")
			select {
			case <-time.After(250 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}
