package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/internal/attempt"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/objects"
	"github.com/fanoutdev/fanout/internal/topology"
	"github.com/fanoutdev/fanout/internal/tracing"
)

// Worker pulls items for the activities it has handlers for, runs them with
// bounded concurrency and publishes one result per item.
type Worker struct {
	nc    *nats.Conn
	cfg   config
	names messages.Names
	log   zerolog.Logger

	handlers   map[string]Handler
	middleware []Middleware
	regErr     error

	js       jetstream.JetStream
	pullers  []*puller
	jobs     chan job        // held messages on their way to the slot goroutines
	inUse    atomic.Int32    // slots running a work message
	running  sync.WaitGroup  // the slot goroutines
	runners  runners         // goroutines that run handlers (attempt.Call)
	acks     chan pendingAck // settled work waiting for its results' acks
	acksDone chan struct{}
	blobsMu  sync.Mutex
	blobs    map[string]jetstream.ObjectStore // for claim checks, by bucket
	draining atomic.Bool                      // set when Stop begins
	// handlerCtx is canceled when Stop gives up waiting for handlers.
	handlerCtx    context.Context
	cancelHandler context.CancelFunc
	started       bool
	ready         atomic.Bool
	stopOnce      sync.Once
	stopped       chan struct{}
	presence      *presence // heartbeats for `fanout workers` (presence.go)
	tracer        trace.Tracer
	tracing       bool          // the tracer records spans
	queued        QueueObserver // the observer, when it takes queue waits
}

// New makes a worker on an established connection. Register handlers,
// then Start or Run it. The worker does not close nc.
func New(nc *nats.Conn, opts ...Option) (*Worker, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	names, err := messages.NewNames(cfg.prefix)
	if err != nil {
		return nil, err
	}
	queued, _ := cfg.observer.(QueueObserver)
	return &Worker{
		nc: nc, cfg: cfg, names: names,
		log:      cfg.logger.With().Str("component", "worker").Str("worker", cfg.name).Logger(),
		handlers: map[string]Handler{},
		stopped:  make(chan struct{}),
		tracer:   tracing.Tracer(cfg.tracerProvider),
		tracing:  tracing.Recording(cfg.tracerProvider),
		queued:   queued,
	}, nil
}

// Handle registers the handler of an activity. Registering a name twice,
// or a name that is not a valid activity name, makes Start fail.
func (w *Worker) Handle(activity string, h Handler) {
	switch {
	case !messages.ValidToken(activity):
		w.regErr = errors.Join(w.regErr, fmt.Errorf("activity %q: must be 1-64 characters of A-Z a-z 0-9 _ -", activity))
	case w.handlers[activity] != nil:
		w.regErr = errors.Join(w.regErr, fmt.Errorf("activity %q: registered twice", activity))
	case h == nil:
		w.regErr = errors.Join(w.regErr, fmt.Errorf("activity %q: nil handler", activity))
	default:
		w.handlers[activity] = h
	}
}

// HandleFunc registers a function as the handler of an activity.
func (w *Worker) HandleFunc(activity string, fn func(ctx context.Context, input json.RawMessage) (json.RawMessage, error)) {
	w.Handle(activity, HandlerFunc(fn))
}

// Use adds middleware around every handler, the first given outermost.
func (w *Worker) Use(mw ...Middleware) { w.middleware = append(w.middleware, mw...) }

// Activities lists the registered activity names.
func (w *Worker) Activities() []string {
	out := make([]string, 0, len(w.handlers))
	for a := range w.handlers {
		out = append(out, a)
	}
	return out
}

// Run starts the worker and blocks until ctx is done, then drains it.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), w.cfg.shutdownTimeout+5*time.Second)
	defer cancel()
	return w.Stop(stopCtx)
}

