package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
)

const requestTimeout = 10 * time.Second

// activityTTL is how long a seen work consumer counts as a known activity.
const activityTTL = 30 * time.Second

func (c *Coordinator) reply(m *nats.Msg, v any) {
	if m.Reply == "" {
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
	if req.Source != nil || req.Reduce != nil {
		c.replyError(m, messages.Errorf(messages.CodeUnsupported, "source and reduce steps are not supported by this coordinator yet; send items"))
		return
	}
	if req.ID != "" {
		if st, _, err := c.state.Get(ctx, req.ID); err == nil {
			c.reply(m, messages.SubmitReply{BatchID: st.BatchID, Total: st.Total, Status: st.Status, Existing: true})
			return
		} else if !errors.Is(err, aggregate.ErrNotFound) {
			c.replyError(m, unavailable(err))
			return
		}
	}
	if e := c.checkActivity(ctx, req.Activity); e != nil {
		c.replyError(m, e)
		return
	}
	if req.ID == "" {
		req.ID = uuid.NewString()
	}
	body, err := json.Marshal(req)
	if err != nil {
		c.replyError(m, messages.Errorf(messages.CodeInternal, "encode batch: %v", err))
		return
	}
	if int64(len(body)) > c.nc.MaxPayload() {
		c.replyError(m, messages.Errorf(messages.CodeTooLarge, "the batch is %d bytes once stored, over the server's max_payload of %d; send fewer or smaller items", len(body), c.nc.MaxPayload()))
		return
	}
	ack, err := c.js.Publish(ctx, c.names.Token(req.ID), body, jetstream.WithMsgID(messages.TokenMsgID(req.ID)))
	if err != nil {
		c.replyError(m, unavailable(err))
		return
	}
	now := time.Now().UTC()
	st := &messages.BatchState{
		BatchID: req.ID, Activity: req.Activity, Status: messages.StatusRunning,
		Total: len(req.Items), Options: req.Options, TokenSeq: ack.Sequence,
		CreatedAt: now, UpdatedAt: now,
	}
	if _, err := c.state.Create(ctx, st); errors.Is(err, aggregate.ErrExists) {
		// The driver got the token first and created the state, or a
		// concurrent submit with the same id won.
		cur, _, err := c.state.Get(ctx, req.ID)
		if err != nil {
			c.replyError(m, unavailable(err))
			return
		}
		c.reply(m, messages.SubmitReply{BatchID: cur.BatchID, Total: cur.Total, Status: cur.Status, Existing: cur.TokenSeq != ack.Sequence})
		return
	} else if err != nil {
		c.replyError(m, unavailable(err))
		return
	}
	c.log.Info().Str("batch_id", req.ID).Str("activity", req.Activity).Int("total", st.Total).Msg("batch accepted")
	c.reply(m, messages.SubmitReply{BatchID: req.ID, Total: st.Total, Status: st.Status})
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
	c.reply(m, st.Progress(time.Now()))
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
