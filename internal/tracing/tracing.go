// Package tracing carries OpenTelemetry trace context through fanout's
// NATS messages as W3C Trace Context headers (traceparent, tracestate),
// and names fanout's spans and their attributes. It needs only the
// OpenTelemetry API: the SDK and the exporters (internal/tracing/export)
// stay out of what the worker SDK and the client import.
//
// With no tracer provider configured and no trace context on a message,
// nothing here allocates: the hot paths (a work message, a result) only
// look a header up.
package tracing

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The W3C Trace Context header names, as fanout writes them.
const (
	TraceParent = "traceparent"
	TraceState  = "tracestate"
)

// ScopeName names fanout's tracers (the instrumentation scope).
const ScopeName = "github.com/fanoutdev/fanout"

// propagator is W3C Trace Context, whatever the global propagator is: the
// headers are part of the wire contract (docs/protocol.md), not a choice
// of the process.
var propagator = propagation.TraceContext{}

// Tracer returns fanout's tracer of tp; a nil tp gives a tracer that
// records nothing (it still passes a parent's context on).
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(ScopeName)
}

// Recording reports whether tp records spans: false for nil and for the
// no-op provider.
func Recording(tp trace.TracerProvider) bool {
	if tp == nil {
		return false
	}
	_, isNoop := tp.(noop.TracerProvider)
	return !isNoop
}

// carrier adapts a nats.Header (whose keys are case-sensitive) to the
// propagator.
type carrier nats.Header

func (c carrier) Get(key string) string {
	if v := nats.Header(c).Get(key); v != "" {
		return v
	}
	for k, v := range c { // a sender that wrote Traceparent
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

func (c carrier) Set(key, value string) { c[key] = []string{value} }

func (c carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// HasContext reports whether h carries a traceparent, without allocating.
func HasContext(h nats.Header) bool {
	if len(h) == 0 {
		return false
	}
	if h.Get(TraceParent) != "" {
		return true
	}
	for k := range h {
		if strings.EqualFold(k, TraceParent) {
			return true
		}
	}
	return false
}

// Extract returns ctx with the remote span context of h, or ctx itself when
// h carries none (or an invalid one).
func Extract(ctx context.Context, h nats.Header) context.Context {
	if !HasContext(h) {
		return ctx
	}
	return propagator.Extract(ctx, carrier(h))
}

// Inject writes the span context of ctx to h; nothing when ctx has no
// valid span context. h must not be nil.
func Inject(ctx context.Context, h nats.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagator.Inject(ctx, carrier(h))
	}
}

// Headers are the encoded headers of one span context, made once and set
// on many messages (a batch's work messages) without allocating.
type Headers struct {
	parent, state []string
}

// HeadersOf encodes sc; the zero Headers (sc invalid) sets nothing.
func HeadersOf(sc trace.SpanContext) Headers {
	if !sc.IsValid() {
		return Headers{}
	}
	h := nats.Header{}
	propagator.Inject(trace.ContextWithSpanContext(context.Background(), sc), carrier(h))
	return Headers{parent: h[TraceParent], state: h[TraceState]}
}

// Set writes the headers to h (which must not be nil). The values are
// shared between messages: nothing may change them in place.
func (t Headers) Set(h nats.Header) {
	if t.parent != nil {
		h[TraceParent] = t.parent
	}
	if t.state != nil {
		h[TraceState] = t.state
	}
}

// Span names: an operation and the activity (low cardinality, so that a
// tracing backend groups them).
const (
	SpanSubmit  = "submit"  // client: the submit request (kind client)
	SpanRedrive = "redrive" // client: a redrive request (kind client)
	SpanAccept  = "accept"  // coordinator: a submit or redrive handled (kind server)
	SpanBatch   = "batch"   // coordinator: a batch driven, from its token to its aggregate
	SpanProcess = "process" // worker: one attempt of one item's handler (kind consumer)
)

// SpanName is "<operation> <activity>", or the operation alone.
func SpanName(op, activity string) string {
	if activity == "" {
		return op
	}
	return op + " " + activity
}

// Attribute keys of fanout's own (the messaging ones are OpenTelemetry's
// semantic conventions).
const (
	BatchIDKey     = attribute.Key("fanout.batch.id")
	ItemKey        = attribute.Key("fanout.item")
	ActivityKey    = attribute.Key("fanout.activity")
	AttemptKey     = attribute.Key("fanout.attempt")
	MaxAttemptsKey = attribute.Key("fanout.max_attempts")
	OutcomeKey     = attribute.Key("fanout.outcome")
	StepKey        = attribute.Key("fanout.step")
	TotalKey       = attribute.Key("fanout.batch.total")
	SucceededKey   = attribute.Key("fanout.batch.succeeded")
	FailedKey      = attribute.Key("fanout.batch.failed")
	EpochKey       = attribute.Key("fanout.batch.epoch")
	ResumedKey     = attribute.Key("fanout.batch.resumed")
	ErrorCodeKey   = attribute.Key("fanout.error.code")
	CoordinatorKey = attribute.Key("fanout.coordinator")
	WorkerKey      = attribute.Key("fanout.worker")
	RedriveOfKey   = attribute.Key("fanout.batch.redrive_of")
	ExistingKey    = attribute.Key("fanout.batch.existing")
	GaveUpKey      = attribute.Key("fanout.gave_up")
	ReasonKey      = attribute.Key("fanout.batch.reason")
	HandedBackKey  = attribute.Key("fanout.batch.handed_back")
)

// Messaging returns the messaging attributes of an operation on a NATS
// subject (OpenTelemetry's messaging conventions).
func Messaging(op attribute.KeyValue, opName, subject string) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		op,
		semconv.MessagingOperationName(opName),
		semconv.MessagingDestinationName(subject),
	}
}

// Operation types of the messaging conventions.
var (
	OpSend    = semconv.MessagingOperationTypeSend
	OpProcess = semconv.MessagingOperationTypeProcess
)

// ConsumerGroup is the messaging.consumer.group.name attribute.
func ConsumerGroup(name string) attribute.KeyValue { return semconv.MessagingConsumerGroupName(name) }

// MessageID is the messaging.message.id attribute.
func MessageID(id string) attribute.KeyValue { return semconv.MessagingMessageID(id) }

// ErrorType is the error.type attribute.
func ErrorType(t string) attribute.KeyValue { return semconv.ErrorTypeKey.String(t) }
