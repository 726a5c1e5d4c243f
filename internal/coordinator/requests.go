package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/objects"
	"github.com/fanoutdev/fanout/internal/topology"
	"github.com/fanoutdev/fanout/internal/tracing"
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
	c.cfg.Metrics.Refused(c.names.Request(m.Subject), e.Code)
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
	ctx, span := c.startAccept(ctx, m)
	defer span.End()
	req, e := messages.DecodeBatchRequest(m.Data, c.limits)
	if e != nil {
		c.refuse(span, m, e)
		return
	}
	c.replyAccept(ctx, span, m, req)
}

// startAccept starts the span of a submit or redrive, under the trace
// context the request carries. The batch's token carries the span's
// context on to the batch.
func (c *Coordinator) startAccept(ctx context.Context, m *nats.Msg) (context.Context, trace.Span) {
	if !c.tracing && !tracing.HasContext(m.Header) {
		return ctx, trace.SpanFromContext(ctx) // records nothing
	}
	return c.tracer.Start(tracing.Extract(ctx, m.Header), tracing.SpanAccept,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(tracing.Messaging(tracing.OpProcess, "accept", m.Subject)...),
		trace.WithAttributes(tracing.CoordinatorKey.String(c.cfg.Name)))
}

// refuse answers a submit or redrive with an error, and records it on its
// span.
func (c *Coordinator) refuse(span trace.Span, m *nats.Msg, e *messages.Error) {
	span.SetAttributes(tracing.ErrorCodeKey.String(e.Code), tracing.ErrorType(e.Code))
	span.SetStatus(codes.Error, e.Message)
	c.replyError(m, e)
}

func (c *Coordinator) replyAccept(ctx context.Context, span trace.Span, m *nats.Msg, req messages.BatchRequest) {
	span.SetName(tracing.SpanName(tracing.SpanAccept, req.Activity))
	span.SetAttributes(tracing.ActivityKey.String(req.Activity))
	r, e := c.accept(ctx, req)
	if e != nil {
		c.refuse(span, m, e)
		return
	}
	span.SetAttributes(tracing.BatchIDKey.String(r.BatchID), tracing.TotalKey.Int(r.Total), tracing.ExistingKey.Bool(r.Existing))
	c.reply(m, r)
}

// accept stores a valid batch request as its token, which the server
// keeps one of per batch id, then its state. The token is the accepted
// batch: its first driver starts from it, without waiting for the state,
// and readers of a state not made yet (the submitter died in between)
// read the token. A repeated id answers with the batch that has it.
func (c *Coordinator) accept(ctx context.Context, req messages.BatchRequest) (*messages.SubmitReply, *messages.Error) {
	if req.ID != "" {
		if st, _, err := c.view(ctx, req.ID); err == nil {
			return existingReply(st), nil
		} else if !errors.Is(err, errNotFound) {
			return nil, unavailable(err)
		}
	}
	total, e := c.prepare(ctx, &req)
	if e != nil {
		return nil, e
	}
	body, err := messages.Encode(&req)
	if err != nil {
		return nil, messages.Errorf(messages.CodeInternal, "encode batch: %v", err)
	}
	if int64(len(body)) > c.nc.MaxPayload() {
		return nil, messages.Errorf(messages.CodeTooLarge, "the batch is %d bytes once stored, over the server's max_payload of %d; send fewer or smaller items", len(body), c.nc.MaxPayload())
	}
	tok := &token{req: req, total: total, time: time.Now()}
	if tok.after, err = c.resultsAfter(ctx); err != nil {
		return nil, unavailable(err)
	}
	ack, err := c.publishToken(ctx, tok, body, trace.SpanContextFromContext(ctx))
	if topology.IsDuplicateResult(err) || (err == nil && ack.Duplicate) {
		// A concurrent submit of the same id stored its token first.
		return c.existing(ctx, req.ID)
	}
	if err != nil {
		return nil, unavailable(err)
	}
	// The state too, so that the batch is listed from the reply on, with
	// epoch 1: that of the token's first driver, which may have made the
	// state already.
	tok.seq = ack.Sequence
	st := tok.state()
	st.Epoch = 1
	if _, err := c.state.create(ctx, st); err != nil && !errors.Is(err, errExists) {
		return nil, unavailable(err)
	}
	c.log.Info().Str("batch_id", req.ID).Str("activity", req.Activity).Int("total", total).Msg("batch accepted")
	return &messages.SubmitReply{BatchID: req.ID, Total: total, Status: messages.StatusRunning}, nil
}

