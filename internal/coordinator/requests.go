package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/topology"
)

const requestTimeout = 10 * time.Second

// activityTTL is how long a seen work consumer counts as a known activity.
const activityTTL = 30 * time.Second

func (c *Coordinator) reply(m *nats.Msg, v any) {
	if m.Reply == "" {
		return
	}
	// Answer only to inboxes: a reply subject inside JetStream's API or
	// fanout's own subjects would make the coordinator write there with its
	// rights on behalf of whoever asked.
	if strings.HasPrefix(m.Reply, "$") || strings.HasPrefix(m.Reply, c.names.Prefix+".") {
		c.log.Warn().Str("subject", m.Subject).Str("reply", m.Reply).Msg("refusing to reply to a non-inbox subject")
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(messages.ErrorReply{Error: messages.Errorf(messages.CodeInternal, "encode reply: %v", err)})
	}
	if err := m.Respond(b); err != nil {
		c.log.Warn().Err(err).Str("subject", m.Subject).Msg("reply not sent")
	}
}

func (c *Coordinator) replyError(m *nats.Msg, e *messages.Error) {
	c.log.Info().Str("subject", m.Subject).Str("code", e.Code).Str("error", e.Message).Msg("request refused")
	c.reply(m, messages.ErrorReply{Error: e})
}

func unavailable(err error) *messages.Error {
	return messages.Errorf(messages.CodeUnavailable, "JetStream did not answer, retry: %v", err)
}

// handleSubmit validates a batch, stores it durably (its token on the
// control stream, its state in the bucket) and only then replies.
func (c *Coordinator) handleSubmit(m *nats.Msg) {
	ctx, cancel := context.WithTimeout(c.runCtx, requestTimeout)
	defer cancel()
	req, e := messages.DecodeBatchRequest(m.Data, c.limits)
	if e != nil {
		c.replyError(m, e)
		return
	}
	c.replyAccept(ctx, m, req)
}

func (c *Coordinator) replyAccept(ctx context.Context, m *nats.Msg, req messages.BatchRequest) {
	r, e := c.accept(ctx, req)
	if e != nil {
		c.replyError(m, e)
		return
	}
	c.reply(m, r)
}

