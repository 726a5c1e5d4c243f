package export_test

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/fanoutdev/fanout/internal/tracing/export"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// Export is off unless an OTLP endpoint or OTEL_TRACES_EXPORTER=otlp is
// set; OTEL_SDK_DISABLED and OTEL_TRACES_EXPORTER=none turn it off; bad
// values are errors.
func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		vars   map[string]string
		on     bool
		failed bool
	}{
		{vars: nil},
		{vars: map[string]string{"OTEL_TRACES_SAMPLER": "always_on"}},
		{vars: map[string]string{"OTEL_SERVICE_NAME": "x"}},
		{vars: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, on: true},
		{vars: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, on: true},
		{vars: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{vars: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}},
		{vars: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}},
		{vars: map[string]string{"OTEL_SDK_DISABLED": "yes"}, failed: true},
		{vars: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, failed: true},
		{vars: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, on: true},
		{vars: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, failed: true},
		{vars: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, failed: true},
		{vars: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}, on: true},
		{vars: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, failed: true},
	} {
		on, err := export.Enabled(env(tc.vars))
		if on != tc.on || (err != nil) != tc.failed {
			t.Errorf("%v: on %v, error %v; want on %v, error %v", tc.vars, on, err, tc.on, tc.failed)
		}
	}
}

// With nothing configured, Setup starts no exporter and gives no provider.
func TestSetupOffStartsNothing(t *testing.T) {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	tr, err := export.Setup(context.Background(), "test", zerolog.Nop())
	if err != nil || tr != nil || tr.Provider() != nil {
		t.Fatalf("Setup with nothing set: %v, %v", tr, err)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// With an endpoint set, Setup gives a recording provider; a collector that
// is not there loses spans but stops nothing.
func TestSetupOn(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_SERVICE_NAME", "fanout-test")
	tr, err := export.Setup(context.Background(), "test", zerolog.Nop())
	if err != nil || tr == nil {
		t.Fatalf("Setup: %v, %v", tr, err)
	}
	_, span := tr.Provider().Tracer("t").Start(context.Background(), "s")
	if !span.IsRecording() {
		t.Error("span not recording")
	}
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), export.ShutdownTimeout)
	defer cancel()
	_ = tr.Shutdown(ctx) // the export fails: nothing listens
}
