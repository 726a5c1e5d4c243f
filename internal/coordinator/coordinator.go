// Package coordinator accepts batches, drives each through its window of
// published items, counts results exactly once into the batch state and
// publishes the aggregate. Several coordinators may run against one NATS
// deployment: requests are shared through a queue group, and each batch is
// driven by the one coordinator that holds its token.
package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/observe"
	"github.com/fanoutdev/fanout/internal/topology"
	"github.com/fanoutdev/fanout/internal/tracing"
)

// DefaultAutoPack is the default of Config.AutoPack.
const DefaultAutoPack = aggregate.DefaultAutoPack

// Config configures a coordinator. Zero values take the defaults named on
// each field.
type Config struct {
	// Conn is an established connection to use. When nil, the coordinator
	// connects to URL with ConnectOptions and closes the connection on Stop.
	Conn           *nats.Conn
	URL            string // default nats.DefaultURL
	ConnectOptions []nats.Option

	Prefix   string          // subject prefix, default "fanout"
	Name     string          // this coordinator's name in logs and state, default host-random
	Topology topology.Config // replicas, storage, retention

	// Lease is how long a batch stays with a coordinator that stopped
	// answering before another takes it over (the token's AckWait).
	// Default 10s.
	Lease time.Duration
	// MaxBatches is how many batches this coordinator drives at once.
	// Default 1000.
	MaxBatches int
	// MaxItems is the most items one batch may have. Default 1,000,000.
	MaxItems int
	// CheckpointInterval is the longest time counted results stay
	// unsaved; CheckpointEvery the most results between checkpoints.
	// Defaults 100ms and 1000.
	CheckpointInterval time.Duration
	CheckpointEvery    int
	// ProgressInterval throttles progress events. Default 250ms.
	ProgressInterval time.Duration
	// PublishAckTimeout is the longest the coordinator waits for the
	// acknowledgement of a publish it did not wait for (work messages)
	// before it publishes again. On a cluster, a publish forwarded to a
	// stream leader that dies is lost without a reply while the
	// coordinator's own connection stays up. Default 10s.
	PublishAckTimeout time.Duration
	// InMemoryResults is the largest batch whose per-item results are kept
	// in memory while it runs; larger ones are written to the results
	// object while they are counted. Default 10,000.
	InMemoryResults int

	// ClaimCheckBytes: item inputs larger than this travel through the
	// object store. Default messages.ClaimCheckBytes (256 KiB).
	ClaimCheckBytes int

	// DefaultTimeout is the timeout of a batch that sets none. Default:
	// the retention, the longest a batch can run and still be counted
	// exactly (its results and state expire after it). At most the
	// retention.
	DefaultTimeout time.Duration

	// AutoPack is the largest group auto packing makes: a batch that does
	// not set items_per_message has its items packed this many per work
	// message once its results show they are fast (aggregate.Batch).
	// Default 16; 1 turns auto packing off.
	AutoPack int

	// HTTPAddr serves /healthz, /readyz and /metrics when set (Run only).
	HTTPAddr string
	// Metrics records Prometheus metrics when not nil.
	Metrics *observe.CoordinatorMetrics
	// TracerProvider records the spans of requests and batches when not
	// nil. Without it the coordinator still passes the trace context a
	// request carries on to its batch's work messages and aggregate.
	TracerProvider trace.TracerProvider

	Logger zerolog.Logger
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		host, _ := os.Hostname()
		c.Name = host + "-" + uuid.NewString()[:8]
	}
	c.URL = cmp.Or(c.URL, nats.DefaultURL)
	c.Prefix = cmp.Or(c.Prefix, messages.DefaultPrefix)
	c.Lease = cmp.Or(c.Lease, 10*time.Second)
	c.MaxBatches = cmp.Or(c.MaxBatches, 1000)
	c.MaxItems = cmp.Or(c.MaxItems, 1_000_000)
	c.CheckpointInterval = cmp.Or(c.CheckpointInterval, 100*time.Millisecond)
	c.CheckpointEvery = cmp.Or(c.CheckpointEvery, 1000)
	c.ProgressInterval = cmp.Or(c.ProgressInterval, 250*time.Millisecond)
	c.PublishAckTimeout = cmp.Or(c.PublishAckTimeout, 10*time.Second)
	c.InMemoryResults = cmp.Or(c.InMemoryResults, 10_000)
	c.ClaimCheckBytes = cmp.Or(c.ClaimCheckBytes, messages.ClaimCheckBytes)
	c.AutoPack = cmp.Or(c.AutoPack, aggregate.DefaultAutoPack)
	return c
}