// accept stores a valid batch request: its token first (the server keeps
// one per batch id), then its state. A repeated id answers with the batch
// that has it.
func (c *Coordinator) accept(ctx context.Context, req messages.BatchRequest) (*messages.SubmitReply, *messages.Error) {
	if req.ID != "" {
		if st, _, err := c.state.Get(ctx, req.ID); err == nil {
			return c.existingReply(ctx, st)
		} else if !errors.Is(err, aggregate.ErrNotFound) {
			return nil, unavailable(err)
		}
	}
	for _, a := range []*messages.StepSpec{{Activity: req.Activity}, req.Source, req.Reduce} {
		if a == nil {
			continue
		}
		if e := c.checkActivity(ctx, a.Activity); e != nil {
			return nil, e
		}
	}
	total := len(req.Items)
	if req.ItemsRef != nil {
		var e *messages.Error
		if total, e = c.countItems(ctx, req.ItemsRef); e != nil {
			return nil, e
		}
	}
	if req.Options.Timeout == 0 {
		// A batch must end within the retention to be counted exactly.
		req.Options.Timeout = messages.Duration(c.cfg.DefaultTimeout)
		if req.Options.Timeout == 0 {
			req.Options.Timeout = messages.Duration(c.cfg.retention())
		}
	}
	ownID := req.ID == ""
	if ownID {
		req.ID = uuid.NewString()
	}
	body, err := messages.EncodeBatchRequest(&req)
	if err != nil {
		return nil, messages.Errorf(messages.CodeInternal, "encode batch: %v", err)
	}
	if int64(len(body)) > c.nc.MaxPayload() {
		return nil, messages.Errorf(messages.CodeTooLarge, "the batch is %d bytes once stored, over the server's max_payload of %d; send fewer or smaller items", len(body), c.nc.MaxPayload())
	}
	watch := c.watchableRequest(&req)
	handOff := c.expectToken(&req, watch, c.resultsFloor(ctx, watch))
	now := time.Now().UTC()
	st := &messages.BatchState{
		BatchID: req.ID, Activity: req.Activity, Status: messages.StatusRunning,
		Total: total, Options: req.Options, ItemsRef: req.ItemsRef,
		CreatedAt: now, UpdatedAt: now, RedriveOf: req.RedriveOf,
		// Epoch 1 without an owner: the epoch of whichever coordinator
		// gets the token's first delivery (see acceptedBatch and load).
		Epoch: 1, StartedAt: now,
	}
	if req.Source != nil {
		st.Phase = messages.PhaseSource
	}
	token := nats.NewMsg(c.names.Token(req.ID))
	token.Data = body
	fut, err := c.publishAsync(ctx, token, jetstream.WithMsgID(messages.TokenMsgID(req.ID)))
	if err != nil {
		handOff(nil, 0, nil)
		return nil, unavailable(err)
	}
	// The first window goes out with the token when this coordinator made
	// the id: no other request can have it, so if the token is not stored
	// the work runs for nothing and nobody counts it. With the client's
	// id, a concurrent submit of the same id with other items could get
	// its items mixed in, so the window waits for the token.
	var first *driver
	if ownID {
		first = c.firstWindow(ctx, &req, st)
	}
	var ack *jetstream.PubAck
	select {
	case ack = <-fut.Ok():
	case err = <-fut.Err():
	case <-ctx.Done():
		err = ctx.Err()
	}
	if topology.IsDuplicateResult(err) || (err == nil && ack.Duplicate) {
		// A concurrent submit of the same id stored its token first.
		handOff(nil, 0, nil)
		return c.existing(ctx, req.ID)
	}
	if err != nil {
		handOff(nil, 0, nil)
		return nil, unavailable(err)
	}
	st.TokenSeq = ack.Sequence
	if !ownID {
		// The token is stored, so the batch will run whatever happens
		// now: the first window goes out while the state is created.
		first = c.firstWindow(ctx, &req, st)
	}
	rev, err := c.state.Create(ctx, st)
	if errors.Is(err, aggregate.ErrExists) {
		// The driver got the token first and created the state.
		handOff(nil, 0, nil)
		return &messages.SubmitReply{BatchID: req.ID, Total: st.Total, Status: messages.StatusRunning}, nil
	} else if err != nil {
		handOff(nil, 0, nil)
		return nil, unavailable(err)
	}
	handOff(st, rev, first)
	c.log.Info().Str("batch_id", req.ID).Str("activity", req.Activity).Int("total", st.Total).Msg("batch accepted")
	return &messages.SubmitReply{BatchID: req.ID, Total: st.Total, Status: st.Status}, nil
}

