package coordinator

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/tracing"
)

// A batch's token is its accepted request, stored on the control stream
// (one message per batch id) and held un-acked by the coordinator driving
// the batch. It is all a batch is until its first driver saves the state:
// the state is made from it.

// totalHeader carries the batch's item count on its token (counted at
// accept for items_ref); afterHeader, on a memory-stored results stream,
// the results stream's last sequence when the batch was accepted.
const (
	totalHeader = "Fanout-Total"
	afterHeader = "Fanout-Results-After"
)

type token struct {
	req   messages.BatchRequest
	total int // -1: not recorded (a token of an older coordinator)
	seq   uint64
	time  time.Time
	// after: every result of the batch is stored after this results
	// stream sequence. A memory store looks for a batch's first result by
	// scanning every message from where its reader starts (a file store
	// asks its per-subject index): readers start there, not at the
	// stream's start. With 1,000,000 results kept, a 10-item batch took
	// 424 ms from the start. 0: from the start.
	after uint64
	// parent: the trace context the batch's spans go under (the accept's).
	parent trace.SpanContext
}

// publishToken stores an accepted request's token, with the trace context
// its batch's spans go under.
func (c *Coordinator) publishToken(ctx context.Context, t *token, body []byte, parent trace.SpanContext) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(c.names.Token(t.req.ID))
	msg.Data = body
	tracing.HeadersOf(parent).Set(msg.Header)
	msg.Header.Set(totalHeader, strconv.Itoa(t.total))
	if t.after > 0 {
		msg.Header.Set(afterHeader, strconv.FormatUint(t.after, 10))
	}
	return c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(messages.TokenMsgID(t.req.ID)))
}

// resultsAfter is the results stream's last sequence on a memory-stored
// stream (see token.after), 0 on a file-stored one.
func (c *Coordinator) resultsAfter(ctx context.Context) (uint64, error) {
	if info := c.stores.Results.CachedInfo(); info == nil || info.Config.Storage != jetstream.MemoryStorage {
		return 0, nil
	}
	info, err := c.stores.Results.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// decodeToken reads a token stored at sequence seq and time t.
func decodeToken(batch string, data []byte, h nats.Header, seq uint64, t time.Time) (*token, error) {
	tok := &token{total: -1, seq: seq, time: t}
	if err := messages.Decode(data, &tok.req); err != nil {
		return nil, fmt.Errorf("token of %s: %w", batch, err)
	}
	if tok.req.ID != batch {
		return nil, fmt.Errorf("token of %s: holds batch %q", batch, tok.req.ID)
	}
	if !messages.ValidToken(tok.req.Activity) {
		return nil, fmt.Errorf("token of %s: names activity %q", batch, tok.req.Activity)
	}
	if n, err := strconv.Atoi(h.Get(totalHeader)); err == nil && n >= 0 {
		tok.total = n
	} else if tok.req.ItemsRef == nil {
		tok.total = len(tok.req.Items)
	}
	tok.after, _ = strconv.ParseUint(h.Get(afterHeader), 10, 64)
	if tracing.HasContext(h) {
		tok.parent = trace.SpanContextFromContext(tracing.Extract(context.Background(), h))
	}
	return tok, nil
}

// readToken reads a batch's token from the control stream.
func (c *Coordinator) readToken(ctx context.Context, batch string) (*token, error) {
	m, err := c.stores.Control.GetLastMsgForSubject(ctx, c.names.Token(batch))
	if err != nil {
		return nil, err
	}
	return decodeToken(batch, m.Data, m.Header, m.Sequence, m.Time)
}

// state is the state of a batch no driver has saved yet: running, nothing
// counted, epoch 0.
func (t *token) state() *messages.BatchState {
	req := &t.req
	created := t.time.UTC()
	st := &messages.BatchState{
		BatchID: req.ID, Activity: req.Activity, Status: messages.StatusRunning,
		Total: max(t.total, 0), Options: req.Options, ItemsRef: req.ItemsRef, TokenSeq: t.seq,
		CreatedAt: created, StartedAt: created, UpdatedAt: created, RedriveOf: req.RedriveOf,
	}
	if req.Source != nil {
		st.Phase = messages.PhaseSource
	}
	return st
}
