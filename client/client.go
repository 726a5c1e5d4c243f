// Package client submits batches to fanout coordinators and reads their
// progress and aggregates. It needs only a NATS connection.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/objects"
	"github.com/fanoutdev/fanout/internal/topology"
	"github.com/fanoutdev/fanout/internal/tracing"
)

// Wire types, shared with the coordinator (see docs/protocol.md).
type (
	BatchRequest  = messages.BatchRequest
	StepSpec      = messages.StepSpec
	Options       = messages.Options
	Duration      = messages.Duration
	FailurePolicy = messages.FailurePolicy
	SubmitReply   = messages.SubmitReply
	Progress      = messages.Progress
	Aggregate     = messages.Aggregate
	ItemResult    = messages.ItemResult
	Status        = messages.Status
	RedriveRef    = messages.RedriveRef
	// ObjectRef names an object in the object store (items_ref, results_ref).
	ObjectRef = messages.ObjectRef
	// Error is a coordinator's refusal: Code is one of the Code constants.
	Error = messages.Error
)

// Batch statuses.
const (
	StatusRunning   = messages.StatusRunning
	StatusCompleted = messages.StatusCompleted
	StatusFailed    = messages.StatusFailed
	StatusCanceled  = messages.StatusCanceled
	StatusTimedOut  = messages.StatusTimedOut
)

// Failure policies.
const (
	FailureContinue = messages.FailureContinue
	FailureFast     = messages.FailureFast
)

// Error codes a coordinator answers with.
const (
	CodeInvalidJSON     = messages.CodeInvalidJSON
	CodeInvalidRequest  = messages.CodeInvalidRequest
	CodeUnknownActivity = messages.CodeUnknownActivity
	CodeTooLarge        = messages.CodeTooLarge
	CodeNotFound        = messages.CodeNotFound
	CodeUnsupported     = messages.CodeUnsupported
	CodeUnavailable     = messages.CodeUnavailable
	CodeInternal        = messages.CodeInternal
)

// ErrNoCoordinator is returned when no coordinator answers a request.
var ErrNoCoordinator = errors.New("no fanout coordinator is answering (is one running with the same prefix?)")

// ErrInvalidOption is wrapped by options that reject their value.
var ErrInvalidOption = errors.New("invalid client option")

// Client talks to fanout coordinators.
type Client struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	names   messages.Names
	timeout time.Duration
	log     zerolog.Logger
	domain  string // JetStream domain, see WithJetStreamDomain
	tracer  trace.Tracer

	mu      sync.Mutex
	streams map[string]jetstream.Stream // see stream
}

// Option configures a Client.
type Option func(*Client) error

// WithPrefix sets the subject prefix (default "fanout").
func WithPrefix(prefix string) Option {
	return func(c *Client) error {
		n, err := messages.NewNames(prefix)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidOption, err)
		}
		c.names = n
		return nil
	}
}

// WithRequestTimeout bounds each request when the context has no deadline
// (default 10s).
func WithRequestTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return fmt.Errorf("%w: request timeout %s must be positive", ErrInvalidOption, d)
		}
		c.timeout = d
		return nil
	}
}

// WithLogger sets the logger (default: none).
func WithLogger(l zerolog.Logger) Option {
	return func(c *Client) error { c.log = l; return nil }
}

// WithJetStreamDomain reads fanout's streams through the JetStream API
// prefix "$JS.<domain>.API" instead of the connection account's own
// JetStream: for a client in a client account of the accounts layout
// (docs/security.md), which imports the fanout account's JetStream API
// under that prefix. Default: none.
func WithJetStreamDomain(domain string) Option {
	return func(c *Client) error {
		if err := topology.CheckDomain(domain); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidOption, err)
		}
		c.domain = domain
		return nil
	}
}

