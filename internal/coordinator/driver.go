package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/topology"
)

// errLost means another coordinator took the batch over: stop touching it.
var errLost = errors.New("batch taken over by another coordinator")

// errSettled means the token needs no driving (finished, or a duplicate).
var errSettled = errors.New("token settled")

// driver runs one batch: it publishes items through the window, counts
// results in results-stream order, checkpoints, and finishes the batch.
// All fields are owned by the driver's goroutine.
type driver struct {
	c     *Coordinator
	batch string
	log   zerolog.Logger
	tok   jetstream.Msg

	req   messages.BatchRequest
	st    *messages.BatchState
	rev   uint64
	epoch uint64

	// results holds per-item results while the batch runs, when it is small
	// enough and this driver has seen every result; nil otherwise.
	results *aggregate.Results
	// live writes a bigger batch's results to its results object while
	// they are counted (liveresults.go); liveRef is that object once done.
	live    *liveResults
	liveRef *messages.ObjectRef

	next         int          // next item to publish
	pending      []pendingPub // publishes not yet acknowledged, in item order
	sinceSave    int          // results counted since the last checkpoint
	dirty        bool
	lastProgress time.Time
	progressDone int // items done at the last progress event
	pokes        chan struct{}
	resultsIn    chan resultMsg
	stopResults  func()         // stops reading results; safe to call twice
	early        *resultsReader // started at accept, for consumeResults
	first        *driver        // the first window, published at accept
	step         *stepResult    // a step's result waiting to be handled
	items        *itemReader
	workHead     []byte // see workHead
	resumedFinal bool   // the batch was final when this driver took it
	itemsErr     error  // the items cannot be read: the batch fails

	// A watched batch (watch.go): hints of published results, and the
	// reads of stored results they call for.
	hints     chan *nats.Msg
	hinted    []bool
	nHinted   int
	sinceRead int       // hints since the last read
	readDue   bool      // read before waiting again
	lastRead  time.Time // the last read, for the periodic one
	rereads   int       // reads in a row that found fewer results than hinted
	readTimer *time.Timer
	readLater <-chan time.Time
	// floor is a results-stream sequence stored before the batch's first
	// work went out (0 if unknown): its reads start after it (watch.go).
	floor uint64

	// Auto packing (packing.go): handler times of the first results, and
	// unpack requests waiting to be handled.
	fresh       bool // this driver has driven the batch from its acceptance
	packDecided bool
	sampled     int
	sampledMS   float64
	unpacks     []unpackRequest
}

type stepResult struct {
	step messages.Step
	res  messages.ResultMessage
}

type pendingPub struct {
	item int
	msg  *nats.Msg
	fut  jetstream.PubAckFuture
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
	d := &driver{
		c: c, batch: batch, tok: tok,
		log:         c.log.With().Str("batch_id", batch).Logger(),
		pokes:       make(chan struct{}, 1),
		stopResults: func() {},
	}
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	defer stopHeartbeat()
	go d.heartbeat(hbCtx)

	c.register(d)
	defer c.unregister(d)
	c.cfg.Metrics.BatchStarted()
	defer c.cfg.Metrics.BatchStopped()
	defer func() {
		if d.st != nil {
			c.cfg.Metrics.Released(d.next - d.st.Succeeded - d.st.Failed)
		}
	}()

	defer func() {
		if d.early != nil { // not taken over by consumeResults
			d.early.stop()
		}
	}()
	err = d.load(ctx, meta.Sequence.Stream, meta.NumDelivered)
	if err == nil {
		err = d.run(ctx)
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
			if err := d.tok.InProgress(); err != nil {
				d.log.Warn().Err(err).Msg("token heartbeat")
			}
		}
	}
}