// Start creates the streams if missing and one shared consumer per
// activity, and begins taking items. It returns once items flow.
func (w *Worker) Start(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	if w.regErr != nil {
		return w.regErr
	}
	if len(w.handlers) == 0 {
		return errors.New("worker: no handlers registered")
	}
	// The ack loop waits on each result's publish; the timeout makes a lost
	// answer an error rather than a wait forever.
	js, err := topology.JetStream(w.nc, w.cfg.domain, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return err
	}
	w.js = js
	work, err := topology.EnsureWorker(ctx, js, w.names, topology.Config{Replicas: w.cfg.replicas, Memory: w.cfg.memory})
	if err != nil {
		return err
	}
	w.acks = make(chan pendingAck, 4*w.cfg.concurrency)
	w.acksDone = make(chan struct{})
	go w.ackLoop()
	w.handlerCtx, w.cancelHandler = context.WithCancel(context.Background())
	w.runners = runners{jobs: make(chan func()), quit: make(chan struct{})}
	prefetch := w.cfg.prefetch
	if prefetch == 0 {
		prefetch = w.cfg.concurrency
	}
	capacity := w.cfg.concurrency + prefetch // per activity: running plus waiting
	// Room for every message the pullers can hold: handing one to the
	// slots never blocks.
	w.jobs = make(chan job, capacity*len(w.handlers))
	for range w.cfg.concurrency {
		w.running.Add(1)
		go w.slot()
	}
	for activity, handler := range w.handlers {
		for i := len(w.middleware) - 1; i >= 0; i-- {
			handler = w.middleware[i](handler)
		}
		maxAckPending := w.cfg.maxAckPending
		if n, ok := w.cfg.limits[activity]; ok {
			maxAckPending = n
		}
		cons, err := work.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       w.names.WorkConsumer(activity),
			Description:   "fanout workers of activity " + activity,
			FilterSubject: w.names.WorkActivityFilter(activity),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       w.cfg.ackWait,
			// Attempts are counted by the workers (max_attempts is per
			// batch); the server only has to keep redelivering.
			MaxDeliver:    -1,
			MaxAckPending: maxAckPending,
		})
		if err != nil {
			w.abortStart()
			return fmt.Errorf("consumer for activity %q: %w", activity, err)
		}
		p, err := w.startPuller(activity, handler, w.names.WorkStream(), cons.CachedInfo().Name, capacity, max(1, prefetch/2))
		if err != nil {
			w.abortStart()
			return fmt.Errorf("consume activity %q: %w", activity, err)
		}
		w.pullers = append(w.pullers, p)
	}
	w.started = true
	w.ready.Store(true)
	w.presence = w.startPresence(ctx)
	w.log.Info().Strs("activities", w.Activities()).Int("concurrency", w.cfg.concurrency).Msg("worker started")
	return nil
}

// abortStart undoes a Start that failed half way.
func (w *Worker) abortStart() {
	w.stopConsumers()
	close(w.jobs)
	w.running.Wait()
	close(w.acks)
	<-w.acksDone
	close(w.runners.quit)
	w.cancelHandler()
}

// stopConsumers stops taking work; once it returns, every message taken is
// in the jobs channel or a slot.
func (w *Worker) stopConsumers() {
	var wg sync.WaitGroup
	for _, p := range w.pullers {
		wg.Go(p.stop)
	}
	wg.Wait()
}

// Stop drains the worker: no new items are taken; items running and items
// already taken ahead (the prefetch) run to their end and publish their
// results (up to the shutdown timeout; then they are canceled and go back to
// the queue). Taken items are not handed back at once because a hand-back
// raises the delivery count, which is the item's attempt number. A second
// Stop is harmless. It does not close the connection.
func (w *Worker) Stop(ctx context.Context) error {
	var err error
	w.stopOnce.Do(func() {
		defer close(w.stopped)
		if !w.started {
			return
		}
		w.ready.Store(false)
		w.draining.Store(true)
		// Stop pulling; what was already taken runs to its end (up to the
		// shutdown timeout), its results published and acked.
		done := make(chan struct{})
		go func() {
			w.stopConsumers() // every message taken is now in jobs or a slot
			close(w.jobs)
			w.running.Wait()
			close(w.acks) // nothing settles any more
			<-w.acksDone
			close(w.runners.quit)
			close(done)
		}()
		timeout := time.NewTimer(w.cfg.shutdownTimeout)
		defer timeout.Stop()
		select {
		case <-done:
		case <-timeout.C:
			w.log.Warn().Msg("shutdown timeout: canceling running handlers")
			w.cancelHandler()
			select {
			case <-done:
			case <-ctx.Done():
				err = ctx.Err()
			}
		case <-ctx.Done():
			w.cancelHandler()
			err = ctx.Err()
		}
		w.cancelHandler()
		w.presence.stop()
		w.log.Info().Msg("worker stopped")
	})
	return err
}