// publishAsync publishes without waiting for the acknowledgement, waiting
// only while the connection has too many publishes unacknowledged.
func (c *Coordinator) publishAsync(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	for {
		fut, err := c.js.PublishMsgAsync(msg, opts...)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return fut, err
		}
		select {
		case <-c.js.PublishAsyncComplete():
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// acceptedBatch is the state a coordinator created when it accepted a
// batch, waiting for the first delivery of the batch's token. When that
// delivery comes to this coordinator (the usual case), its driver starts
// from this state instead of reading it and raising its epoch: two round
// trips off every batch's latency. It is safe because nobody drove the
// batch before a token's first delivery.
type acceptedBatch struct {
	ready   chan struct{}          // closed once st and rev are set
	req     *messages.BatchRequest // what the token holds, decoded
	st      *messages.BatchState
	rev     uint64
	results *resultsReader // started while the batch is accepted
	first   *driver        // the first window's publishes, or nil
	floor   uint64         // see driver.floor
}

// expectToken registers a batch about to be accepted. The returned
// function hands over its created state (or nil when this coordinator did
// not create it); it must be called once.
//
// The batch's results reader starts at once: a consumer because creating
// it is a slow round trip; a watched batch's subscription because the
// server must have it before any result is published. Made after the work
// (tried: it spares the work the server's walk of its subscription cache),
// it sometimes reached the server after a first result, whose hint was
// then lost: a 100 ms wait for the next checkpoint tick, in 1% of batches.
func (c *Coordinator) expectToken(req *messages.BatchRequest, watch bool, floor uint64) func(*messages.BatchState, uint64, *driver) {
	batch := req.ID
	ab := &acceptedBatch{ready: make(chan struct{}), req: req, floor: floor}
	if watch {
		ab.results = c.watchResults(batch, len(req.Items))
	} else {
		ab.results = c.readResults(batch, floor)
	}
	c.accepted.Store(batch, ab)
	return func(st *messages.BatchState, rev uint64, first *driver) {
		if st != nil {
			cp := *st
			ab.st, ab.rev, ab.first = &cp, rev, first
		}
		close(ab.ready)
		if st == nil {
			if c.accepted.CompareAndDelete(batch, ab) {
				ab.results.stop()
			}
			return
		}
		// Dropped if no first delivery comes here to claim it.
		time.AfterFunc(time.Minute, func() {
			if c.accepted.CompareAndDelete(batch, ab) {
				ab.results.stop()
			}
		})
	}
}

// resultsFloor returns a results-stream sequence stored before a new
// batch's work is published, so below all of the batch's results, for its
// reads to start after (0: from the start). Only on memory storage (see
// floorReads). A watched batch takes the highest sequence this coordinator
// has seen, at no cost; it drops it if hinted results stay missing
// (watch.go). A batch read with a consumer has no hints to tell, so it asks
// the stream, one round trip before a batch of hundreds of items at least:
// that is right even in a results stream made anew since.
func (c *Coordinator) resultsFloor(ctx context.Context, watch bool) uint64 {
	switch {
	case !c.floorReads:
		return 0
	case watch:
		return c.resultsSeen.Load()
	}
	last, err := c.resultsLastSeq(ctx)
	if err != nil {
		c.log.Debug().Err(err).Msg("results stream info for a new batch's floor; reading from the start")
		return 0
	}
	return last
}

// resultsLastSeq asks the results stream for its last sequence, and takes
// it as what this coordinator has seen, lower or not: lower means the
// stream was made anew, and what was seen before is no floor any more (a
// lower floor is always safe).
func (c *Coordinator) resultsLastSeq(ctx context.Context) (uint64, error) {
	info, err := c.stores.Results.Info(ctx)
	if err != nil {
		return 0, err
	}
	if last := info.State.LastSeq; last < c.resultsSeen.Load() {
		c.resultsSeen.Store(last)
	} else {
		c.sawResults(last)
	}
	return info.State.LastSeq, nil
}

// watchableRequest reports whether a new batch's results may be watched
// (watch.go): its items are inline and few enough to keep their results in
// memory, and it has no steps. The driver checks again (watchable).
func (c *Coordinator) watchableRequest(req *messages.BatchRequest) bool {
	return req.ItemsRef == nil && req.Source == nil && req.Reduce == nil && len(req.Items) <= min(watchMaxItems, c.cfg.InMemoryResults)
}

// takeAccepted returns the state this coordinator created for the batch
// whose token it has for the first time, or nil.
func (c *Coordinator) takeAccepted(ctx context.Context, batch string, tokenSeq uint64) *acceptedBatch {
	v, ok := c.accepted.LoadAndDelete(batch)
	if !ok {
		return nil
	}
	ab := v.(*acceptedBatch)
	select {
	case <-ab.ready:
	case <-ctx.Done():
		ab.results.stop()
		return nil
	}
	if ab.st == nil || ab.st.TokenSeq != tokenSeq {
		ab.results.stop()
		return nil
	}
	return ab
}

// firstWindow publishes the first window of a new batch with inline items,
// as its driver would, and returns the publishes for that driver to take
// over (see acceptedBatch). If the token goes to another coordinator, its
// driver publishes the same messages again and the work stream drops them
// as duplicates (same Nats-Msg-Id).
func (c *Coordinator) firstWindow(ctx context.Context, req *messages.BatchRequest, st *messages.BatchState) *driver {
	if req.ItemsRef != nil || req.Source != nil {
		return nil
	}
	cp := *st
	d := &driver{c: c, batch: req.ID, st: &cp, log: c.log.With().Str("batch_id", req.ID).Logger(), items: inlineItems(req.Items)}
	d.fill(ctx)
	return d
}

// existingReply answers a submit of an id already taken with that batch,
// with the outcome of its aggregate if it is out (the stored state lags
// the aggregate by a moment).
func (c *Coordinator) existingReply(ctx context.Context, st *messages.BatchState) (*messages.SubmitReply, *messages.Error) {
	if err := c.withOutcome(ctx, st); err != nil {
		return nil, unavailable(err)
	}
	return &messages.SubmitReply{BatchID: st.BatchID, Total: st.Total, Status: st.Status, Existing: true}, nil
}

// existing describes a batch whose token is already stored. Its state may
// lag the token by a moment (its submitter is creating it).
func (c *Coordinator) existing(ctx context.Context, batch string) (*messages.SubmitReply, *messages.Error) {
	for {
		st, _, err := c.state.Get(ctx, batch)
		if err == nil {
			return c.existingReply(ctx, st)
		}
		if !errors.Is(err, aggregate.ErrNotFound) {
			return nil, unavailable(err)
		}
		select {
		case <-ctx.Done():
			return nil, unavailable(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkActivity refuses an activity no worker has ever registered: a typo
// would otherwise queue work nobody takes.
func (c *Coordinator) checkActivity(ctx context.Context, activity string) *messages.Error {
	if seen, ok := c.activities.Load(activity); ok && time.Since(seen.(time.Time)) < activityTTL {
		return nil
	}
	_, err := c.stores.Work.Consumer(ctx, c.names.WorkConsumer(activity))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return messages.Errorf(messages.CodeUnknownActivity, "activity %q: no worker has registered it (no consumer %q on stream %s); check the name or start a worker that serves it", activity, c.names.WorkConsumer(activity), c.names.WorkStream())
	}
	if err != nil {
		return unavailable(err)
	}
	c.activities.Store(activity, time.Now())
	return nil
}

func (c *Coordinator) handleStatus(m *nats.Msg) {
	ctx, cancel := context.WithTimeout(c.runCtx, requestTimeout)
	defer cancel()
	ref, e := messages.DecodeBatchRef(m.Data)
	if e != nil {
		c.replyError(m, e)
		return
	}
	st, _, err := c.state.Get(ctx, ref.BatchID)
	if errors.Is(err, aggregate.ErrNotFound) {
		c.replyError(m, messages.Errorf(messages.CodeNotFound, "batch %q: no such batch (never submitted, or past its retention)", ref.BatchID))
		return
	} else if err != nil {
		c.replyError(m, unavailable(err))
		return
	}
	if err := c.withOutcome(ctx, st); err != nil {
		c.replyError(m, unavailable(err))
		return
	}
	c.reply(m, st.ProgressWithOptions(time.Now()))
}

// withOutcome brings a state that is not final yet to the batch's
// aggregate if that is out: its driver publishes the aggregate, then saves
// the final state (see publishDone).
func (c *Coordinator) withOutcome(ctx context.Context, st *messages.BatchState) error {
	if st.Status.Final() {
		return nil
	}
	out, err := c.publishedOutcome(ctx, st.BatchID)
	if out != nil {
		out.Apply(st)
	}
	return err
}

// publishedOutcome returns the outcome of the batch's aggregate if it is
// published, or nil.
func (c *Coordinator) publishedOutcome(ctx context.Context, batch string) (*aggregate.Outcome, error) {
	m, err := c.stores.Done.GetLastMsgForSubject(ctx, c.names.Done(batch))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("aggregate of %s: %w", batch, err)
	}
	var out aggregate.Outcome
	if err := messages.Decode(m.Data, &out); err != nil {
		return nil, fmt.Errorf("aggregate of %s: %w", batch, err)
	}
	return &out, nil
}

// handleCancel marks the batch for cancellation, tells its driver, and
// replies once the batch has ended (or with its state so far if the driver
// does not end it within a lease).
func (c *Coordinator) handleCancel(m *nats.Msg) {
	ref, e := messages.DecodeBatchRef(m.Data)
	if e != nil {
		c.replyError(m, e)
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(c.runCtx, requestTimeout+c.cfg.Lease)
		defer cancel()
		// An aggregate out ends the batch before its state says so.
		if out, err := c.publishedOutcome(ctx, ref.BatchID); err != nil {
			c.replyError(m, unavailable(err))
			return
		} else if out != nil {
			if st, _, err := c.state.Get(ctx, ref.BatchID); err == nil {
				out.Apply(st)
				c.reply(m, st.Progress(time.Now()))
				return
			}
		}
		st, err := c.state.Modify(ctx, ref.BatchID, func(st *messages.BatchState) error {
			if st.Status.Final() || st.CancelRequested {
				return errNoChange
			}
			st.CancelRequested = true
			return nil
		})
		switch {
		case errors.Is(err, aggregate.ErrNotFound):
			c.replyError(m, messages.Errorf(messages.CodeNotFound, "batch %q: no such batch", ref.BatchID))
			return
		case err != nil && !errors.Is(err, errNoChange):
			c.replyError(m, unavailable(err))
			return
		}
		if !st.Status.Final() {
			_ = c.nc.Publish(c.names.Poke(ref.BatchID), nil)
			st = c.awaitFinal(ctx, ref.BatchID, st)
		}
		c.reply(m, st.Progress(time.Now()))
	}()
}

var errNoChange = errors.New("no change")

// awaitFinal watches a batch's state until it is final or ctx ends.
func (c *Coordinator) awaitFinal(ctx context.Context, batch string, last *messages.BatchState) *messages.BatchState {
	w, err := c.stores.Batches.Watch(ctx, batch)
	if err != nil {
		return last
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return last
		case e := <-w.Updates():
			if e == nil {
				continue
			}
			var st messages.BatchState
			if json.Unmarshal(e.Value(), &st) == nil {
				last = &st
				if st.Status.Final() {
					return last
				}
			}
		}
	}
}

// handleUpdate changes options of a running batch; its driver takes them
// at its next state read, which the poke makes immediate.
func (c *Coordinator) handleUpdate(m *nats.Msg) {
	u, e := messages.DecodeUpdateRequest(m.Data)
	if e != nil {
		c.replyError(m, e)
		return
	}
	ctx, cancel := context.WithTimeout(c.runCtx, requestTimeout)
	defer cancel()
	// An aggregate out ends the batch before its state says so.
	if out, err := c.publishedOutcome(ctx, u.BatchID); err != nil {
		c.replyError(m, unavailable(err))
		return
	} else if out != nil {
		c.replyError(m, messages.Errorf(messages.CodeInvalidRequest, "batch %q already ended (%s); there is nothing to update", u.BatchID, out.Status))
		return
	}
	var refused *messages.Error
	st, err := c.state.Modify(ctx, u.BatchID, func(st *messages.BatchState) error {
		if st.Status.Final() {
			refused = messages.Errorf(messages.CodeInvalidRequest, "batch %q already ended (%s); there is nothing to update", u.BatchID, st.Status)
			return errNoChange
		}
		st.Options = u.Options.Apply(st.Options)
		return nil
	})
	switch {
	case refused != nil:
		c.replyError(m, refused)
		return
	case errors.Is(err, aggregate.ErrNotFound):
		c.replyError(m, messages.Errorf(messages.CodeNotFound, "batch %q: no such batch", u.BatchID))
		return
	case err != nil:
		c.replyError(m, unavailable(err))
		return
	}
	_ = c.nc.Publish(c.names.Poke(u.BatchID), nil)
	c.log.Info().Str("batch_id", u.BatchID).Msg("batch options updated")
	c.reply(m, st.ProgressWithOptions(time.Now()))
}

// handleRedrive submits a new batch made of the failed (and not run) items
// of a finished batch, linked to it by redrive_of.
func (c *Coordinator) handleRedrive(m *nats.Msg) {
	r, e := messages.DecodeRedriveRequest(m.Data)
	if e != nil {
		c.replyError(m, e)
		return
	}
	ctx, cancel := context.WithTimeout(c.runCtx, requestTimeout)
	defer cancel()
	req, e := c.redriveRequest(ctx, r)
	if e != nil {
		c.replyError(m, e)
		return
	}
	c.replyAccept(ctx, m, req)
}

func (c *Coordinator) redriveRequest(ctx context.Context, r messages.RedriveRequest) (messages.BatchRequest, *messages.Error) {
	var req messages.BatchRequest
	st, _, err := c.state.Get(ctx, r.BatchID)
	if errors.Is(err, aggregate.ErrNotFound) {
		return req, messages.Errorf(messages.CodeNotFound, "batch %q: no such batch", r.BatchID)
	} else if err != nil {
		return req, unavailable(err)
	}
	if err := c.withOutcome(ctx, st); err != nil {
		return req, unavailable(err)
	}
	if !st.Status.Final() {
		return req, messages.Errorf(messages.CodeInvalidRequest, "batch %q is still running; redrive works on finished batches", r.BatchID)
	}
	doneMsg, err := c.stores.Done.GetLastMsgForSubject(ctx, c.names.Done(r.BatchID))
	if err != nil {
		return req, unavailable(fmt.Errorf("aggregate of %s: %w", r.BatchID, err))
	}
	var agg messages.Aggregate
	if err := json.Unmarshal(doneMsg.Data, &agg); err != nil {
		return req, messages.Errorf(messages.CodeInternal, "aggregate of %s: %v", r.BatchID, err)
	}
	if agg.ResultsRef != nil {
		if agg.Results, err = aggregate.LoadResults(ctx, c.js, agg.ResultsRef, agg.Total); err != nil {
			return req, unavailable(err)
		}
	}
	tok, err := c.stores.Control.GetLastMsgForSubject(ctx, c.names.Token(r.BatchID))
	if err != nil {
		return req, unavailable(fmt.Errorf("request of %s: %w", r.BatchID, err))
	}
	var orig messages.BatchRequest
	if err := json.Unmarshal(tok.Data, &orig); err != nil {
		return req, messages.Errorf(messages.CodeInternal, "request of %s: %v", r.BatchID, err)
	}
	items := inlineItems(orig.Items)
	if st.ItemsRef != nil {
		items = c.objectItems(st.ItemsRef)
	} else if orig.Source != nil {
		return req, messages.Errorf(messages.CodeUnsupported, "batch %q got its items from a source step inline; redrive it by submitting again", r.BatchID)
	}
	defer items.Close()
	ref := &messages.RedriveRef{BatchID: r.BatchID}
	for _, res := range agg.Results { // in item order, as items reads
		if res.OK || res.Item >= st.Total {
			continue
		}
		input, err := items.Item(res.Item)
		if err != nil {
			return req, unavailable(err)
		}
		ref.Items = append(ref.Items, res.Item)
		req.Items = append(req.Items, input)
	}
	if len(ref.Items) == 0 {
		return req, messages.Errorf(messages.CodeInvalidRequest, "batch %q has no failed items to redrive", r.BatchID)
	}
	req.ID, req.Activity, req.Options, req.RedriveOf = r.ID, orig.Activity, orig.Options, ref
	return req, nil
}