// load reads the batch state (creating it if the submitter did not get
// that far) and takes the batch over by raising its epoch.
func (d *driver) load(ctx context.Context, tokenSeq, delivered uint64) error {
	if delivered == 1 {
		if ab := d.c.takeAccepted(ctx, d.batch, tokenSeq); ab != nil {
			// The request this coordinator encoded into the token: no need
			// to decode it again.
			d.req = *ab.req
			ab.st.Owner = d.c.cfg.Name // saved with the first checkpoint
			d.st, d.rev, d.epoch, d.early, d.first, d.floor = ab.st, ab.rev, ab.st.Epoch, ab.results, ab.first, ab.floor
			d.fresh = true
			return nil
		}
	}
	if err := messages.Decode(d.tok.Data(), &d.req); err != nil || d.req.ID != d.batch {
		d.log.Error().Err(err).Msg("removing a batch token whose request cannot be read")
		_ = d.tok.TermWithReason("batch request unreadable")
		return errSettled
	}
	for {
		st, rev, err := d.c.state.Get(ctx, d.batch)
		if errors.Is(err, aggregate.ErrNotFound) {
			total := len(d.req.Items)
			if d.req.ItemsRef != nil {
				n, e := d.c.countItems(ctx, d.req.ItemsRef)
				if e != nil {
					return e
				}
				total = n
			}
			now := time.Now().UTC()
			st = &messages.BatchState{
				BatchID: d.batch, Activity: d.req.Activity, Status: messages.StatusRunning,
				Total: total, Options: d.req.Options, TokenSeq: tokenSeq, ItemsRef: d.req.ItemsRef,
				CreatedAt: now, UpdatedAt: now, RedriveOf: d.req.RedriveOf,
			}
			if d.req.Source != nil {
				st.Phase = messages.PhaseSource
			}
			if rev, err = d.c.state.Create(ctx, st); errors.Is(err, aggregate.ErrExists) {
				continue
			}
		}
		if err != nil {
			return err
		}
		if st.TokenSeq != tokenSeq {
			d.log.Warn().Uint64("token_seq", tokenSeq).Uint64("want_seq", st.TokenSeq).Msg("removing a duplicate batch token")
			_ = d.tok.TermWithReason("duplicate batch token")
			return errSettled
		}
		if !st.Status.Final() {
			// A driver may have published the aggregate and stopped
			// before saving the final state: the aggregate decided.
			out, err := d.c.publishedOutcome(ctx, d.batch)
			if err != nil {
				return err
			}
			if out != nil {
				out.Apply(st)
			}
		}
		if delivered > 1 || st.Owner != "" || st.Epoch == 0 {
			// Fence off every earlier driver. A state without an owner
			// on the token's first delivery was made by accept with the
			// epoch of this, the first driver.
			st.Epoch++
		}
		st.Owner = d.c.cfg.Name
		if st.StartedAt.IsZero() {
			st.StartedAt = time.Now().UTC()
		}
		rev, err = d.c.state.Update(ctx, st, rev)
		if errors.Is(err, aggregate.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		d.st, d.rev, d.epoch = st, rev, st.Epoch
		if delivered > 1 {
			d.log.Info().Uint64("epoch", st.Epoch).Int("succeeded", st.Succeeded).Int("failed", st.Failed).
				Uint64("last_seq", st.LastSeq).Msg("resuming batch from checkpoint")
		}
		return nil
	}
}

func (d *driver) run(ctx context.Context) error {
	st := d.st
	if st.Status.Final() {
		// Decided before a crash; the aggregate may be out already.
		d.resumedFinal = true
		return d.publishDone(ctx)
	}
	if st.CancelRequested {
		return d.finish(ctx, messages.StatusCanceled, "canceled by request")
	}
	d.next = st.Published
	if f := d.first; f != nil && st.Published == 0 {
		// Take over the first window's publishes made at accept.
		d.next, d.pending, d.itemsErr = f.next, f.pending, f.itemsErr
	}
	d.first = nil
	if st.Phase != messages.PhaseSource && st.LastSeq == 0 {
		if st.Total <= d.c.cfg.InMemoryResults {
			d.results = aggregate.NewResults(st.Total)
		} else if d.req.Reduce == nil {
			d.live = d.startLiveResults(ctx)
			defer func() {
				if d.live != nil {
					d.live.abort(errors.New("driver stopped"))
				}
			}()
		}
	}
	switch {
	case st.ItemsRef != nil:
		d.items = d.c.objectItems(st.ItemsRef)
	case d.req.Source != nil && st.Phase != messages.PhaseSource:
		if err := d.sourceItems(ctx); err != nil {
			return err
		}
	default:
		d.items = inlineItems(d.req.Items)
	}
	defer func() { d.items.Close() }()
	// Items first: the results reader starts from the checkpoint whenever
	// it is created, so nothing is missed, and the batch's first round
	// trip overlaps the reader's creation.
	d.fill(ctx)
	if err := d.consumeResults(ctx); err != nil {
		return err
	}
	defer func() { d.stopResults() }()
	switch st.Phase {
	case messages.PhaseSource:
		if err := d.publishStep(ctx, messages.StepSource); err != nil {
			return err
		}
	case messages.PhaseReduce:
		if err := d.publishStep(ctx, messages.StepReduce); err != nil {
			return err
		}
	}

	var deadline <-chan time.Time
	if t := st.Options.Timeout.Std(); t > 0 {
		timer := time.NewTimer(time.Until(st.CreatedAt.Add(t)))
		defer timer.Stop()
		deadline = timer.C
	}
	saveTick := time.NewTicker(d.c.cfg.CheckpointInterval)
	defer saveTick.Stop()
	stateTick := time.NewTicker(d.c.cfg.Lease / 4)
	defer stateTick.Stop()
	defer func() {
		if d.readTimer != nil {
			d.readTimer.Stop()
		}
	}()

	for {
		if d.readDue {
			d.readStored(ctx)
			d.fill(ctx)
		}
		if err := d.handleUnpacks(ctx); err != nil {
			return err
		}
		if d.step != nil {
			step, res := d.step.step, d.step.res
			d.step = nil
			end, why, err := d.onStep(ctx, step, &res)
			if err != nil {
				return err
			}
			if end != "" {
				return d.finish(ctx, end, why)
			}
		}
		if d.itemsErr != nil {
			return d.finish(ctx, messages.StatusFailed, "reading the items: "+d.itemsErr.Error())
		}
		if st.Phase == messages.PhaseItems || st.Phase == "" {
			// The failure policy first: the last results can cross it.
			if exceeded, why := aggregate.FailureExceeded(st); exceeded {
				return d.finish(ctx, messages.StatusFailed, why)
			}
			if aggregate.Done(st) {
				if d.req.Reduce == nil {
					return d.finish(ctx, messages.StatusCompleted, "")
				}
				if err := d.startReduce(ctx); err != nil {
					return err
				}
			}
		}
		select {
		case <-ctx.Done():
			d.confirmPublishes(ctx)
			saveCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = d.checkpoint(saveCtx)
			cancel()
			return ctx.Err()
		case msg := <-d.resultsIn:
			d.onResult(msg)
			// Take what else is waiting before the next checkpoint check.
			for n := 0; n < 256 && d.step == nil && len(d.unpacks) == 0; n++ {
				select {
				case msg := <-d.resultsIn:
					d.onResult(msg)
					continue
				default:
				}
				break
			}
			d.fill(ctx)
			if d.sinceSave >= d.c.cfg.CheckpointEvery {
				if err := d.save(ctx); err != nil {
					return err
				}
			}
		case <-saveTick.C:
			if d.hints != nil && (d.sinceRead > 0 || time.Since(d.lastRead) >= watchSafetyRead) {
				d.readStored(ctx)
			}
			d.fill(ctx) // picks up after a publish that failed
			if err := d.save(ctx); err != nil {
				return err
			}
		case <-stateTick.C:
			if err := d.refresh(ctx); err != nil {
				return err
			}
			d.fill(ctx)
		case <-d.pokes:
			if err := d.refresh(ctx); err != nil {
				return err
			}
			d.fill(ctx)
		case m := <-d.hints:
			d.hint(m)
			for n := 0; n < 256; n++ {
				select {
				case m := <-d.hints:
					d.hint(m)
					continue
				default:
				}
				break
			}
			if d.readWanted() {
				d.readStored(ctx)
			}
			d.fill(ctx)
			if d.sinceSave >= d.c.cfg.CheckpointEvery {
				if err := d.save(ctx); err != nil {
					return err
				}
			}
		case <-d.readLater:
			d.readLater = nil
			d.readStored(ctx)
			d.fill(ctx)
		case <-deadline:
			return d.finish(ctx, messages.StatusTimedOut, fmt.Sprintf("the batch timeout of %s passed", st.Options.Timeout.Std()))
		}
		if st.CancelRequested {
			return d.finish(ctx, messages.StatusCanceled, "canceled by request")
		}
	}
}

// consumeResults reads the batch's results in stream order from just after
// the checkpoint, with the reader started when the batch was accepted if
// there is one.
func (d *driver) consumeResults(ctx context.Context) error {
	r := d.early
	d.early = nil
	if r != nil {
		select {
		case <-r.ready:
		case <-ctx.Done():
			r.stop()
			return ctx.Err()
		}
		if r.err != nil || d.st.LastSeq != 0 || (r.hints != nil) != d.watchable() {
			r.stop()
			r = nil
		}
	}
	if r == nil && d.watchable() {
		r = d.c.watchResults(d.batch, d.st.Total)
		if r.err != nil {
			r = nil
		} else {
			d.readDue = true // results stored before the subscription
		}
	}
	if r == nil {
		r = d.c.readResults(d.batch, d.st.LastSeq)
		<-r.ready
		if r.err != nil {
			return r.err
		}
	}
	d.resultsIn, d.hints, d.stopResults = r.in, r.hints, r.stop
	if d.hints != nil {
		d.hinted = make([]bool, d.st.Total)
	}
	return nil
}

// resultMsg is a result read from the results stream: its subject, body
// and stream sequence.
type resultMsg struct {
	subject string
	data    []byte
	seq     uint64
}

// resultsReader delivers a batch's results in stream order (in), or, for a
// watched batch (watch.go), hints of results published (hints).
type resultsReader struct {
	ready chan struct{} // closed when the reader runs, or err is set
	err   error
	in    chan resultMsg
	hints chan *nats.Msg
	stop  func() // safe to call twice
}

// readResults starts reading a batch's results after stream sequence
// lastSeq. Creating the consumer is a slow round trip (about half a
// millisecond here), so the accepting coordinator starts it at once.
func (c *Coordinator) readResults(batch string, lastSeq uint64) *resultsReader {
	if c.onRead != nil {
		c.onRead(batch, lastSeq)
	}
	r := &resultsReader{ready: make(chan struct{}), in: make(chan resultMsg, 1024)}
	stop := make(chan struct{})
	var cc jetstream.ConsumeContext
	var mu sync.Mutex
	r.stop = sync.OnceFunc(func() {
		close(stop)
		mu.Lock()
		defer mu.Unlock()
		if cc != nil {
			cc.Stop()
		}
	})
	go func() {
		defer close(r.ready)
		ctx, cancel := context.WithTimeout(c.runCtx, 30*time.Second)
		defer cancel()
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{c.names.ResultBatchFilter(batch)}, InactiveThreshold: topology.ReaderIdle}
		if lastSeq > 0 {
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = lastSeq + 1
		}
		cons, err := c.stores.Results.OrderedConsumer(ctx, cfg)
		if err != nil {
			r.err = fmt.Errorf("results consumer: %w", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		select {
		case <-stop:
			r.err = errors.New("results reader stopped")
			return
		default:
		}
		cc, err = cons.Consume(func(m jetstream.Msg) {
			meta, err := m.Metadata()
			if err != nil {
				return
			}
			select {
			case r.in <- resultMsg{subject: m.Subject(), data: m.Data(), seq: meta.Sequence.Stream}:
			case <-stop:
			}
		}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Debug().Err(err).Str("batch_id", batch).Msg("results consumer")
		}))
		if err != nil {
			r.err = fmt.Errorf("results consumer: %w", err)
		}
	}()
	return r
}