// Stopped is closed when Stop has finished.
func (w *Worker) Stopped() <-chan struct{} { return w.stopped }

// Ready reports why the worker cannot take items, or nil: it must be
// started, connected, and its activities' consumers must exist.
func (w *Worker) Ready(ctx context.Context) error {
	if !w.ready.Load() {
		return errors.New("not started")
	}
	if !w.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	for activity := range w.handlers {
		if _, err := w.js.Consumer(ctx, w.names.WorkStream(), w.names.WorkConsumer(activity)); err != nil {
			return fmt.Errorf("consumer for activity %q: %w", activity, err)
		}
	}
	return nil
}

// job is a delivered work message on its way to a slot.
type job struct {
	activity      string
	h             Handler
	msg           *nats.Msg
	stopHeartbeat func()
	done          func() // the message is settled: its room is free
}

// slot runs work messages one at a time until Stop. The slots are
// long-lived goroutines rather than one per message, whose small stack
// would grow again for every item (JSON encoders use deep frames):
// copying stacks was 18% of the CPU of a run with them.
func (w *Worker) slot() {
	defer w.running.Done()
	for j := range w.jobs {
		if w.handlerCtx.Err() != nil {
			// Stop gave up waiting: hand it back. Items taken before Stop
			// began are otherwise run, not handed back: a hand-back
			// raises the delivery count, which is the attempt number.
			j.stopHeartbeat()
			_ = j.msg.Nak()
			j.done()
			continue
		}
		w.inUse.Add(1)
		w.process(j.activity, j.h, j.msg, j.stopHeartbeat)
		w.inUse.Add(-1)
		j.done()
	}
}

// process runs one delivery of a work message (one item, or a group of
// items when the batch packs several per message) and settles it: results
// published then an ack, or a nak for a retry.
func (w *Worker) process(activity string, h Handler, msg *nats.Msg, stopHeartbeat func()) {
	defer stopHeartbeat()
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Warn().Err(err).Msg("work message without metadata")
		return
	}
	var wm messages.WorkMessage
	err = messages.Decode(msg.Data, &wm)
	items := wm.Items
	if len(items) == 0 {
		items = []messages.WorkItem{{Item: wm.Item, Input: wm.Input, InputRef: wm.InputRef}}
	}
	if err != nil || !messages.ValidToken(wm.BatchID) || slices.ContainsFunc(items, func(it messages.WorkItem) bool { return it.Item < 0 }) {
		w.log.Error().Err(err).Str("subject", msg.Subject).Msg("removing a work message that cannot be read")
		_ = term(msg, "work message unreadable")
		return
	}
	log := w.log.With().Str("batch_id", wm.BatchID).Int("item", items[0].Item).Logger()
	delivered := meta.NumDelivered
	attempt := int(delivered) + max(wm.Attempt, 1) - 1
	maxAttempts := max(wm.MaxAttempts, 1)
	results := make([]messages.ResultMessage, 0, len(items))
	mt := w.msgTrace(msg, activity)
	var traces []trace.SpanContext // of results[i], when mt is on
	if mt.on {
		traces = make([]trace.SpanContext, 0, len(items))
	}

	if attempt > maxAttempts {
		// Every earlier delivery was lost: its worker crashed or hung past
		// the ack wait. That was the last attempt allowed.
		for _, it := range items {
			reason := fmt.Sprintf("gave up after %d attempts: the worker running the item crashed or stopped answering each time", maxAttempts)
			results = append(results, messages.ResultMessage{
				BatchID: wm.BatchID, Item: it.Item, Step: wm.Step, Worker: w.cfg.name, Attempts: attempt - 1,
				Error: reason,
			})
			if mt.on {
				traces = append(traces, w.gaveUpSpan(&mt, &wm, it.Item, attempt-1, maxAttempts, reason))
			}
		}
		w.settle(msg, results, traces, log)
		return
	}
	if len(items) > 1 && wm.Unpack && delivered > 1 {
		// A group the coordinator packed on its own, delivered again: its
		// last delivery was lost or asked for a retry. Rather than run the
		// group again (an item that crashes its worker would take the
		// others down with it, attempt after attempt), ask the coordinator
		// to send each item still without a result on its own.
		log.Debug().Int("attempt", attempt).Msg("asking to unpack a group delivered again")
		w.settle(msg, []messages.ResultMessage{{
			BatchID: wm.BatchID, Item: wm.Item, Worker: w.cfg.name, Attempts: attempt - 1,
			Unpack: &messages.UnpackRequest{Attempt: attempt},
		}}, nil, log)
		return
	}

	retry := time.Duration(-1)
	for _, it := range items {
		if w.queued != nil && delivered == 1 {
			w.queued.ItemQueued(activity, time.Since(meta.Timestamp))
		}
		res, sc, retryAfter, abort := w.runItem(activity, h, &wm, it, attempt, maxAttempts, &mt, log)
		if abort {
			// Shutting down: give the message back without using an attempt's result.
			_ = msg.Nak()
			return
		}
		if retryAfter >= 0 {
			retry = max(retry, retryAfter)
			continue
		}
		results = append(results, res)
		if mt.on {
			traces = append(traces, sc)
		}
	}
	stopHeartbeat()
	if retry >= 0 {
		// Record what finished, then run the message again later: every item
		// in it runs again, and results already recorded are refused.
		if len(results) > 0 && !w.publishResults(results, traces, log) {
			_ = msg.NakWithDelay(time.Second)
			return
		}
		_ = msg.NakWithDelay(retry)
		return
	}
	w.settle(msg, results, traces, log)
}