func (c Config) retention() time.Duration {
	return cmp.Or(c.Topology.Retention, topology.DefaultRetention)
}

func (c Config) validate() error {
	switch {
	case c.Lease < 100*time.Millisecond:
		return fmt.Errorf("lease %s: must be at least 100ms", c.Lease)
	case c.MaxBatches < 1:
		return fmt.Errorf("max batches %d: must be at least 1", c.MaxBatches)
	case c.MaxItems < 1:
		return fmt.Errorf("max items %d: must be at least 1", c.MaxItems)
	case c.CheckpointInterval < time.Millisecond || c.CheckpointEvery < 1:
		return fmt.Errorf("checkpoint interval %s / every %d: must be positive", c.CheckpointInterval, c.CheckpointEvery)
	case c.AutoPack < 1 || c.AutoPack > messages.MaxItemsPerMessage:
		return fmt.Errorf("auto pack %d: must be 1 (off) to %d", c.AutoPack, messages.MaxItemsPerMessage)
	case c.DefaultTimeout < 0 || (c.DefaultTimeout > 0 && c.DefaultTimeout < time.Millisecond):
		return fmt.Errorf("default timeout %s: must be at least 1ms (or 0 for the retention)", c.DefaultTimeout)
	case c.PublishAckTimeout < time.Millisecond:
		return fmt.Errorf("publish ack timeout %s: must be at least 1ms", c.PublishAckTimeout)
	case c.DefaultTimeout > c.retention():
		return fmt.Errorf("default timeout %s: must not exceed the retention of %s", c.DefaultTimeout, c.retention())
	}
	return nil
}

// Coordinator is one coordinator process's engine.
type Coordinator struct {
	cfg   Config
	names messages.Names
	log   zerolog.Logger

	nc      *nats.Conn
	ownConn bool
	js      jetstream.JetStream
	stores  *topology.Handles
	blobs   jetstream.ObjectStore // for writes: see Start
	state   stateStore
	limits  messages.Limits

	tracer  trace.Tracer
	tracing bool // the tracer records spans

	activities sync.Map      // activity name -> time it was last seen to exist
	requests   chan struct{} // a slot per request being handled

	mu      sync.Mutex
	drivers map[string]*driver
	subs    []*nats.Subscription
	tokens  jetstream.MessagesContext
	keeper  workKeeper

	runCtx    context.Context
	cancelRun context.CancelFunc
	wg        sync.WaitGroup
	stopOnce  sync.Once
	stopped   chan struct{}
	started   atomic.Bool
}

// New checks the configuration. Start connects and begins work.
func New(cfg Config) (*Coordinator, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("coordinator config: %w", err)
	}
	names, err := messages.NewNames(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("coordinator config: %w", err)
	}
	c := &Coordinator{
		cfg: cfg, names: names,
		log:      cfg.Logger.With().Str("component", "coordinator").Str("coordinator", cfg.Name).Logger(),
		drivers:  map[string]*driver{},
		requests: make(chan struct{}, maxRequests),
		stopped:  make(chan struct{}),
		tracer:   tracing.Tracer(cfg.TracerProvider),
		tracing:  tracing.Recording(cfg.TracerProvider),
	}
	c.keeper.every.Store(int64(keeperEvery))
	return c, nil
}