func (d *driver) onResult(m resultMsg) {
	if d.c.floorReads { // a shared atomic per result: only where floors are used
		d.c.sawResults(m.seq)
	}
	var res messages.ResultMessage
	if err := messages.Decode(m.data, &res); err != nil {
		res = messages.ResultMessage{OK: false, Error: "result message was not valid JSON"}
	}
	if _, first, ok := d.c.names.ParseUnpackRequest(m.subject); ok {
		if m.seq > d.st.LastSeq { // else handled before a checkpoint
			u := unpackRequest{first: first, attempt: 1, seq: m.seq}
			if res.Unpack != nil {
				u.attempt = res.Unpack.Attempt
			}
			d.unpacks = append(d.unpacks, u)
		}
		return
	}
	if _, step, ok := d.c.names.ParseStepResult(m.subject); ok {
		d.st.LastSeq = max(d.st.LastSeq, m.seq)
		d.step = &stepResult{step: step, res: res}
		d.sinceSave++
		d.dirty = true
		return
	}
	_, item, ok := d.c.names.ParseResultSubject(m.subject)
	if !ok {
		item = -1
	}
	if aggregate.Apply(d.st, m.seq, item, res.OK) {
		d.c.cfg.Metrics.Counted(d.st.Activity, res.OK)
		d.observe(&res)
		if d.results != nil {
			d.results.Add(&res, item)
		}
		if d.live != nil && !d.live.add(item, &res) {
			d.log.Debug().Msg("results no longer written while counted; they will be read back at the end")
			d.live = nil
		}
	} else if item < 0 || item >= d.st.Total {
		d.log.Warn().Str("subject", m.subject).Msg("ignoring a result for an item this batch does not have")
	}
	d.sinceSave++
	d.dirty = true
}

