package bench

import (
	"context"
	"testing"
	"time"
)

// The go test -bench entry points: short versions of (a), (b) and (d), each
// on its own embedded server with file storage (for memory storage and
// everything else, use `fanout bench`). b.N is the number of items for the
// throughputs and the number of batches for the latencies, so run them
// apart:
//
//	go test -run '^$' -bench 'RawRoundTrip|FanoutEndToEnd' -benchtime 20000x ./internal/bench
//	go test -run '^$' -bench Latency -benchtime 50x ./internal/bench

func benchConfig(b *testing.B) Config {
	cfg := Config{DataDir: b.TempDir(), MaxPayload: MaxPayloadCap}.withDefaults()
	if err := cfg.validate(); err != nil {
		b.Fatal(err)
	}
	return cfg
}

func benchServerFor(b *testing.B, cfg Config) *benchServer {
	srv, err := startServer(cfg, cfg.MaxPayload)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.stop)
	return srv
}

// BenchmarkRawRoundTrip is (a): b.N items through the bare JetStream round
// trip.
func BenchmarkRawRoundTrip(b *testing.B) {
	for _, guard := range []bool{false, true} {
		name := "plain"
		if guard {
			name = "guard"
		}
		b.Run(name, func(b *testing.B) {
			cfg := benchConfig(b)
			srv := benchServerFor(b, cfg)
			payloads := rawPayloads(b.N, cfg.ItemSize)
			rig, err := newRawRig(context.Background(), srv.url, cfg, guard)
			if err != nil {
				b.Fatal(err)
			}
			defer rig.close()
			b.ResetTimer()
			c0 := cpuTime()
			d, err := rig.roundTrip(context.Background(), payloads)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(rate(b.N, d), "items/s")
			b.ReportMetric(perItem(cpuTime()-c0, b.N), "cpu-µs/item")
		})
	}
}

// BenchmarkFanoutEndToEnd is (b): one batch of b.N sha256 items, submit to
// aggregate.
func BenchmarkFanoutEndToEnd(b *testing.B) {
	cfg := benchConfig(b)
	srv := benchServerFor(b, cfg)
	dep, err := startFanout(context.Background(), srv.url, fanoutPrefix, cfg, true)
	if err != nil {
		b.Fatal(err)
	}
	defer dep.stop()
	items := makeItems(b.N, cfg.ItemSize)
	b.ResetTimer()
	br, err := dep.batch(context.Background(), items, batchOptions(cfg), false)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(rate(b.N, br.took), "items/s")
	b.ReportMetric(perItem(br.cpu, b.N), "cpu-µs/item")
}

// BenchmarkLatency is (d): b.N batches of 10 items, one after the other,
// fanout and raw.
func BenchmarkLatency(b *testing.B) {
	b.Run("fanout", func(b *testing.B) {
		cfg := benchConfig(b)
		srv := benchServerFor(b, cfg)
		dep, err := startFanout(context.Background(), srv.url, fanoutPrefix, cfg, true)
		if err != nil {
			b.Fatal(err)
		}
		defer dep.stop()
		items := makeItems(cfg.LatencyItems, cfg.ItemSize)
		measureLatency(b, func() (time.Duration, error) {
			br, err := dep.batch(context.Background(), items, batchOptions(cfg), false)
			return br.took, err
		})
	})
	b.Run("raw", func(b *testing.B) {
		cfg := benchConfig(b)
		srv := benchServerFor(b, cfg)
		rig, err := newRawRig(context.Background(), srv.url, cfg, false)
		if err != nil {
			b.Fatal(err)
		}
		defer rig.close()
		payloads := rawPayloads(cfg.LatencyItems, cfg.ItemSize)
		measureLatency(b, func() (time.Duration, error) { return rig.roundTrip(context.Background(), payloads) })
	})
}

func measureLatency(b *testing.B, once func() (time.Duration, error)) {
	var samples []float64
	b.ResetTimer()
	for range b.N {
		d, err := once()
		if err != nil {
			b.Fatal(err)
		}
		samples = append(samples, ms(d))
	}
	b.StopTimer()
	b.ReportMetric(percentile(samples, 50), "p50-ms")
	b.ReportMetric(percentile(samples, 99), "p99-ms")
}
