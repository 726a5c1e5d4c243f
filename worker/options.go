package worker

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/topology"
)

// ErrInvalidOption is wrapped by every option that rejects its value.
var ErrInvalidOption = errors.New("invalid worker option")

type config struct {
	prefix          string
	name            string
	concurrency     int
	ackWait         time.Duration
	maxAckPending   int
	shutdownTimeout time.Duration
	replicas        int
	memory          bool
	logger          zerolog.Logger
	observer        Observer
	limits          map[string]int
	prefetch        int
	claimCheck      int
	domain          string
	tracerProvider  trace.TracerProvider
}

func defaultConfig() config {
	host, _ := os.Hostname()
	return config{
		prefix:          messages.DefaultPrefix,
		name:            host + "-" + uuid.NewString()[:8],
		concurrency:     DefaultConcurrency,
		ackWait:         30 * time.Second,
		maxAckPending:   20_000,
		shutdownTimeout: 30 * time.Second,
		claimCheck:      messages.ClaimCheckBytes,
		logger:          zerolog.Nop(),
	}
}

// DefaultConcurrency is the items a worker runs at once unless
// WithConcurrency says otherwise.
const DefaultConcurrency = 16

// Option configures a Worker.
type Option func(*config) error

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOption, fmt.Sprintf(format, args...))
}

// WithPrefix sets the subject prefix (default "fanout").
func WithPrefix(prefix string) Option {
	return func(c *config) error {
		if _, err := messages.NewNames(prefix); err != nil {
			return invalid("%v", err)
		}
		c.prefix = prefix
		return nil
	}
}

// WithName names the worker in results and logs (default host-random).
func WithName(name string) Option {
	return func(c *config) error {
		if name == "" {
			return invalid("name must not be empty")
		}
		c.name = name
		return nil
	}
}

// WithConcurrency sets how many items run at once in this worker, across
// all its activities (default 16).
func WithConcurrency(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("concurrency %d: must be at least 1", n)
		}
		c.concurrency = n
		return nil
	}
}

// WithPrefetch sets how many items of each activity the worker takes ahead
// of a free slot (default: the concurrency). Items waiting for a slot are
// kept with heartbeats, so they are not delivered again however long they
// wait. More means fewer pull requests for many fast items; less spreads a
// small batch of slow items over more workers.
func WithPrefetch(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("prefetch %d: must be at least 1", n)
		}
		c.prefetch = n
		return nil
	}
}

// WithAckWait sets how long an item stays with a worker that stopped
// answering before it is delivered again (default 30s). The worker sends
// heartbeats while a handler runs, so this bounds crash detection, not item
// run time (the batch's item_timeout does that). It is a setting of the
// activity's shared consumer: workers of one activity should agree on it.
func WithAckWait(d time.Duration) Option {
	return func(c *config) error {
		if d < 100*time.Millisecond {
			return invalid("ack wait %s: must be at least 100ms", d)
		}
		c.ackWait = d
		return nil
	}
}

// WithMaxAckPending caps the items out with all workers of an activity at
// once (default 20,000).
func WithMaxAckPending(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("max ack pending %d: must be at least 1", n)
		}
		c.maxAckPending = n
		return nil
	}
}

// WithShutdownTimeout bounds how long Stop waits for running handlers
// (default 30s); handlers still running then are canceled and their items
// go back to the queue.
func WithShutdownTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return invalid("shutdown timeout %s: must be positive", d)
		}
		c.shutdownTimeout = d
		return nil
	}
}

// WithStreams sets the replicas and storage of streams the worker has to
// create because no coordinator has yet (default 1 replica, file storage).
func WithStreams(replicas int, memory bool) Option {
	return func(c *config) error {
		if replicas < 1 || replicas > 5 {
			return invalid("replicas %d: must be 1 to 5", replicas)
		}
		c.replicas, c.memory = replicas, memory
		return nil
	}
}

// WithJetStreamDomain reaches fanout's streams through the JetStream API
// prefix "$JS.<domain>.API" instead of the connection account's own
// JetStream: for a worker in the workers account of the accounts layout
// (docs/security.md), which imports the fanout account's JetStream API
// under that prefix. Default: none.
func WithJetStreamDomain(domain string) Option {
	return func(c *config) error {
		if err := topology.CheckDomain(domain); err != nil {
			return invalid("%v", err)
		}
		c.domain = domain
		return nil
	}
}

// WithLogger sets the logger (default: none).
func WithLogger(l zerolog.Logger) Option {
	return func(c *config) error {
		c.logger = l
		return nil
	}
}

// Observer is told when items start and finish, for metrics. Its methods
// are called from many goroutines at once.
type Observer interface {
	// ItemStarted: an attempt of an item of activity begins.
	ItemStarted(activity string, attempt int)
	// ItemFinished: the attempt ended with outcome "succeeded", "failed"
	// (the item's final result) or "retried" (it will run again).
	ItemFinished(activity string, outcome string, d time.Duration)
}

// QueueObserver is an Observer that is also told how long items waited in
// the work stream: from the coordinator's publish (the time the server
// stored the work message) to the start of the item's first attempt. Its
// method is called from many goroutines at once.
type QueueObserver interface {
	Observer
	ItemQueued(activity string, wait time.Duration)
}

// WithTracerProvider records a span for every attempt of every item
// (OpenTelemetry, kind consumer, named "process <activity>"), a child of
// the batch's span whose context the work message carries, and gives it
// to the handler in its ctx: spans the handler starts from ctx nest under
// it. Each result carries the span's context (traceparent). Default: no
// spans; the batch's context, when the work message carries one, is still
// put in the handler's ctx.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) error {
		c.tracerProvider = tp
		return nil
	}
}

// WithObserver reports item starts and ends to o (and queue waits, when o
// is a QueueObserver).
func WithObserver(o Observer) Option {
	return func(c *config) error {
		c.observer = o
		return nil
	}
}

// WithActivityLimit caps how many items of an activity run at once across
// ALL workers and batches (to protect a downstream service): it is the
// shared consumer's MaxAckPending, enforced by the server. Workers of one
// activity should agree on it; the last to start sets it.
func WithActivityLimit(activity string, n int) Option {
	return func(c *config) error {
		if !messages.ValidToken(activity) {
			return invalid("activity limit: %q is not an activity name", activity)
		}
		if n < 1 {
			return invalid("activity limit of %q: %d must be at least 1", activity, n)
		}
		if c.limits == nil {
			c.limits = map[string]int{}
		}
		c.limits[activity] = n
		return nil
	}
}

// WithClaimCheckBytes sets the size above which a handler's output is
// stored in the object store and its result carries a reference (default
// 256 KiB). Inputs stored that way by the coordinator are fetched before
// the handler runs, whatever this is: handlers never see references.
func WithClaimCheckBytes(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("claim check bytes %d: must be at least 1", n)
		}
		c.claimCheck = n
		return nil
	}
}
