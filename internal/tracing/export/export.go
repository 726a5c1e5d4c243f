// Package export sets up the export of a process's spans from the
// standard OpenTelemetry environment variables (OTEL_EXPORTER_OTLP_*,
// OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME, ...). Export is off unless an
// OTLP endpoint or OTEL_TRACES_EXPORTER=otlp is set: a process that sets
// nothing starts no exporter and records no spans.
//
// The OTLP exporters and the SDK read the variables themselves; this
// package only decides whether to export, over which protocol, and checks
// the values it reads so that a typo is an error rather than ignored.
package export

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing is a process's span export. A nil *Tracing exports nothing.
type Tracing struct {
	provider *sdktrace.TracerProvider
}

// Provider returns the tracer provider, or nil when export is off.
func (t *Tracing) Provider() trace.TracerProvider {
	if t == nil {
		return nil
	}
	return t.provider
}

// Shutdown flushes the spans not exported yet and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// Enabled reports whether the environment asks for span export, and
// checks the variables this package reads.
func Enabled(getenv func(string) string) (bool, error) {
	if v := strings.ToLower(strings.TrimSpace(getenv("OTEL_SDK_DISABLED"))); v != "" {
		switch v {
		case "true":
			return false, nil
		case "false":
		default:
			return false, fmt.Errorf("$OTEL_SDK_DISABLED=%q: use true or false", v)
		}
	}
	switch v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); v {
	case "none":
		return false, nil
	case "otlp":
	case "":
		// Off unless an endpoint says where to: a process configured with
		// nothing must start no exporter.
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return false, nil
		}
	default:
		return false, fmt.Errorf("$OTEL_TRACES_EXPORTER=%q: fanout exports spans with otlp (or none)", v)
	}
	if err := checkEnv(getenv); err != nil {
		return false, err
	}
	return true, nil
}

// checkEnv checks the protocol and the sampler, which the SDK would
// otherwise log and replace by its default.
func checkEnv(getenv func(string) string) error {
	if _, err := protocol(getenv); err != nil {
		return err
	}
	s := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	switch s {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
	case "traceidratio", "parentbased_traceidratio":
		if a := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG")); a != "" {
			r, err := strconv.ParseFloat(a, 64)
			if err != nil || r < 0 || r > 1 {
				return fmt.Errorf("$OTEL_TRACES_SAMPLER_ARG=%q: a ratio from 0 to 1, such as 0.1", a)
			}
		}
	default:
		return fmt.Errorf("$OTEL_TRACES_SAMPLER=%q: use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", s)
	}
	return nil
}

// protocol is the OTLP protocol the variables name: http/protobuf (the
// default) or grpc.
func protocol(getenv func(string) string) (string, error) {
	p := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	name := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if p == "" {
		p, name = getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	switch p {
	case "", "http/protobuf":
		return "http/protobuf", nil
	case "grpc":
		return "grpc", nil
	}
	return "", fmt.Errorf("$%s=%q: use http/protobuf or grpc", name, p)
}

// Setup starts span export when the environment asks for it, for the
// service named service (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
// override it). It returns nil when export is off. Errors of the exporter
// later on (a collector that cannot be reached) are logged to log, not
// returned: tracing never stops fanout.
func Setup(ctx context.Context, service string, log zerolog.Logger) (*Tracing, error) {
	on, err := Enabled(os.Getenv)
	if err != nil || !on {
		return nil, err
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn().Err(err).Msg("OpenTelemetry")
	}))
	proto, _ := protocol(os.Getenv)
	var client otlptrace.Client
	if proto == "grpc" {
		client = otlptracegrpc.NewClient()
	} else {
		client = otlptracehttp.NewClient()
	}
	// New does not connect: a collector that is down only loses spans.
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithFromEnv(), // last: OTEL_SERVICE_NAME wins
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info().Str("protocol", proto).Msg("exporting spans over OTLP")
	return &Tracing{provider: tp}, nil
}

// ShutdownTimeout bounds the flush of the last spans when a process stops.
const ShutdownTimeout = 5 * time.Second
