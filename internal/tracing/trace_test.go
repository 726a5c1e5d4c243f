package tracing_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/internal/tracing"
	"github.com/fanoutdev/fanout/worker"
)

var names = messages.MustNames(messages.DefaultPrefix)

// tracedActivity is a handler that starts a span of its own from its ctx
// and fails as its input says: {"fail": true} for good, {"retry": true}
// on its first attempt only.
func tracedActivity(tp trace.TracerProvider) worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
		_, span := tp.Tracer("handler").Start(ctx, "handler work")
		defer span.End()
		var in struct{ Fail, Retry bool }
		if err := json.Unmarshal(input, &in); err != nil {
			return nil, worker.Permanent(err)
		}
		info, _ := worker.InfoFrom(ctx)
		switch {
		case in.Fail:
			return nil, worker.Permanent(errors.New("this item fails"))
		case in.Retry && info.Attempt == 1:
			return nil, errors.New("this item fails on its first attempt")
		}
		return json.RawMessage(`{"ok":true}`), nil
	})
}

func items(t *testing.T, vs ...string) []json.RawMessage {
	t.Helper()
	out := make([]json.RawMessage, len(vs))
	for i, v := range vs {
		out[i] = json.RawMessage(v)
	}
	return out
}

// awaitSpan polls the recorder until an ended span matches, or fails.
// lastMsg reads the message last stored on subject in stream.
func lastMsg(t *testing.T, js jetstream.JetStream, stream, subject string) *jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatalf("%s in %s: %v", subject, stream, err)
	}
	return m
}

func awaitSpan(t *testing.T, rec *tracetest.SpanRecorder, what string, match func(sdktrace.ReadOnlySpan) bool) sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, s := range rec.Ended() {
			if match(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s span ended within 15s; ended: %v", what, spanNames(rec.Ended()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// TestOneTracePerBatch: a batch submitted under a caller's span makes one
// trace: caller → submit (client) → accept (coordinator) → batch → one
// process span per attempt of every item (a retried one twice, a failed
// one with an error) → the handler's own span. The results and the
// aggregate carry the trace id.
func TestOneTracePerBatch(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	env.Coordinator(func(c *coordinator.Config) { c.TracerProvider = tp })
	env.Worker(func(w *worker.Worker) { w.Handle("traced", tracedActivity(tp)) }, worker.WithTracerProvider(tp))
	cl, err := client.New(env.Conn, client.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	callerCtx, caller := tp.Tracer("test").Start(ctx, "caller")
	r, err := cl.Submit(callerCtx, client.BatchRequest{
		Activity: "traced",
		Items:    items(t, `{}`, `{"retry":true}`, `{"fail":true}`, `{}`),
		Options:  client.Options{MaxAttempts: 3, Backoff: []client.Duration{client.Duration(10 * time.Millisecond)}},
	})
	caller.End()
	if err != nil {
		t.Fatal(err)
	}
	agg, err := cl.Wait(ctx, r.BatchID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if agg.Succeeded != 3 || agg.Failed != 1 {
		t.Fatalf("aggregate: %d succeeded, %d failed; want 3 and 1", agg.Succeeded, agg.Failed)
	}
	traceID := caller.SpanContext().TraceID()

	batch := awaitSpan(t, rec, "batch", func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "batch traced" })
	submit := awaitSpan(t, rec, "submit", func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "submit traced" })
	accept := awaitSpan(t, rec, "accept", func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "accept traced" })
	parentIs := func(child, parent sdktrace.ReadOnlySpan) {
		t.Helper()
		if child.SpanContext().TraceID() != traceID {
			t.Errorf("span %q is in trace %s, want %s", child.Name(), child.SpanContext().TraceID(), traceID)
		}
		if child.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %q has parent %s, want %q (%s)", child.Name(), child.Parent().SpanID(), parent.Name(), parent.SpanContext().SpanID())
		}
	}
	callerSpan := awaitSpan(t, rec, "caller", func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "caller" })
	parentIs(submit, callerSpan)
	parentIs(accept, submit)
	parentIs(batch, accept)
	if got := attr(batch, "fanout.outcome"); got != "completed" {
		t.Errorf("batch span outcome %q, want completed", got)
	}
	if got := attr(batch, "fanout.batch.id"); got != r.BatchID {
		t.Errorf("batch span batch id %q, want %s", got, r.BatchID)
	}

	// Every attempt's process span is a child of the batch span; every
	// handler span a child of its attempt's process span.
	type attemptKey struct{ item, attempt string }
	process := map[attemptKey]sdktrace.ReadOnlySpan{}
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.Name() == "process traced" {
			parentIs(s, batch)
			process[attemptKey{attr(s, "fanout.item"), attr(s, "fanout.attempt")}] = s
			byID[s.SpanContext().SpanID()] = s
		}
	}
	want := map[attemptKey]string{
		{"0", "1"}: "succeeded", {"1", "1"}: "retried", {"1", "2"}: "succeeded", {"2", "1"}: "failed", {"3", "1"}: "succeeded",
	}
	for k, outcome := range want {
		s, ok := process[k]
		if !ok {
			t.Errorf("no process span of item %s attempt %s", k.item, k.attempt)
			continue
		}
		if got := attr(s, "fanout.outcome"); got != outcome {
			t.Errorf("item %s attempt %s: outcome %q, want %q", k.item, k.attempt, got, outcome)
		}
		if attr(s, "fanout.batch.id") != r.BatchID || attr(s, "fanout.activity") != "traced" || attr(s, "messaging.system") != "nats" {
			t.Errorf("item %s attempt %s: attributes %v", k.item, k.attempt, s.Attributes())
		}
		if (outcome != "succeeded") != (s.Status().Code.String() == "Error") {
			t.Errorf("item %s attempt %s: status %v for outcome %s", k.item, k.attempt, s.Status(), outcome)
		}
	}
	if len(process) != len(want) {
		t.Errorf("%d process spans, want %d", len(process), len(want))
	}
	children := map[trace.SpanID]int{} // handler spans per process span
	for _, s := range rec.Ended() {
		if s.Name() == "handler work" {
			if _, ok := byID[s.Parent().SpanID()]; !ok || s.SpanContext().TraceID() != traceID {
				t.Errorf("handler span %s has parent %s, which is no process span of the trace", s.SpanContext().SpanID(), s.Parent().SpanID())
				continue
			}
			children[s.Parent().SpanID()]++
		}
	}
	for id, p := range byID {
		if children[id] != 1 {
			t.Errorf("process span of item %s attempt %s has %d handler spans under it, want 1", attr(p, "fanout.item"), attr(p, "fanout.attempt"), children[id])
		}
	}

	// The results and the aggregate carry the trace id.
	js, err := jetstream.New(env.Conn)
	if err != nil {
		t.Fatal(err)
	}
	for item := range 4 {
		m := lastMsg(t, js, names.ResultsStream(), names.Result(r.BatchID, item))
		if tp := m.Header.Get(tracing.TraceParent); !strings.Contains(tp, traceID.String()) {
			t.Errorf("result of item %d: traceparent %q, want trace %s", item, tp, traceID)
		}
	}
	done := lastMsg(t, js, names.DoneStream(), names.Done(r.BatchID))
	if got := done.Header.Get(tracing.TraceParent); got != fmt.Sprintf("00-%s-%s-01", traceID, batch.SpanContext().SpanID()) {
		t.Errorf("aggregate traceparent %q, want the batch span's", got)
	}
}