// fill publishes items until the window is full.
func (d *driver) fill(ctx context.Context) {
	st := d.st
	if exceeded, _ := aggregate.FailureExceeded(st); exceeded || st.CancelRequested {
		return // the batch is ending: no more work for it
	}
	d.maybeAutoPack(ctx)
	for d.next < st.Total && d.next-(st.Succeeded+st.Failed) < st.Window() {
		// Groups (items_per_message, or auto packing) are a function of
		// the state, so a group republished after a crash has the same id
		// and is deduplicated.
		end, auto := groupEnd(st, d.next)
		form := formPlain
		switch {
		case auto && (d.next-st.PackFrom)%st.PackSize != 0:
			// Inside a group that went out item by item.
			end, form = d.next+1, formUnpacked
		case auto && end-d.next > 1:
			form = formAutoPack
		}
		msg, err := d.workMessage(d.next, end, 1, form)
		if err == nil && form == formAutoPack && len(msg.Data) > autoPackMaxBytes {
			// Too large to pack: item by item, as if unpacked.
			end = d.next + 1
			msg, err = d.workMessage(d.next, end, 1, formUnpacked)
		}
		if err != nil {
			d.itemsErr = err
			return
		}
		if err := d.publish(ctx, msg, d.next, end); err != nil {
			d.log.Warn().Err(err).Int("item", d.next).Msg("publishing work; will retry")
			return
		}
		d.next = end
	}
	d.confirmPublishes(ctx)
}