// runItem runs one attempt of one item. It returns the item's result and
// the context of its span, or a retry delay >= 0 when the item should run
// again, or abort when the worker is shutting down.
func (w *Worker) runItem(activity string, h Handler, wm *messages.WorkMessage, it messages.WorkItem, attemptN, maxAttempts int, mt *msgTrace, log zerolog.Logger) (res messages.ResultMessage, sc trace.SpanContext, retry time.Duration, abort bool) {
	res = messages.ResultMessage{BatchID: wm.BatchID, Item: it.Item, Step: wm.Step, Worker: w.cfg.name, Attempts: attemptN}
	timeout := time.Duration(wm.ItemTimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = messages.DefaultItemTimeout
	}
	ctx, cancel := context.WithTimeout(w.handlerCtx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	ctx = WithInfo(ctx, Info{
		BatchID: wm.BatchID, Item: it.Item, Activity: activity,
		Attempt: attemptN, MaxAttempts: maxAttempts,
		IdempotencyKey: messages.IdempotencyKey(wm.BatchID, it.Item), Deadline: deadline,
		Step: string(wm.Step),
	})
	ctx, span := w.startItem(ctx, mt, wm, it.Item, attemptN, maxAttempts)
	if w.cfg.observer != nil {
		w.cfg.observer.ItemStarted(activity, attemptN)
	}
	start := time.Now()
	input, err := w.claimInput(ctx, it)
	var out json.RawMessage
	if err == nil {
		out, err = attempt.Call(ctx, h.Handle, input, timeout, w.runners.do)
	}
	if err == nil && len(out) > w.cfg.claimCheck && messages.Valid(out) {
		var ref *messages.ObjectRef
		if ref, err = w.claimOutput(ctx, wm, it.Item, out); err == nil {
			res.OutputRef, out = ref, nil
		}
	}
	elapsed := time.Since(start)
	res.DurationMS = float64(elapsed.Microseconds()) / 1000
	outcome := "retried"
	defer func() {
		if w.cfg.observer != nil {
			w.cfg.observer.ItemFinished(activity, outcome, elapsed)
		}
	}()
	if err == nil && out != nil && !messages.Valid(out) {
		err = attempt.ErrNotJSON
	}
	if err == nil {
		res.OK, res.Output = true, out
		outcome = "succeeded"
		return res, endItem(span, outcome, nil), -1, false
	}
	if w.handlerCtx.Err() != nil {
		endItem(span, "canceled", err)
		return res, sc, -1, true
	}
	again, delay, recorded := attempt.Decide(err, attemptN, maxAttempts, backoff(wm.BackoffMS, attemptN))
	if !again {
		res.Error = recorded
		outcome = "failed"
		log.Debug().Err(err).Int("item", it.Item).Int("attempt", attemptN).Msg("item failed")
		return res, endItem(span, outcome, err), -1, false
	}
	log.Debug().Err(err).Int("item", it.Item).Int("attempt", attemptN).Stringer("delay", delay).Msg("item will be retried")
	return res, endItem(span, outcome, err), delay, false
}

// claimInput returns an item's input, fetched from the object store when
// the coordinator sent a reference (claim check).
func (w *Worker) claimInput(ctx context.Context, it messages.WorkItem) (json.RawMessage, error) {
	if it.InputRef == nil {
		return it.Input, nil
	}
	ref := *it.InputRef
	ref.Bucket = cmp.Or(ref.Bucket, w.names.BlobBucket())
	b, err := objects.ReadRef(ctx, w.js, &ref)
	if err != nil {
		return nil, fmt.Errorf("claim check: fetching input: %w", err)
	}
	return b, nil
}

// claimOutput stores an output too large for a result message.
func (w *Worker) claimOutput(ctx context.Context, wm *messages.WorkMessage, item int, out json.RawMessage) (*messages.ObjectRef, error) {
	bucket := w.names.BlobBucket()
	obs, err := w.objectStore(ctx, bucket)
	if err != nil {
		return nil, err
	}
	name := messages.PayloadObject(wm.BatchID, item, "out")
	if wm.Step != "" {
		name = messages.PayloadObject(wm.BatchID, 0, string(wm.Step)+".out")
	}
	info, err := obs.PutBytes(ctx, name, out)
	if err != nil {
		return nil, fmt.Errorf("claim check: storing output: %w", err)
	}
	return &messages.ObjectRef{Bucket: bucket, Name: name, Size: info.Size, Digest: info.Digest}, nil
}

func (w *Worker) objectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error) {
	w.blobsMu.Lock()
	defer w.blobsMu.Unlock()
	if obs, ok := w.blobs[bucket]; ok {
		return obs, nil
	}
	obs, err := w.js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("claim check: object store %s: %w", bucket, err)
	}
	if w.blobs == nil {
		w.blobs = map[string]jetstream.ObjectStore{}
	}
	w.blobs[bucket] = obs
	return obs, nil
}

