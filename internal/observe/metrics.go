package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CoordinatorMetrics are the coordinator's Prometheus metrics. A nil
// *CoordinatorMetrics records nothing.
type CoordinatorMetrics struct {
	batches       *prometheus.CounterVec
	running       prometheus.Gauge
	published     *prometheus.CounterVec
	counted       *prometheus.CounterVec
	checkpointLag prometheus.Histogram
	inFlight      prometheus.Gauge
	ignored       *prometheus.CounterVec
}

// NewCoordinatorMetrics registers the coordinator's metrics on reg.
func NewCoordinatorMetrics(reg prometheus.Registerer) *CoordinatorMetrics {
	m := &CoordinatorMetrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_batches_finished_total", Help: "Batches finished by this coordinator, by final status.",
		}, []string{"status"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fanout_batches_running", Help: "Batches this coordinator is driving now.",
		}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_items_published_total", Help: "Work messages published, by activity.",
		}, []string{"activity"}),
		counted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_items_counted_total", Help: "Item results counted into batches, by activity and outcome (succeeded, failed).",
		}, []string{"activity", "outcome"}),
		checkpointLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fanout_checkpoint_results", Help: "Results counted but not yet saved, at each checkpoint.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fanout_items_in_flight", Help: "Items published and not yet counted, over the batches this coordinator drives.",
		}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_ignored_total",
			Help: "Values read back that were not fanout's own and were ignored or repaired, by kind: state, result, aggregate, token, early_result (stored under a batch's results before it was accepted).",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.batches, m.running, m.published, m.counted, m.checkpointLag, m.inFlight, m.ignored)
	return m
}

func (m *CoordinatorMetrics) BatchStarted() {
	if m != nil {
		m.running.Inc()
	}
}

func (m *CoordinatorMetrics) BatchStopped() {
	if m != nil {
		m.running.Dec()
	}
}

func (m *CoordinatorMetrics) BatchFinished(status string) {
	if m != nil {
		m.batches.WithLabelValues(status).Inc()
	}
}

func (m *CoordinatorMetrics) Published(activity string, n int) {
	if m != nil && n > 0 {
		m.published.WithLabelValues(activity).Add(float64(n))
		m.inFlight.Add(float64(n))
	}
}

func (m *CoordinatorMetrics) Counted(activity string, ok bool) {
	if m == nil {
		return
	}
	outcome := "failed"
	if ok {
		outcome = "succeeded"
	}
	m.counted.WithLabelValues(activity, outcome).Inc()
	m.inFlight.Dec()
}

// Released forgets n in-flight items of a batch this coordinator let go.
func (m *CoordinatorMetrics) Released(n int) {
	if m != nil && n > 0 {
		m.inFlight.Sub(float64(n))
	}
}

func (m *CoordinatorMetrics) Checkpointed(results int) {
	if m != nil {
		m.checkpointLag.Observe(float64(results))
	}
}

// WorkerMetrics are a worker's Prometheus metrics; it implements the
// worker SDK's Observer.
type WorkerMetrics struct {
	items       *prometheus.CounterVec
	redelivered *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	inUse       prometheus.Gauge
	concurrency prometheus.Gauge
}

// NewWorkerMetrics registers a worker's metrics on reg.
func NewWorkerMetrics(reg prometheus.Registerer, concurrency int) *WorkerMetrics {
	m := &WorkerMetrics{
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_worker_items_total", Help: "Item attempts run by this worker, by activity and outcome (succeeded, failed, retried).",
		}, []string{"activity", "outcome"}),
		redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_worker_redelivered_total", Help: "Items received that had been delivered before, by activity.",
		}, []string{"activity"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fanout_worker_item_duration_seconds", Help: "Handler run time per attempt, by activity.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12),
		}, []string{"activity"}),
		inUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fanout_worker_concurrency_in_use", Help: "Items running in this worker now.",
		}),
		concurrency: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fanout_worker_concurrency", Help: "Items this worker may run at once.",
		}),
	}
	m.concurrency.Set(float64(concurrency))
	reg.MustRegister(m.items, m.redelivered, m.duration, m.inUse, m.concurrency)
	return m
}

// ItemStarted implements worker.Observer.
func (m *WorkerMetrics) ItemStarted(activity string, attempt int) {
	m.inUse.Inc()
	if attempt > 1 {
		m.redelivered.WithLabelValues(activity).Inc()
	}
}

// ItemFinished implements worker.Observer.
func (m *WorkerMetrics) ItemFinished(activity string, outcome string, d time.Duration) {
	m.inUse.Dec()
	m.items.WithLabelValues(activity, outcome).Inc()
	m.duration.WithLabelValues(activity).Observe(d.Seconds())
}

// Ignored counts n values of a kind read back and not taken.
func (m *CoordinatorMetrics) Ignored(kind string, n uint64) {
	if m != nil {
		m.ignored.WithLabelValues(kind).Add(float64(n))
	}
}