// WithTracerProvider records the spans of Submit and Redrive with tp
// (default: the global provider, otel.GetTracerProvider). Every request
// carries the trace context of its ctx (W3C traceparent and tracestate
// headers) whatever the provider: the coordinator starts the batch's
// spans under it.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *Client) error {
		if tp == nil {
			return fmt.Errorf("%w: nil tracer provider", ErrInvalidOption)
		}
		c.tracer = tracing.Tracer(tp)
		return nil
	}
}

// New makes a client on an established connection; it does not close nc.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	c := &Client{nc: nc, names: messages.MustNames(messages.DefaultPrefix), timeout: 10 * time.Second, log: zerolog.Nop(),
		tracer: tracing.Tracer(otel.GetTracerProvider())}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	js, err := topology.JetStream(nc, c.domain)
	if err != nil {
		return nil, err
	}
	c.js = js
	return c, nil
}

// request sends a request and decodes the reply into out, or returns the
// coordinator's *Error.
func (c *Client) request(ctx context.Context, subject string, body any, out any) error {
	data, err := messages.Encode(body)
	if err != nil {
		return err
	}
	return c.requestData(ctx, subject, data, out)
}

// requestData is request with the body already encoded.
func (c *Client) requestData(ctx context.Context, subject string, data []byte, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req := &nats.Msg{Subject: subject, Data: data}
	if trace.SpanContextFromContext(ctx).IsValid() {
		req.Header = nats.Header{}
		tracing.Inject(ctx, req.Header)
	}
	msg, err := c.nc.RequestMsgWithContext(ctx, req)
	if errors.Is(err, nats.ErrNoResponders) {
		return ErrNoCoordinator
	}
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	return decodeReply(msg.Data, out)
}

func decodeReply(data []byte, out any) error {
	var er messages.ErrorReply
	if json.Unmarshal(data, &er) == nil && er.Error != nil {
		return er.Error
	}
	if err := messages.Decode(data, out); err != nil {
		return fmt.Errorf("decode reply: %w", err)
	}
	return nil
}

// Submit sends a batch. The batch is stored durably when Submit returns
// without error. A refused batch returns an *Error.
func (c *Client) Submit(ctx context.Context, req BatchRequest) (r *SubmitReply, err error) {
	ctx, span := c.startSpan(ctx, tracing.SpanSubmit, req.Activity, c.names.Submit())
	defer func() { endSpan(span, r, err) }()
	data, err := messages.Encode(&req)
	if err != nil {
		return nil, err
	}
	r = &SubmitReply{}
	if err := c.requestData(ctx, c.names.Submit(), data, r); err != nil {
		return nil, err
	}
	return r, nil
}

// startSpan starts the span of a request that makes a batch.
func (c *Client) startSpan(ctx context.Context, op, activity, subject string) (context.Context, trace.Span) {
	ctx, span := c.tracer.Start(ctx, tracing.SpanName(op, activity), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(tracing.Messaging(tracing.OpSend, op, subject)...))
	if activity != "" && span.IsRecording() {
		span.SetAttributes(tracing.ActivityKey.String(activity))
	}
	return ctx, span
}

// endSpan ends it with the batch made, or the error.
func endSpan(span trace.Span, r *SubmitReply, err error) {
	if span.IsRecording() {
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				span.SetAttributes(tracing.ErrorCodeKey.String(e.Code))
			}
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		} else {
			span.SetAttributes(tracing.BatchIDKey.String(r.BatchID), tracing.TotalKey.Int(r.Total), tracing.ExistingKey.Bool(r.Existing))
		}
	}
	span.End()
}

// Status returns a batch's progress; an *Error with CodeNotFound if there
// is no such batch.
func (c *Client) Status(ctx context.Context, batchID string) (*Progress, error) {
	return call[Progress](ctx, c, c.names.Status(), messages.BatchRef{BatchID: batchID})
}

// Cancel ends a running batch and returns its state after the cancel.
func (c *Client) Cancel(ctx context.Context, batchID string) (*Progress, error) {
	return call[Progress](ctx, c, c.names.Cancel(), messages.BatchRef{BatchID: batchID})
}