// workForm is how a work message names and describes its items.
type workForm int

const (
	formPlain    workForm = iota // one item, or an items_per_message group
	formAutoPack                 // an auto-packed group: "unpack": true
	formUnpacked                 // one item of an auto-packed group, on its own
)

// workMessage builds the work message of items [item, end), whose first
// delivery is the given attempt.
func (d *driver) workMessage(item, end, attempt int, form workForm) (*nats.Msg, error) {
	head := d.workHead
	if attempt != 1 {
		head = workHead(d.batch, d.st.Activity, d.st.Options, attempt)
	} else if head == nil {
		d.workHead = workHead(d.batch, d.st.Activity, d.st.Options, 1)
		head = d.workHead
	}
	// Encoded by hand: the message is the same for every item but for the
	// item and its input, and this runs once per item.
	data := make([]byte, 0, len(head)+64)
	data = append(data, head...)
	data = strconv.AppendInt(data, int64(item), 10)
	if end-item == 1 {
		input, err := d.items.Item(item)
		if err != nil {
			return nil, err
		}
		if data, err = d.appendInput(data, item, input); err != nil {
			return nil, err
		}
		data = append(data, '}')
	} else {
		if form == formAutoPack {
			data = append(data, `,"unpack":true`...)
		}
		data = append(data, `,"items":[`...)
		for i := item; i < end; i++ {
			input, err := d.items.Item(i)
			if err != nil {
				return nil, err
			}
			if i > item {
				data = append(data, ',')
			}
			data = strconv.AppendInt(append(data, `{"item":`...), int64(i), 10)
			if data, err = d.appendInput(data, i, input); err != nil {
				return nil, err
			}
			data = append(data, '}')
		}
		data = append(data, "]}"...)
	}
	msg := nats.NewMsg(d.c.names.Work(d.st.Activity, d.batch))
	msg.Data = data
	// The id makes a republish after a crash a no-op within the
	// stream's duplicate window.
	id := messages.WorkMsgID(d.batch, item)
	if form == formUnpacked {
		id = messages.UnpackedMsgID(d.batch, item)
	}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	return msg, nil
}