// TestPlainRequestTraceparent: a submit sent with a traceparent header by
// any NATS client (nats req -H traceparent:...) puts the batch under it.
func TestPlainRequestTraceparent(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	env.Coordinator(func(c *coordinator.Config) { c.TracerProvider = tp })
	env.Worker(nil, worker.WithTracerProvider(tp))

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req := nats.NewMsg(names.Submit())
	req.Data = []byte(`{"activity":"echo","items":[1,2]}`)
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	req.Header.Set("tracestate", "vendor=x")
	reply, err := env.Conn.RequestMsg(req, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r client.SubmitReply
	if err := json.Unmarshal(reply.Data, &r); err != nil || r.BatchID == "" {
		t.Fatalf("reply %s: %v", reply.Data, err)
	}
	env.Wait(r.BatchID, 15*time.Second)
	accept := awaitSpan(t, rec, "accept", func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "accept echo" })
	if accept.SpanContext().TraceID().String() != traceID || accept.Parent().SpanID().String() != parentID || !accept.Parent().IsRemote() {
		t.Errorf("accept span in trace %s under %s, want trace %s under the remote %s", accept.SpanContext().TraceID(), accept.Parent().SpanID(), traceID, parentID)
	}
	if got := accept.SpanContext().TraceState().Get("vendor"); got != "x" {
		t.Errorf("tracestate vendor=%q, want x", got)
	}
	batch := awaitSpan(t, rec, "batch", func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "batch echo" })
	if batch.Parent().SpanID() != accept.SpanContext().SpanID() {
		t.Errorf("batch span under %s, want the accept span %s", batch.Parent().SpanID(), accept.SpanContext().SpanID())
	}
	for range 2 {
		awaitSpan(t, rec, "process", func(s sdktrace.ReadOnlySpan) bool {
			return s.Name() == "process echo" && s.Parent().SpanID() == batch.SpanContext().SpanID()
		})
	}
}

// TestContextPassedOnWithoutTracing: with no tracer provider anywhere, the
// trace context a submit carries still reaches the handler's ctx, so the
// handler's own spans join the caller's trace.
func TestContextPassedOnWithoutTracing(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	got := make(chan trace.SpanContext, 1)
	env.Worker(func(w *worker.Worker) {
		w.HandleFunc("probe", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			got <- trace.SpanContextFromContext(ctx)
			return json.RawMessage(`1`), nil
		})
	})
	caller := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), caller)
	r, err := env.Client.Submit(ctx, client.BatchRequest{Activity: "probe", Items: items(t, `1`)})
	if err != nil {
		t.Fatal(err)
	}
	env.Wait(r.BatchID, 15*time.Second)
	sc := <-got
	if sc.TraceID() != caller.TraceID() || sc.SpanID() != caller.SpanID() || !sc.IsRemote() {
		t.Errorf("handler's span context: trace %s span %s remote %v, want the caller's %s %s", sc.TraceID(), sc.SpanID(), sc.IsRemote(), caller.TraceID(), caller.SpanID())
	}
}

// TestNoContextNoHeaders: without tracing and without a trace context,
// no work message, result or aggregate carries a trace header.
func TestNoContextNoHeaders(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil)
	r := env.Submit(client.BatchRequest{Activity: "echo", Items: items(t, `1`, `2`)})
	env.Wait(r.BatchID, 15*time.Second)
	js, err := jetstream.New(env.Conn)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, h nats.Header) {
		if tracing.HasContext(h) || h.Get(tracing.TraceState) != "" {
			t.Errorf("%s carries trace headers: %v", what, h)
		}
	}
	for item := range 2 {
		m := lastMsg(t, js, names.ResultsStream(), names.Result(r.BatchID, item))
		check("result", m.Header)
	}
	done := lastMsg(t, js, names.DoneStream(), names.Done(r.BatchID))
	check("aggregate", done.Header)
	tok := lastMsg(t, js, names.ControlStream(), names.Token(r.BatchID))
	check("token", tok.Header)
}