// OptionsUpdate holds the options Update can change; nil fields stay.
type OptionsUpdate = messages.OptionsUpdate

// Update changes max_in_flight and the failure policy and thresholds of a
// running batch, and returns its state with the options now in force.
func (c *Client) Update(ctx context.Context, batchID string, opts OptionsUpdate) (*Progress, error) {
	return call[Progress](ctx, c, c.names.Update(), messages.UpdateRequest{BatchID: batchID, Options: opts})
}

// Pause stops a running batch from publishing new work: items already
// out finish and are counted, the rest wait until Resume. It returns the
// batch's state with "paused" set.
func (c *Client) Pause(ctx context.Context, batchID string) (*Progress, error) {
	paused := true
	return call[Progress](ctx, c, c.names.Update(), messages.UpdateRequest{BatchID: batchID, Paused: &paused})
}

// Resume lets a paused batch publish work again.
func (c *Client) Resume(ctx context.Context, batchID string) (*Progress, error) {
	paused := false
	return call[Progress](ctx, c, c.names.Update(), messages.UpdateRequest{BatchID: batchID, Paused: &paused})
}

// Redrive runs the failed and not-run items of a finished batch again, as a
// new batch whose aggregate's redrive_of maps its items to the old ones.
// newID is the new batch's optional idempotency key.
func (c *Client) Redrive(ctx context.Context, batchID, newID string) (r *SubmitReply, err error) {
	ctx, span := c.startSpan(ctx, tracing.SpanRedrive, "", c.names.Redrive())
	span.SetAttributes(tracing.RedriveOfKey.String(batchID))
	defer func() { endSpan(span, r, err) }()
	return call[SubmitReply](ctx, c, c.names.Redrive(), messages.RedriveRequest{BatchID: batchID, ID: newID})
}

// call sends a request and returns its decoded reply.
func call[T any](ctx context.Context, c *Client, subject string, body any) (*T, error) {
	var out T
	if err := c.request(ctx, subject, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Wait blocks until the batch's aggregate is published and returns it, with
// Results filled in item order (read from the object store when the batch
// was too large for one message). onProgress, if not nil, is called with
// each progress event until then. A batch that finished long ago is
// returned at once.
func (c *Client) Wait(ctx context.Context, batchID string, onProgress func(Progress)) (*Aggregate, error) {
	if !messages.ValidToken(batchID) {
		return nil, messages.Errorf(messages.CodeInvalidRequest, "batch_id: %q is not a batch id", batchID)
	}
	if onProgress != nil {
		sub, err := c.nc.Subscribe(c.names.Progress(batchID), func(m *nats.Msg) {
			// Anyone in this connection's account can have a message
			// delivered here (a reply aimed at this subject): only the
			// batch's own progress is passed on.
			var p Progress
			if json.Unmarshal(m.Data, &p) == nil && p.BatchID == batchID {
				onProgress(p)
			}
		})
		if err != nil {
			return nil, err
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	agg, err := c.awaitAggregate(ctx, batchID)
	if err != nil {
		return nil, err
	}
	var results []ItemResult
	err = objects.Results(ctx, c.js, agg, func(r ItemResult) error {
		if err := c.claimOutput(ctx, &r); err != nil {
			return err
		}
		results = append(results, r)
		return nil
	})
	agg.Results = results
	return agg, err
}

// claimOutput fills an item result's Output from the object store when the
// worker sent it by reference (claim check), so that callers see outputs
// of any size the same way.
func (c *Client) claimOutput(ctx context.Context, r *ItemResult) error {
	if r.OutputRef == nil || r.Output != nil {
		return nil
	}
	b, err := objects.ReadRef(ctx, c.js, r.OutputRef)
	if err != nil {
		return fmt.Errorf("output of item %d: %w", r.Item, err)
	}
	r.Output = b
	return nil
}
