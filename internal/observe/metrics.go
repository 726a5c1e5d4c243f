package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fanoutdev/fanout/internal/messages"
)

// CoordinatorMetrics are the coordinator's Prometheus metrics. A nil
// *CoordinatorMetrics records nothing.
type CoordinatorMetrics struct {
	batches       *prometheus.CounterVec
	batchDuration *prometheus.HistogramVec
	refused       *prometheus.CounterVec
	takeovers     prometheus.Counter
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
		batchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fanout_batch_duration_seconds",
			Help:    "Time from a batch's acceptance to its end, by activity and outcome (its final status), for batches this coordinator finished.",
			Buckets: BatchBuckets,
		}, []string{"activity", "outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fanout_requests_refused_total",
			Help: "Requests answered with an error, by request (submit, status, cancel, update, redrive) and error code.",
		}, []string{"request", "code"}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fanout_batch_takeovers_total",
			Help: "Batches this coordinator resumed from another driver's checkpoint (that coordinator died, stopped or lost its lease).",
		}),
	}
	// Present from the start, at zero: a rate over a series that appears
	// with its first increment misses that increment.
	for _, s := range messages.FinalStatuses {
		m.batches.WithLabelValues(string(s))
	}
	for _, r := range messages.Requests {
		for _, code := range messages.Codes {
			m.refused.WithLabelValues(r, code)
		}
	}
	for _, kind := range IgnoredKinds {
		m.ignored.WithLabelValues(kind)
	}
	reg.MustRegister(m.batches, m.running, m.published, m.counted, m.checkpointLag, m.inFlight, m.ignored,
		m.batchDuration, m.refused, m.takeovers)
	return m
}

// IgnoredKinds are the kinds of fanout_ignored_total.
var IgnoredKinds = []string{"state", "result", "aggregate", "token", "early_result"}

// BatchBuckets fit batches of a few items (milliseconds) to batches of a
// day.
var BatchBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400}

// ItemBuckets fit items of a fraction of a millisecond (a hash) to items
// of an hour (a video encode), for both run time and queue wait.
var ItemBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// Activity makes the series of an activity, at zero, when a batch of it
// starts.
func (m *CoordinatorMetrics) Activity(activity string) {
	if m == nil {
		return
	}
	m.published.WithLabelValues(activity)
	m.counted.WithLabelValues(activity, "succeeded")
	m.counted.WithLabelValues(activity, "failed")
}

// Refused counts a request answered with an error code.
func (m *CoordinatorMetrics) Refused(request, code string) {
	if m != nil {
		m.refused.WithLabelValues(request, code).Inc()
	}
}

// TakenOver counts a batch resumed from another driver.
func (m *CoordinatorMetrics) TakenOver() {
	if m != nil {
		m.takeovers.Inc()
	}
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

// BatchFinished counts a batch this coordinator ended, d after it was
// accepted.
func (m *CoordinatorMetrics) BatchFinished(activity, status string, d time.Duration) {
	if m != nil {
		m.batches.WithLabelValues(status).Inc()
		m.batchDuration.WithLabelValues(activity, status).Observe(d.Seconds())
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
	queueWait   *prometheus.HistogramVec
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
			Buckets: ItemBuckets,
		}, []string{"activity"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fanout_worker_item_queue_wait_seconds",
			Help:    "Time from an item's work message being stored in the work stream to its first attempt starting, by activity (the server's clock against the worker's).",
			Buckets: ItemBuckets,
		}, []string{"activity"}),
		inUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fanout_worker_concurrency_in_use", Help: "Items running in this worker now.",
		}),
		concurrency: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fanout_worker_concurrency", Help: "Items this worker may run at once.",
		}),
	}
	m.concurrency.Set(float64(concurrency))
	reg.MustRegister(m.items, m.redelivered, m.duration, m.inUse, m.concurrency, m.queueWait)
	return m
}

// Activities makes the series of the activities served, at zero.
func (m *WorkerMetrics) Activities(activities []string) {
	for _, a := range activities {
		for _, outcome := range []string{"succeeded", "failed", "retried"} {
			m.items.WithLabelValues(a, outcome)
		}
		m.redelivered.WithLabelValues(a)
		m.duration.WithLabelValues(a)
		m.queueWait.WithLabelValues(a)
	}
}

// ItemQueued implements worker.QueueObserver.
func (m *WorkerMetrics) ItemQueued(activity string, wait time.Duration) {
	m.queueWait.WithLabelValues(activity).Observe(max(wait, 0).Seconds())
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