// prepare checks what a valid request needs from the deployment (known
// activities, a readable items_ref), counts its items and fills in what
// the coordinator decides: the default timeout and the batch id.
func (c *Coordinator) prepare(ctx context.Context, req *messages.BatchRequest) (int, *messages.Error) {
	for _, a := range []*messages.StepSpec{{Activity: req.Activity}, req.Source, req.Reduce} {
		if a == nil {
			continue
		}
		if e := c.checkActivity(ctx, a.Activity); e != nil {
			return 0, e
		}
	}
	total := len(req.Items)
	if req.ItemsRef != nil {
		var e *messages.Error
		if total, e = c.countItems(ctx, req.ItemsRef); e != nil {
			return 0, e
		}
	}
	if req.Options.Timeout == 0 {
		// A batch must end within the retention to be counted exactly.
		req.Options.Timeout = messages.Duration(cmp.Or(c.cfg.DefaultTimeout, c.cfg.retention()))
	}
	if req.ID == "" {
		req.ID = uuid.NewString()
	}
	return total, nil
}

// existingReply answers a submit of an id already taken with that batch.
func existingReply(st *messages.BatchState) *messages.SubmitReply {
	return &messages.SubmitReply{BatchID: st.BatchID, Total: st.Total, Status: st.Status, Existing: true}
}

// existing describes a batch whose token is already stored.
func (c *Coordinator) existing(ctx context.Context, batch string) (*messages.SubmitReply, *messages.Error) {
	st, _, err := c.view(ctx, batch)
	if err != nil {
		return nil, unavailable(err)
	}
	return existingReply(st), nil
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
	st, e := c.find(ctx, ref.BatchID)
	if e != nil {
		c.replyError(m, e)
		return
	}
	c.reply(m, st.ProgressWithOptions(time.Now()))
}

// find returns a batch's state (its view), or the error to answer with.
func (c *Coordinator) find(ctx context.Context, batch string) (*messages.BatchState, *messages.Error) {
	st, _, err := c.view(ctx, batch)
	if errors.Is(err, errNotFound) {
		return nil, messages.Errorf(messages.CodeNotFound, "batch %q: no such batch (never submitted, or past its retention)", batch)
	} else if err != nil {
		return nil, unavailable(err)
	}
	return st, nil
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
		st, e := c.change(ctx, ref.BatchID, func(st *messages.BatchState) *messages.Error {
			st.CancelRequested = true
			return nil
		})
		if e != nil {
			c.replyError(m, e)
			return
		}
		if !st.Status.Final() {
			st = c.awaitFinal(ctx, ref.BatchID, st)
		}
		c.reply(m, st.Progress(time.Now()))
	}()
}

// change applies a request to a running batch's state with
// compare-and-set and pokes its driver. A finished batch is returned
// unchanged; fn may refuse the change.
func (c *Coordinator) change(ctx context.Context, batch string, fn func(*messages.BatchState) *messages.Error) (*messages.BatchState, *messages.Error) {
	for {
		st, rev, err := c.view(ctx, batch)
		if errors.Is(err, errNotFound) {
			return nil, messages.Errorf(messages.CodeNotFound, "batch %q: no such batch", batch)
		} else if err != nil {
			return nil, unavailable(err)
		}
		if st.Status.Final() {
			return st, nil
		}
		if e := fn(st); e != nil {
			return nil, e
		}
		if _, err := c.state.update(ctx, st, rev); errors.Is(err, errConflict) {
			continue
		} else if err != nil {
			return nil, unavailable(err)
		}
		_ = c.nc.Publish(c.names.Poke(batch), nil)
		return st, nil
	}
}

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
			if messages.Decode(e.Value(), &st) == nil && st.Check(batch) == nil {
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
	st, e := c.change(ctx, u.BatchID, func(st *messages.BatchState) *messages.Error {
		st.Options = u.Options.Apply(st.Options)
		if u.Paused != nil {
			st.Paused = *u.Paused
		}
		return nil
	})
	if e == nil && st.Status.Final() {
		e = messages.Errorf(messages.CodeInvalidRequest, "batch %q already ended (%s); there is nothing to update", u.BatchID, st.Status)
	}
	if e != nil {
		c.replyError(m, e)
		return
	}
	c.log.Info().Str("batch_id", u.BatchID).Bool("paused", st.Paused).Msg("batch options updated")
	c.reply(m, st.ProgressWithOptions(time.Now()))
}