func backoff(ms []int64, attempt int) time.Duration {
	if len(ms) == 0 {
		return 0
	}
	i := min(max(attempt, 1), len(ms)) - 1
	return time.Duration(ms[i]) * time.Millisecond
}

// runners is a pool of goroutines that run handlers for attempt.Call: an
// idle one takes the next, else a new one starts. Reused goroutines keep
// their grown stacks (see slot): with a new goroutine per item, 100,000
// sha256 items cost 41-42 µs of CPU each, against 31-33 µs. A runner stuck in a hung handler is simply
// not idle; the rest end when quit is closed.
type runners struct {
	jobs chan func()
	quit chan struct{}
}

func (r *runners) do(fn func()) {
	select {
	case r.jobs <- fn:
	default:
		go r.loop(fn)
	}
}

func (r *runners) loop(fn func()) {
	for {
		fn()
		select {
		case fn = <-r.jobs:
		case <-r.quit:
			return
		}
	}
}

// heartbeat tells the server the item is still being worked on, so that a
// long item is not redelivered while its worker lives.
func (w *Worker) heartbeat(msg *nats.Msg) (stop func()) {
	every := w.cfg.ackWait / 3
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = msg.InProgress()
		t.Reset(every)
	})
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		t.Stop()
	}
}

// settle publishes the results of a work message, and has the ack loop
// ack it once the server has stored them (or refused them as already
// recorded: the item is counted once, by its first result). The handler's
// slot is free meanwhile: a publish round trip does not hold up the next
// item.
func (w *Worker) settle(msg *nats.Msg, results []messages.ResultMessage, traces []trace.SpanContext, log zerolog.Logger) {
	futures, ok := w.publishAsync(results, traces, log)
	if !ok {
		log.Warn().Msg("results not published; the work will be delivered again")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	w.acks <- pendingAck{msg: msg, futures: futures, log: log}
}

type pendingAck struct {
	msg     *nats.Msg
	futures []jetstream.PubAckFuture
	log     zerolog.Logger
}

// afterResultsStored runs between the server storing a work message's
// results and the ack of that message. It does nothing, except in builds
// with the fanout_faults tag (faults.go), where the fault-injection tests
// use it to exit the process at that moment.
var afterResultsStored = func() {}

// ackLoop acks work messages in the order they were settled, each once its
// results are stored. It ends when acks is closed.
func (w *Worker) ackLoop() {
	defer close(w.acksDone)
	for p := range w.acks {
		if w.awaitStored(p.futures, p.log) {
			afterResultsStored()
			if err := p.msg.Ack(); err != nil {
				p.log.Debug().Err(err).Msg("ack")
			}
		} else {
			p.log.Warn().Msg("results not stored; the work will be delivered again")
			_ = p.msg.NakWithDelay(time.Second)
		}
	}
}

// publishResults publishes results and waits for the server to store them
// (or to refuse them as already recorded). It reports whether all are in.
func (w *Worker) publishResults(results []messages.ResultMessage, traces []trace.SpanContext, log zerolog.Logger) bool {
	futures, ok := w.publishAsync(results, traces, log)
	return ok && w.awaitStored(futures, log)
}

// publishAsync publishes results, each with the trace context of traces[i]
// when traces is not nil.
func (w *Worker) publishAsync(results []messages.ResultMessage, traces []trace.SpanContext, log zerolog.Logger) ([]jetstream.PubAckFuture, bool) {
	futures := make([]jetstream.PubAckFuture, 0, len(results))
	for i := range results {
		var f jetstream.PubAckFuture
		var err error
		if i < len(traces) && traces[i].IsValid() {
			f, err = w.js.PublishMsgAsync(resultMsg(w.resultSubject(&results[i]), w.encodeResult(&results[i]), traces[i]))
		} else {
			f, err = w.js.PublishAsync(w.resultSubject(&results[i]), w.encodeResult(&results[i]))
		}
		if err != nil {
			log.Warn().Err(err).Msg("publish result")
			return nil, false
		}
		futures = append(futures, f)
	}
	return futures, true
}

// awaitStored waits for the server's answer to each publish.
func (w *Worker) awaitStored(futures []jetstream.PubAckFuture, log zerolog.Logger) bool {
	ok := true
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if !topology.IsDuplicateResult(err) {
				log.Warn().Err(err).Msg("publish result")
				ok = false
			}
		}
	}
	return ok
}

