package observe

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// JetStreamStats is what a coordinator reads of JetStream when it is
// scraped: the operations alerts' view of the streams and the work queue.
type JetStreamStats struct {
	Streams []StreamStats
	// Activities: those with a consumer or with work stored.
	Activities []ActivityStats
	// Account is the JetStream account's use and limits (nil: unknown).
	Account *AccountStats
}

// StreamStats is a stream's use and its limits (a limit <= 0: none,
// exported as -1).
type StreamStats struct {
	Name                  string
	Messages, Bytes       uint64
	Consumers             int
	MaxMessages, MaxBytes int64
	MaxConsumers          int
}

// ActivityStats is an activity's work: messages stored in the work stream
// (queued or running), those delivered and not acked, the pull requests
// workers have waiting, and the live workers serving it.
type ActivityStats struct {
	Activity          string
	Messages          uint64
	AckPending        int
	PullRequests      int
	Workers           int
	WorkersConcurrent int // sum of the live workers' concurrency
}

// AccountStats is the JetStream account's storage use and limits (a
// limit <= 0: none).
type AccountStats struct {
	Memory, Store       uint64
	MaxMemory, MaxStore int64
}

// jetStreamCollector reads JetStreamStats at every scrape.
type jetStreamCollector struct {
	read func(context.Context) (*JetStreamStats, error)
	log  zerolog.Logger

	up, streamMsgs, streamBytes, streamConsumers, streamMaxMsgs, streamMaxBytes, streamMaxConsumers *prometheus.Desc
	workMsgs, workAckPending, workPulls, workers, workersConcurrency                                *prometheus.Desc
	accountBytes, accountMaxBytes                                                                   *prometheus.Desc
}

// NewJetStreamCollector makes the collector of the JetStream metrics; read
// is called at each scrape, with a 5 s deadline.
func NewJetStreamCollector(read func(context.Context) (*JetStreamStats, error), log zerolog.Logger) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &jetStreamCollector{
		read:               read,
		log:                log,
		up:                 d("fanout_jetstream_up", "1 when this scrape read JetStream's streams and consumers, 0 when it could not (the fanout_stream_ and fanout_work_ metrics are then missing)."),
		streamMsgs:         d("fanout_stream_messages", "Messages stored in a fanout stream.", "stream"),
		streamBytes:        d("fanout_stream_bytes", "Bytes stored in a fanout stream.", "stream"),
		streamConsumers:    d("fanout_stream_consumers", "Consumers of a fanout stream.", "stream"),
		streamMaxMsgs:      d("fanout_stream_max_messages", "The stream's limit on messages (-1: none).", "stream"),
		streamMaxBytes:     d("fanout_stream_max_bytes", "The stream's limit on bytes (-1: none).", "stream"),
		streamMaxConsumers: d("fanout_stream_max_consumers", "The stream's limit on consumers (-1: none).", "stream"),
		workMsgs:           d("fanout_work_messages", "Work messages stored for an activity: queued or running, not yet acked.", "activity"),
		workAckPending:     d("fanout_work_ack_pending_messages", "Work messages of an activity delivered to a worker and not yet acked.", "activity"),
		workPulls:          d("fanout_work_pull_requests", "Pull requests workers of an activity have waiting for work.", "activity"),
		workers:            d("fanout_workers", "Live workers serving an activity (heartbeats in the workers bucket).", "activity"),
		workersConcurrency: d("fanout_workers_concurrency", "Items the live workers serving an activity may run at once, summed.", "activity"),
		accountBytes:       d("fanout_jetstream_account_bytes", "JetStream storage the account uses, by storage (file, memory).", "storage"),
		accountMaxBytes:    d("fanout_jetstream_account_max_bytes", "The account's JetStream storage limit, by storage (-1: none).", "storage"),
	}
}

func (c *jetStreamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.streamMsgs, c.streamBytes, c.streamConsumers, c.streamMaxMsgs, c.streamMaxBytes,
		c.streamMaxConsumers, c.workMsgs, c.workAckPending, c.workPulls, c.workers, c.workersConcurrency, c.accountBytes, c.accountMaxBytes} {
		ch <- d
	}
}

func (c *jetStreamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.read(ctx)
	if err != nil {
		c.log.Warn().Err(err).Msg("metrics: reading JetStream")
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	gauge := func(d *prometheus.Desc, v float64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, label)
	}
	limit := func(d *prometheus.Desc, v int64, label string) {
		if v <= 0 {
			v = -1 // none: a use ÷ limit ratio stays below 0
		}
		gauge(d, float64(v), label)
	}
	for _, s := range st.Streams {
		gauge(c.streamMsgs, float64(s.Messages), s.Name)
		gauge(c.streamBytes, float64(s.Bytes), s.Name)
		gauge(c.streamConsumers, float64(s.Consumers), s.Name)
		limit(c.streamMaxMsgs, s.MaxMessages, s.Name)
		limit(c.streamMaxBytes, s.MaxBytes, s.Name)
		limit(c.streamMaxConsumers, int64(s.MaxConsumers), s.Name)
	}
	for _, a := range st.Activities {
		gauge(c.workMsgs, float64(a.Messages), a.Activity)
		gauge(c.workAckPending, float64(a.AckPending), a.Activity)
		gauge(c.workPulls, float64(a.PullRequests), a.Activity)
		gauge(c.workers, float64(a.Workers), a.Activity)
		gauge(c.workersConcurrency, float64(a.WorkersConcurrent), a.Activity)
	}
	if a := st.Account; a != nil {
		gauge(c.accountBytes, float64(a.Store), "file")
		gauge(c.accountBytes, float64(a.Memory), "memory")
		limit(c.accountMaxBytes, a.MaxStore, "file")
		limit(c.accountMaxBytes, a.MaxMemory, "memory")
	}
}