// Run starts a coordinator (and its health and metrics server when
// HTTPAddr is set) and blocks until ctx is done, then stops it.
func Run(ctx context.Context, cfg Config) error {
	reg := observe.NewRegistry()
	if cfg.Metrics == nil {
		cfg.Metrics = observe.NewCoordinatorMetrics(reg)
	}
	c, err := New(cfg)
	if err != nil {
		return err
	}
	reg.MustRegister(observe.NewJetStreamCollector(c.JetStreamStats, c.log))
	httpSrv, err := observe.Start(cfg.HTTPAddr, c.Ready, reg)
	if err != nil {
		return err
	}
	stopCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 30*time.Second)
	}
	defer func() {
		ctx, cancel := stopCtx()
		defer cancel()
		httpSrv.Stop(ctx)
	}()
	if err := c.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := stopCtx()
	defer cancel()
	return c.Stop(sctx)
}

// Ready reports why the coordinator cannot serve, or nil: it must be
// started, connected, and its streams must exist.
func (c *Coordinator) Ready() error {
	if !c.started.Load() {
		return errors.New("not started")
	}
	if !c.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, name := range []string{c.names.WorkStream(), c.names.ResultsStream(), c.names.DoneStream(), c.names.ControlStream()} {
		if _, err := c.js.Stream(ctx, name); err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
	}
	return nil
}

// Start connects, creates the streams and bucket, and begins serving
// requests and driving batches. It returns once the coordinator is ready.
func (c *Coordinator) Start(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	c.nc = c.cfg.Conn
	if c.nc == nil {
		opts := append([]nats.Option{nats.Name("fanout-coordinator " + c.cfg.Name), nats.MaxReconnects(-1)}, c.cfg.ConnectOptions...)
		nc, err := nats.Connect(c.cfg.URL, opts...)
		if err != nil {
			return fmt.Errorf("connect to NATS at %s: %w", c.cfg.URL, err)
		}
		c.nc, c.ownConn = nc, true
	}
	js, err := jetstream.New(c.nc, jetstream.WithPublishAsyncMaxPending(8192), jetstream.WithPublishAsyncTimeout(c.cfg.PublishAckTimeout))
	if err != nil {
		return c.fail(err)
	}
	c.js = js
	topo := c.cfg.Topology
	topo.Update = true
	c.stores, err = topology.Ensure(ctx, js, c.names, topo)
	if err != nil {
		return c.fail(err)
	}
	c.state = stateStore{kv: c.stores.Batches, ignore: c.ignore}
	// Objects are written in 128 KiB chunks published async: through the
	// main context (8,192 pending) a large aggregate would sit in memory
	// whole while the server catches up. A small window bounds it.
	blobJS, err := jetstream.New(c.nc, jetstream.WithPublishAsyncMaxPending(16), jetstream.WithPublishAsyncTimeout(c.cfg.PublishAckTimeout))
	if err != nil {
		return c.fail(err)
	}
	if c.blobs, err = blobJS.ObjectStore(ctx, c.names.BlobBucket()); err != nil {
		return c.fail(err)
	}
	c.limits = messages.Limits{MaxItems: c.cfg.MaxItems, MaxTimeout: c.cfg.retention()}

	tokens, err := c.stores.Control.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       c.names.CoordinatorConsumer(),
		Description:   "fanout coordinators: batch tokens, held while a batch runs",
		FilterSubject: c.names.TokenAll(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.Lease,
		MaxDeliver:    -1,
		MaxAckPending: -1,
	})
	if err != nil {
		return c.fail(fmt.Errorf("coordinator consumer: %w", err))
	}

	c.runCtx, c.cancelRun = context.WithCancel(context.Background())
	for subj, h := range map[string]nats.MsgHandler{
		c.names.Submit():  c.handleSubmit,
		c.names.Status():  c.handleStatus,
		c.names.Cancel():  c.handleCancel,
		c.names.Update():  c.handleUpdate,
		c.names.Redrive(): c.handleRedrive,
	} {
		sub, err := c.nc.QueueSubscribe(subj, c.names.CoordinatorQueue(), c.concurrently(h))
		if err != nil {
			return c.fail(err)
		}
		c.subs = append(c.subs, sub)
	}
	poke, err := c.nc.Subscribe(c.names.PokeAll(), c.handlePoke)
	if err != nil {
		return c.fail(err)
	}
	c.subs = append(c.subs, poke)
	if err := c.nc.FlushWithContext(ctx); err != nil {
		return c.fail(err)
	}

	// Pull few tokens ahead: a token waiting in this process's buffer is a
	// batch no other coordinator can start.
	it, err := tokens.Messages(jetstream.PullMaxMessages(2))
	if err != nil {
		return c.fail(err)
	}
	c.tokens = it
	c.wg.Add(1)
	go c.takeTokens()
	c.started.Store(true)
	c.log.Info().Str("prefix", c.cfg.Prefix).Stringer("lease", c.cfg.Lease).Msg("coordinator started")
	return nil
}