// handleRedrive submits a new batch made of the failed (and not run) items
// of a finished batch, linked to it by redrive_of.
func (c *Coordinator) handleRedrive(m *nats.Msg) {
	ctx, cancel := context.WithTimeout(c.runCtx, requestTimeout)
	defer cancel()
	ctx, span := c.startAccept(ctx, m)
	defer span.End()
	r, e := messages.DecodeRedriveRequest(m.Data)
	if e != nil {
		c.refuse(span, m, e)
		return
	}
	span.SetAttributes(tracing.RedriveOfKey.String(r.BatchID))
	req, e := c.redriveRequest(ctx, r)
	if e != nil {
		c.refuse(span, m, e)
		return
	}
	c.replyAccept(ctx, span, m, req)
}

func (c *Coordinator) redriveRequest(ctx context.Context, r messages.RedriveRequest) (messages.BatchRequest, *messages.Error) {
	var req messages.BatchRequest
	st, e := c.find(ctx, r.BatchID)
	if e != nil {
		return req, e
	}
	if !st.Status.Final() {
		return req, messages.Errorf(messages.CodeInvalidRequest, "batch %q is still running; redrive works on finished batches", r.BatchID)
	}
	doneMsg, err := c.stores.Done.GetLastMsgForSubject(ctx, c.names.Done(r.BatchID))
	if err != nil {
		return req, unavailable(fmt.Errorf("aggregate of %s: %w", r.BatchID, err))
	}
	var agg messages.Aggregate
	if err = messages.Decode(doneMsg.Data, &agg); err == nil {
		err = agg.Check(r.BatchID)
	}
	if err != nil {
		c.ignore("aggregate", r.BatchID, err)
		return req, messages.Errorf(messages.CodeInternal, "aggregate of %s: what is stored is not its aggregate: %v", r.BatchID, err)
	}
	tok, err := c.readToken(ctx, r.BatchID)
	if err != nil {
		return req, unavailable(fmt.Errorf("request of %s: %w", r.BatchID, err))
	}
	orig := tok.req
	items := inlineItems(orig.Items)
	if st.ItemsRef != nil {
		items = c.objectItems(st.ItemsRef)
	} else if orig.Source != nil {
		return req, messages.Errorf(messages.CodeUnsupported, "batch %q got its items from a source step inline; redrive it by submitting again", r.BatchID)
	}
	defer items.Close()
	ref := &messages.RedriveRef{BatchID: r.BatchID}
	err = objects.Results(ctx, c.js, &agg, func(res messages.ItemResult) error { // in item order, as items reads
		if res.OK || res.Item >= st.Total {
			return nil
		}
		input, err := items.Item(res.Item)
		if err != nil {
			return err
		}
		ref.Items = append(ref.Items, res.Item)
		req.Items = append(req.Items, input)
		return nil
	})
	if err != nil {
		return req, unavailable(err)
	}
	if len(ref.Items) == 0 {
		return req, messages.Errorf(messages.CodeInvalidRequest, "batch %q has no failed items to redrive", r.BatchID)
	}
	req.ID, req.Activity, req.Options, req.RedriveOf = r.ID, orig.Activity, orig.Options, ref
	return req, nil
}