// appendInput appends ,"input":<input>, or for an input larger than the
// claim-check threshold, stores it in the object store and appends
// ,"input_ref":{...} instead.
func (d *driver) appendInput(data []byte, item int, input json.RawMessage) ([]byte, error) {
	if len(input) <= d.c.cfg.ClaimCheckBytes {
		return append(append(data, `,"input":`...), input...), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := messages.PayloadObject(d.batch, item, "in")
	info, err := d.c.blobs.PutBytes(ctx, name, input)
	if err != nil {
		return nil, fmt.Errorf("claim check of item %d: %w", item, err)
	}
	ref, _ := json.Marshal(messages.ObjectRef{Bucket: d.c.names.BlobBucket(), Name: name, Size: info.Size})
	return append(append(data, `,"input_ref":`...), ref...), nil
}

// workHead is the start of every work message of a batch, up to the item
// index: {"batch_id":…,"activity":…,"attempt":1,…,"item":
func workHead(batch, activity string, o messages.Options, attempt int) []byte {
	q := func(s string) []byte { b, _ := json.Marshal(s); return b }
	h := append([]byte(`{"batch_id":`), q(batch)...)
	h = append(append(h, `,"activity":`...), q(activity)...)
	h = strconv.AppendInt(append(h, `,"attempt":`...), int64(attempt), 10)
	h = strconv.AppendInt(append(h, `,"max_attempts":`...), int64(o.MaxAttempts), 10)
	if len(o.Backoff) > 0 {
		h = append(h, `,"backoff_ms":[`...)
		for i, b := range o.Backoff {
			if i > 0 {
				h = append(h, ',')
			}
			h = strconv.AppendInt(h, b.Std().Milliseconds(), 10)
		}
		h = append(h, ']')
	}
	h = strconv.AppendInt(append(h, `,"item_timeout_ms":`...), o.ItemTimeout.Std().Milliseconds(), 10)
	return append(h, `,"item":`...)
}

func (d *driver) publish(ctx context.Context, msg *nats.Msg, item, end int) error {
	d.c.keepWorkStream()
	fut, err := d.c.publishAsync(ctx, msg)
	if err != nil {
		return err
	}
	d.pending = append(d.pending, pendingPub{item: item, msg: msg, fut: fut})
	d.c.cfg.Metrics.Published(d.st.Activity, end-item)
	return nil
}

// confirmPublishes retires acknowledged publishes in item order and
// republishes failed ones, so that the checkpoint's Published only ever
// covers items the work stream has stored.
func (d *driver) confirmPublishes(ctx context.Context) {
	for len(d.pending) > 0 {
		p := d.pending[0]
		select {
		case <-p.fut.Ok():
		case err := <-p.fut.Err():
			d.log.Warn().Err(err).Int("item", p.item).Msg("work publish failed; republishing")
			for {
				_, err := d.c.js.PublishMsg(ctx, p.msg)
				if err == nil || ctx.Err() != nil {
					break
				}
				d.log.Warn().Err(err).Int("item", p.item).Msg("work republish failed")
				select {
				case <-time.After(250 * time.Millisecond):
				case <-ctx.Done():
				}
			}
			if ctx.Err() != nil {
				return
			}
		default:
			return
		}
		d.pending[0] = pendingPub{}
		d.pending = d.pending[1:]
	}
}

// published is how many leading items are known to be in the work stream.
func (d *driver) published() int {
	if len(d.pending) > 0 {
		return d.pending[0].item
	}
	return d.next
}

// save checkpoints if anything changed, and publishes progress when the
// counts moved since the last event and the throttle allows.
func (d *driver) save(ctx context.Context) error {
	d.confirmPublishes(ctx)
	if d.st.Published != d.published() {
		d.dirty = true
	}
	if d.dirty {
		if err := d.checkpoint(ctx); err != nil {
			if errors.Is(err, errLost) {
				return err
			}
			d.log.Warn().Err(err).Msg("checkpoint failed; will retry")
			return nil
		}
	}
	if done := d.st.Succeeded + d.st.Failed; done != d.progressDone && time.Since(d.lastProgress) >= d.c.cfg.ProgressInterval {
		d.publishProgress()
	}
	return nil
}

// checkpoint writes counts, stream position and published watermark in one
// compare-and-set update. A conflict with a request (cancel) merges it; a
// conflict with a newer epoch means the batch was lost.
func (d *driver) checkpoint(ctx context.Context) error {
	d.st.Published = max(d.st.Published, d.published())
	d.st.UpdatedAt = time.Now().UTC()
	for {
		rev, err := d.c.state.Update(ctx, d.st, d.rev)
		if err == nil {
			d.c.cfg.Metrics.Checkpointed(d.sinceSave)
			d.rev, d.dirty, d.sinceSave = rev, false, 0
			return nil
		}
		if !errors.Is(err, aggregate.ErrConflict) {
			return err
		}
		if err := d.merge(ctx); err != nil {
			return err
		}
	}
}

// merge reads the stored state after a conflict and takes over the fields
// that requests may set.
func (d *driver) merge(ctx context.Context) error {
	cur, rev, err := d.c.state.Get(ctx, d.batch)
	if err != nil {
		return err
	}
	if cur.Epoch != d.epoch {
		return errLost
	}
	d.takeRequests(cur)
	d.rev = rev
	return nil
}

// takeRequests adopts what requests may have changed in the stored state:
// a cancel, and the options (which only requests write).
func (d *driver) takeRequests(cur *messages.BatchState) {
	d.st.CancelRequested = d.st.CancelRequested || cur.CancelRequested
	d.st.Options = cur.Options
}

// refresh looks for requests and lost ownership without waiting for the
// next checkpoint.
func (d *driver) refresh(ctx context.Context) error {
	cur, rev, err := d.c.state.Get(ctx, d.batch)
	if err != nil {
		d.log.Warn().Err(err).Msg("reading batch state")
		return nil
	}
	if cur.Epoch != d.epoch {
		return errLost
	}
	if rev != d.rev {
		d.takeRequests(cur)
		d.rev = rev
	}
	return nil
}

func (d *driver) publishProgress() {
	p := d.st.Progress(time.Now())
	if !d.st.Status.Final() {
		p.InFlight = max(d.next-p.Done, 0)
	}
	b, _ := messages.Encode(p)
	_ = d.c.nc.Publish(d.c.names.Progress(d.batch), b)
	d.lastProgress = time.Now()
	d.progressDone = p.Done
}

// finish decides the batch's final status and publishes it (publishDone).
func (d *driver) finish(ctx context.Context, status messages.Status, reason string) error {
	d.confirmPublishes(ctx)
	d.st.Status = status
	d.st.Reason = reason
	d.st.FinishedAt = time.Now().UTC()
	return d.publishDone(ctx)
}

func (d *driver) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	for {
		err := fn(ctx)
		if err == nil || errors.Is(err, errLost) || ctx.Err() != nil {
			return err
		}
		d.log.Warn().Err(err).Msg(what + "; retrying")
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// publishDone ends a batch whose final status is decided: it removes the
// batch's queued work if it did not complete, publishes the aggregate,
// saves the final state and releases the token. The aggregate goes first,
// one round trip sooner to whoever waits for it, and it is the decision:
// the done stream keeps one per batch, and whoever finds one out (this
// driver after a refused publish, a driver taking the batch over, a status
// request) takes its outcome (aggregate.Outcome), so the state saved after
// it always agrees with it.
func (d *driver) publishDone(ctx context.Context) error {
	st := d.st
	if st.Status != messages.StatusCompleted {
		if err := d.retry(ctx, "remove queued work", func(ctx context.Context) error {
			return d.c.stores.Work.Purge(ctx, jetstream.WithPurgeSubject(d.c.names.PurgeBatchWork(d.batch)))
		}); err != nil {
			return err
		}
	}
	if err := d.retry(ctx, "publish aggregate", d.publishAggregate); err != nil {
		return err
	}
	// Stopped after the aggregate, not before: a watched batch's UNSUB
	// (a walk of the server's subscription cache) would go out first and
	// hold the aggregate up. What arrives meanwhile is not read.
	d.stopResults()
	if !d.resumedFinal { // else saved final already
		d.confirmPublishes(ctx)
		if st.Status == messages.StatusCompleted {
			// Every item has a result, so every item's work was stored,
			// whether or not its acknowledgement has come back yet.
			st.Published = st.Total
		}
		if err := d.retry(ctx, "save final state", d.checkpoint); err != nil {
			return err
		}
		d.c.cfg.Metrics.BatchFinished(string(st.Status))
		d.log.Info().Str("status", string(st.Status)).Int("succeeded", st.Succeeded).Int("failed", st.Failed).
			Int("total", st.Total).Str("reason", st.Reason).Msg("batch finished")
	}
	d.publishProgress()
	// A lost ack only means a later coordinator finds the batch final,
	// finds its aggregate out, and acks again.
	if err := d.tok.Ack(); err != nil {
		d.log.Warn().Err(err).Msg("release batch token")
	}
	return nil
}

func (d *driver) publishAggregate(ctx context.Context) error {
	st := d.st
	if d.resumedFinal {
		// Only a resumed batch can have its aggregate out already; a
		// second publish would be refused anyway, this saves building it.
		if _, err := d.c.stores.Done.GetLastMsgForSubject(ctx, d.c.names.Done(d.batch)); err == nil {
			return nil
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return err
		}
	}
	notRun := "batch " + string(st.Status)
	if st.Reason != "" {
		notRun += ": " + st.Reason
	}
	var output json.RawMessage
	if d.req.Reduce != nil && st.Status == messages.StatusCompleted {
		var err error
		if output, err = d.reduceOutput(ctx); err != nil {
			return err
		}
	}
	data, err := d.aggregateJSON(ctx, notRun, "results/", func(agg *messages.Aggregate) { agg.Output = output })
	if err != nil {
		return err
	}
	ack, err := d.c.js.Publish(ctx, d.c.names.Done(d.batch), data, jetstream.WithMsgID(messages.DoneMsgID(d.batch)))
	if topology.IsDuplicateResult(err) || (err == nil && ack.Duplicate) {
		// Published before (by a driver that lost the batch): that one
		// decided.
		out, err := d.c.publishedOutcome(ctx, d.batch)
		if err != nil || out == nil {
			return fmt.Errorf("read the aggregate published before: %w", err)
		}
		out.Apply(d.st)
		return nil
	}
	return err
}

// aggregateJSON encodes the batch's aggregate with its results in item
// order: inline when the batch is small enough to hold them in memory and
// they fit in one message, else streamed in item order to a JSON Lines
// object (name prefix + batch) that results_ref names, so that memory does
// not grow with the batch.
func (d *driver) aggregateJSON(ctx context.Context, notRun, prefix string, fill func(*messages.Aggregate)) ([]byte, error) {
	now := time.Now().UTC()
	if d.results != nil || d.st.Total <= d.c.cfg.InMemoryResults {
		results, err := d.collectResults(ctx, notRun)
		if err != nil {
			return nil, err
		}
		agg := aggregate.Build(d.st, results, now)
		fill(agg)
		return d.encodeAggregate(ctx, agg, prefix)
	}
	ref, err := d.streamResults(ctx, prefix, notRun)
	if err != nil {
		return nil, err
	}
	agg := aggregate.Build(d.st, nil, now)
	agg.ResultsRef = ref
	fill(agg)
	return messages.Encode(agg)
}

// streamResults writes the results in item order to the object store.
func (d *driver) streamResults(ctx context.Context, prefix, notRun string) (*messages.ObjectRef, error) {
	if prefix == "results/" {
		if d.live != nil {
			ref, err := d.live.finish(d.c.names.BlobBucket(), notRun)
			d.live = nil
			if err == nil {
				d.liveRef = ref
			} else {
				d.log.Warn().Err(err).Msg("results written while counted were not stored; reading them back")
			}
		}
		if d.liveRef != nil {
			return d.liveRef, nil
		}
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(aggregate.WriteOrdered(ctx, d.c.stores.Results, d.c.names, d.batch, d.st.LastSeq, d.st.Total, notRun, pw))
	}()
	name := prefix + d.batch + ".jsonl"
	info, err := d.c.blobs.Put(ctx, jetstream.ObjectMeta{Name: name}, pr)
	_ = pr.CloseWithError(err) // unblocks the writer if Put gave up
	if err != nil {
		return nil, fmt.Errorf("store results: %w", err)
	}
	return &messages.ObjectRef{Bucket: d.c.names.BlobBucket(), Name: name, Size: info.Size}, nil
}

// collectResults returns the per-item results counted so far in item
// order, from memory or read back from the results stream.
func (d *driver) collectResults(ctx context.Context, notRun string) ([]messages.ItemResult, error) {
	results := d.results
	if results == nil {
		results = aggregate.NewResults(d.st.Total)
		if err := aggregate.ReadResults(ctx, d.c.stores.Results, d.c.names, d.batch, d.st.LastSeq, results); err != nil {
			return nil, err
		}
	}
	return results.Final(notRun), nil
}

// encodeAggregate encodes an aggregate, moving its results to the object
// store (under prefix) when it would not fit in one message.
func (d *driver) encodeAggregate(ctx context.Context, agg *messages.Aggregate, prefix string) ([]byte, error) {
	data, err := messages.Encode(agg)
	if err != nil {
		return nil, err
	}
	if limit := d.c.nc.MaxPayload() - 8*1024; int64(len(data)) > limit {
		ref, err := d.storeResults(ctx, prefix, agg.Results)
		if err != nil {
			return nil, err
		}
		agg.Results, agg.ResultsRef = nil, ref
		if data, err = messages.Encode(agg); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// storeResults writes results too large for one message to the object
// store as JSON Lines in item order.
func (d *driver) storeResults(ctx context.Context, prefix string, results []messages.ItemResult) (*messages.ObjectRef, error) {
	var buf []byte
	for i := range results {
		line, err := messages.Encode(&results[i])
		if err != nil {
			return nil, err
		}
		buf = append(append(buf, line...), '\n')
	}
	name := prefix + d.batch + ".jsonl"
	info, err := d.c.blobs.PutBytes(ctx, name, buf)
	if err != nil {
		return nil, fmt.Errorf("store results: %w", err)
	}
	return &messages.ObjectRef{Bucket: d.c.names.BlobBucket(), Name: name, Size: info.Size}, nil
}