func (c *Coordinator) fail(err error) error {
	if c.ownConn && c.nc != nil {
		c.nc.Close()
	}
	return err
}

// takeTokens hands each batch token to a driver, at most MaxBatches at once.
func (c *Coordinator) takeTokens() {
	defer c.wg.Done()
	slots := make(chan struct{}, c.cfg.MaxBatches)
	for {
		select {
		case slots <- struct{}{}:
		case <-c.runCtx.Done():
			return
		}
		msg, err := c.tokens.Next()
		if err != nil {
			<-slots
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || c.runCtx.Err() != nil {
				return
			}
			c.log.Warn().Err(err).Msg("reading batch tokens")
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer func() { <-slots }()
			c.drive(c.runCtx, msg)
		}()
	}
}

// Stop stops taking requests and batches. Batches being driven are
// checkpointed and handed back at once, so another coordinator resumes
// them. A second Stop is harmless.
func (c *Coordinator) Stop(ctx context.Context) error {
	var err error
	c.stopOnce.Do(func() {
		defer close(c.stopped)
		c.started.Store(false)
		if c.runCtx == nil {
			return
		}
		for _, s := range c.subs {
			_ = s.Unsubscribe()
		}
		c.tokens.Stop()
		c.cancelRun()
		done := make(chan struct{})
		go func() { c.wg.Wait(); close(done) }()
		select {
		case <-done:
			err = c.awaitRequests(ctx)
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			err = fmt.Errorf("coordinator stop: %w", err)
		}
		if c.ownConn {
			topology.Drain(c.nc, 10*time.Second)
		}
		c.log.Info().Msg("coordinator stopped")
	})
	return err
}

// Stopped is closed when Stop has finished.
func (c *Coordinator) Stopped() <-chan struct{} { return c.stopped }

func (c *Coordinator) register(d *driver) {
	c.mu.Lock()
	c.drivers[d.batch] = d
	c.mu.Unlock()
}

func (c *Coordinator) unregister(d *driver) {
	c.mu.Lock()
	if c.drivers[d.batch] == d {
		delete(c.drivers, d.batch)
	}
	c.mu.Unlock()
}

// maxRequests is how many requests a coordinator handles at once. A
// request waits for JetStream (up to requestTimeout): handled one at a
// time, a few slow ones would hold up every other submit.
const maxRequests = 64

// concurrently runs h on its own goroutine, at most maxRequests at once;
// requests beyond that wait in the subscription's buffer.
func (c *Coordinator) concurrently(h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		select {
		case c.requests <- struct{}{}:
		case <-c.runCtx.Done():
			return
		}
		go func() {
			defer func() { <-c.requests }()
			h(m)
		}()
	}
}

// awaitRequests waits until no request is being handled.
func (c *Coordinator) awaitRequests(ctx context.Context) error {
	for range cap(c.requests) {
		select {
		case c.requests <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (c *Coordinator) handlePoke(m *nats.Msg) {
	batch := m.Subject[len(c.names.Poke("")):]
	c.mu.Lock()
	d := c.drivers[batch]
	c.mu.Unlock()
	if d != nil {
		d.poke()
	}
}