func (w *Worker) resultSubject(res *messages.ResultMessage) string {
	if res.Unpack != nil {
		return w.names.UnpackRequest(res.BatchID, res.Item)
	}
	if res.Step != "" {
		return w.names.StepResult(res.BatchID, res.Step)
	}
	return w.names.Result(res.BatchID, res.Item)
}

// encodeResult encodes a result, replacing one too large for a message by
// a failed result that says so.
func (w *Worker) encodeResult(res *messages.ResultMessage) []byte {
	data, err := messages.Encode(res)
	depth := messages.Depth(res.Output)
	if err != nil || int64(len(data)) > w.nc.MaxPayload()-1024 || depth > messages.MaxValueDepth {
		reason := fmt.Sprintf("result of %d bytes is larger than the server's max_payload of %d", len(data), w.nc.MaxPayload())
		switch {
		case err != nil:
			reason = "encode result: " + err.Error()
		case depth > messages.MaxValueDepth:
			// The aggregate that carries it must be readable by every client.
			reason = fmt.Sprintf("output nested %d levels deep; outputs may nest at most %d levels", depth, messages.MaxValueDepth)
		}
		failed := messages.ResultMessage{
			BatchID: res.BatchID, Item: res.Item, Step: res.Step, Attempts: res.Attempts, Worker: res.Worker, DurationMS: res.DurationMS,
			Error: reason,
		}
		data, _ = json.Marshal(&failed)
	}
	return data
}
