package security_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/topology"
	"github.com/fanoutdev/fanout/internal/tracing"
)

// The trace context a client sends survives both layouts: in the accounts
// layout the submit crosses a service import, the work reaches the worker
// through the imported JetStream API, its results cross a service import
// back, and the aggregate reaches the client through a stream export. The
// worker adds trace headers to a result only when its work message had
// them, so a result stored with the caller's trace id shows the whole way
// there; the aggregate the client receives carries it too. And the
// coordinator reads what its metrics show of JetStream within its role.
func TestTraceContextAcrossLayouts(t *testing.T) {
	t.Parallel()
	eachLayout(t, func(t *testing.T, d *deployment) {
		r := d.start()
		n := d.names
		aggs := subscribeTap(t, r.clientNC, n.AggregateAll())
		caller := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{0xfa, 0x40, 1, 2, 3}, SpanID: trace.SpanID{0x5b, 1}, TraceFlags: trace.FlagsSampled,
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		items := echoItems(3, 10)
		sub, err := r.client.Submit(trace.ContextWithSpanContext(ctx, caller), client.BatchRequest{Activity: "echo", Items: items})
		if err != nil {
			t.Fatalf("submit: %v (violations %q)", err, r.clientRec.violations())
		}
		if _, err := r.client.Wait(ctx, sub.BatchID, nil); err != nil {
			t.Fatalf("wait: %v", err)
		}
		want := caller.TraceID().String()
		js, err := topology.JetStream(r.clientNC, d.domain)
		if err != nil {
			t.Fatal(err)
		}
		results, err := js.Stream(ctx, n.ResultsStream())
		if err != nil {
			t.Fatal(err)
		}
		for i := range items {
			m, err := results.GetLastMsgForSubject(ctx, n.Result(sub.BatchID, i))
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header.Get(tracing.TraceParent); !strings.Contains(got, want) {
				t.Errorf("result of item %d stored with traceparent %q, want trace %s", i, got, want)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(aggs.all()) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		got := aggs.all()
		if len(got) != 1 {
			t.Fatalf("%d aggregates received, want 1", len(got))
		}
		if tp := got[0].Header.Get(tracing.TraceParent); !strings.Contains(tp, want) {
			t.Errorf("aggregate received with traceparent %q, want trace %s", tp, want)
		}
		// What a scrape of the coordinator's metrics reads of JetStream
		// is within its role.
		st, err := r.coord.JetStreamStats(ctx)
		if err != nil {
			t.Fatalf("JetStream stats with the coordinator's permissions: %v (violations %q)", err, r.coordRec.violations())
		}
		if len(st.Streams) != 6 || len(st.Activities) == 0 || st.Account == nil {
			t.Errorf("JetStream stats: %+v", st)
		}
		for _, a := range st.Activities {
			if a.Activity == "echo" && a.Workers != 1 {
				t.Errorf("activity echo: %d live workers, want 1", a.Workers)
			}
		}
		r.noViolations(t)
	})
}
