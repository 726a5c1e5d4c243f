package worker

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/tracing"
)

// msgTrace is what the spans of one work message's items need. The zero
// msgTrace (no trace context on the message, no tracer provider) makes
// no spans and costs nothing.
type msgTrace struct {
	on       bool
	batch    trace.SpanContext // the batch's span, from the message's headers
	subject  string
	msgID    string
	activity string
}

func (w *Worker) msgTrace(msg *nats.Msg, activity string) msgTrace {
	if !w.tracing && !tracing.HasContext(msg.Header) {
		return msgTrace{}
	}
	return msgTrace{
		on:       true,
		batch:    trace.SpanContextFromContext(tracing.Extract(context.Background(), msg.Header)),
		subject:  msg.Subject,
		msgID:    msg.Header.Get(jetstream.MsgIDHeader),
		activity: activity,
	}
}

// startItem starts the span of one attempt of one item, a child of the
// batch's span, and returns ctx carrying it: the handler's own spans nest
// under it. Without a tracer provider the span records nothing but still
// carries the batch's context to the handler. nil when t is off.
func (w *Worker) startItem(ctx context.Context, t *msgTrace, wm *messages.WorkMessage, item, attempt, maxAttempts int) (context.Context, trace.Span) {
	if !t.on {
		return ctx, nil
	}
	if t.batch.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, t.batch)
	}
	if !w.tracing {
		return w.tracer.Start(ctx, "")
	}
	ctx, span := w.tracer.Start(ctx, tracing.SpanName(tracing.SpanProcess, t.activity),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(tracing.Messaging(tracing.OpProcess, "process", t.subject)...),
		trace.WithAttributes(
			tracing.ConsumerGroup(w.names.WorkConsumer(t.activity)),
			tracing.MessageID(t.msgID),
			tracing.BatchIDKey.String(wm.BatchID), tracing.ItemKey.Int(item), tracing.ActivityKey.String(t.activity),
			tracing.AttemptKey.Int(attempt), tracing.MaxAttemptsKey.Int(maxAttempts),
			tracing.WorkerKey.String(w.cfg.name),
		))
	if wm.Step != "" {
		span.SetAttributes(tracing.StepKey.String(string(wm.Step)))
	}
	return ctx, span
}

// endItem ends an item's span with the attempt's outcome (succeeded,
// failed, retried) and returns its context, which the item's result
// carries. A nil span gives the zero context.
func endItem(span trace.Span, outcome string, err error) trace.SpanContext {
	if span == nil {
		return trace.SpanContext{}
	}
	if span.IsRecording() {
		span.SetAttributes(tracing.OutcomeKey.String(outcome))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	return span.SpanContext()
}

// gaveUpSpan records an item failed without running: every delivery
// before was lost.
func (w *Worker) gaveUpSpan(t *msgTrace, wm *messages.WorkMessage, item, attempt, maxAttempts int, reason string) trace.SpanContext {
	_, span := w.startItem(context.Background(), t, wm, item, attempt, maxAttempts)
	if span != nil && span.IsRecording() {
		span.SetAttributes(tracing.GaveUpKey.Bool(true))
	}
	return endItem(span, "failed", errString(reason))
}

type errString string

func (e errString) Error() string { return string(e) }

// resultMsg is the message of a result: with the trace context of its
// item's span when it has one.
func resultMsg(subject string, data []byte, sc trace.SpanContext) *nats.Msg {
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	tracing.HeadersOf(sc).Set(msg.Header)
	return msg
}
