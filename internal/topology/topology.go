// Package topology creates the streams, bucket and object store fanout
// needs, idempotently: every coordinator and worker calls Ensure at start.
// It also closes a connection in order (Drain).
package topology

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Config says how the stored parts are kept.
type Config struct {
	// Replicas of every stream and bucket (1 for a single server, 3 in a
	// cluster). Zero means 1.
	Replicas int
	// Memory keeps everything in memory instead of files (tests, benchmarks).
	Memory bool
	// Retention is how long finished batches' results, aggregates and state
	// are kept. It bounds how long a batch may run. Zero means 7 days.
	Retention time.Duration
	// Update makes Ensure bring existing streams to this configuration.
	// The coordinator sets it; workers only create what is missing, so a
	// worker with default settings never undoes the operator's.
	Update bool
}

// DefaultRetention is Config.Retention's default.
const DefaultRetention = 7 * 24 * time.Hour

func (c Config) withDefaults() Config {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	return c
}

func (c Config) storage() jetstream.StorageType {
	if c.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// Handles are the opened stores.
type Handles struct {
	Work, Results, Done, Control jetstream.Stream
	Batches                      jetstream.KeyValue
	Blobs                        jetstream.ObjectStore
}

// Ensure creates or updates every stream and store. It is safe to call
// concurrently from many processes.
func Ensure(ctx context.Context, js jetstream.JetStream, n messages.Names, cfg Config) (*Handles, error) {
	cfg = cfg.withDefaults()
	var h Handles
	var err error
	streams := []struct {
		dst *jetstream.Stream
		cfg jetstream.StreamConfig
	}{
		{&h.Work, workStream(n)},
		{&h.Results, resultsStream(n, cfg)},
		{&h.Done, jetstream.StreamConfig{
			Name:                 n.DoneStream(),
			Description:          "fanout aggregates: one per finished batch",
			Subjects:             []string{n.DoneAll()},
			Retention:            jetstream.LimitsPolicy,
			MaxMsgsPerSubject:    1,
			Discard:              jetstream.DiscardNew,
			DiscardNewPerSubject: true,
			MaxAge:               cfg.Retention,
			Duplicates:           2 * time.Minute,
			// Waits and status look an aggregate up by subject: a direct
			// get is a lighter request than the JetStream API's.
			AllowDirect: true,
			// Clients wait for the stored aggregate, not the publish.
			RePublish: &jetstream.RePublish{Source: n.DoneAll(), Destination: n.AggregateAll()},
		}},
		{&h.Control, jetstream.StreamConfig{
			Name:        n.ControlStream(),
			Description: "fanout batch tokens: a batch's request, held un-acked by the coordinator driving it, kept for redrive",
			Subjects:    []string{n.ControlAll()},
			Retention:   jetstream.LimitsPolicy,
			// One token per batch id, for good: a second submit of the same
			// id is refused by the server, not only within a dedupe window.
			MaxMsgsPerSubject:    1,
			Discard:              jetstream.DiscardNew,
			DiscardNewPerSubject: true,
			MaxAge:               cfg.Retention,
			Duplicates:           2 * time.Minute,
		}},
	}
	for _, s := range streams {
		s.cfg.Storage, s.cfg.Replicas = cfg.storage(), cfg.Replicas
		if *s.dst, err = ensureStream(ctx, js, s.cfg, cfg.Update); err != nil {
			return nil, fmt.Errorf("stream %s: %w", s.cfg.Name, err)
		}
	}
	kvCreate := js.CreateOrUpdateKeyValue
	objCreate := js.CreateOrUpdateObjectStore
	if !cfg.Update {
		kvCreate = func(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
			kv, err := js.KeyValue(ctx, c.Bucket)
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				return js.CreateOrUpdateKeyValue(ctx, c)
			}
			return kv, err
		}
		objCreate = func(ctx context.Context, c jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
			obs, err := js.ObjectStore(ctx, c.Bucket)
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				return js.CreateOrUpdateObjectStore(ctx, c)
			}
			return obs, err
		}
	}
	batchesCfg := jetstream.KeyValueConfig{
		Bucket:      n.BatchesBucket(),
		Description: "fanout batch state: counts and checkpoint per batch",
		History:     1,
		TTL:         cfg.Retention,
		Storage:     cfg.storage(),
		Replicas:    cfg.Replicas,
	}
	blobsCfg := jetstream.ObjectStoreConfig{
		Bucket:      n.BlobBucket(),
		Description: "fanout large aggregates and payloads",
		TTL:         cfg.Retention,
		Storage:     cfg.storage(),
		Replicas:    cfg.Replicas,
	}
	h.Batches, err = retry(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return kvCreate(ctx, batchesCfg) })
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", n.BatchesBucket(), err)
	}
	h.Blobs, err = retry(ctx, func(ctx context.Context) (jetstream.ObjectStore, error) { return objCreate(ctx, blobsCfg) })
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", n.BlobBucket(), err)
	}
	return &h, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, update bool) (jetstream.Stream, error) {
	return retry(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		if update {
			s, err := js.CreateOrUpdateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				// Created meanwhile by another process (a worker starting
				// with this coordinator): now it is an update.
				return js.CreateOrUpdateStream(ctx, cfg)
			}
			return s, err
		}
		s, err := js.Stream(ctx, cfg.Name)
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return s, err
		}
		s, err = js.CreateOrUpdateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Created meanwhile by another process (a coordinator starting
			// with this worker), with its own description: use that one.
			return js.Stream(ctx, cfg.Name)
		}
		return s, err
	})
}

// attemptTimeout bounds one create call. A new clustered server can leave
// concurrent creates of one stream unanswered; asking again answers.
const attemptTimeout = 5 * time.Second

// retry calls fn until it succeeds, fails with an answer, or ctx ends.
func retry[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		v, err := fn(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return v, err
		}
	}
}

// EnsureWorker opens what a worker uses, the work and results streams,
// creating them if missing (when its permissions allow). Workers need no
// access to the other stores.
func EnsureWorker(ctx context.Context, js jetstream.JetStream, n messages.Names, cfg Config) (jetstream.Stream, error) {
	cfg = cfg.withDefaults()
	ws, rs := workStream(n), resultsStream(n, cfg)
	ws.Storage, ws.Replicas = cfg.storage(), cfg.Replicas
	rs.Storage, rs.Replicas = cfg.storage(), cfg.Replicas
	work, err := ensureStream(ctx, js, ws, false)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", n.WorkStream(), err)
	}
	if _, err := ensureStream(ctx, js, rs, false); err != nil {
		return nil, fmt.Errorf("stream %s: %w", n.ResultsStream(), err)
	}
	return work, nil
}

func workStream(n messages.Names) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        n.WorkStream(),
		Description: "fanout work: one message per item (or group of items), removed when a worker acks it",
		Subjects:    []string{n.WorkAll()},
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  2 * time.Minute,
		// Each keeper message replaces the one before (coordinator/keeper.go).
		AllowRollup: true,
	}
}

func resultsStream(n messages.Names, cfg Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        n.ResultsStream(),
		Description: "fanout results: one message per item; the server refuses a second",
		Subjects:    []string{n.ResultAll()},
		Retention:   jetstream.LimitsPolicy,
		// The exactly-once guard: one message per item subject, and a
		// second publish is refused rather than replacing the first.
		MaxMsgsPerSubject:    1,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
		MaxAge:               cfg.Retention,
		// Each running batch reads its results with a consumer of its own:
		// far more than the server's default of 1,000 per stream may run.
		MaxConsumers: MaxResultReaders,
		// Items' and steps' results are looked up by subject.
		AllowDirect: true,
	}
}

// MaxResultReaders is the results stream's limit of consumers: of batches
// running at once, across all coordinators.
const MaxResultReaders = 100_000

// ReaderIdle is the inactive threshold of the short-lived ordered
// consumers fanout creates (a batch's results reader, a client's wait):
// stopping one in nats.go does not delete it, and the server would keep it
// for its default 5 minutes, up to its limit of consumers per stream.
const ReaderIdle = 10 * time.Second

// IsDuplicateResult reports whether a publish error means the subject
// already holds its one message (the per-item guard refused a second).
func IsDuplicateResult(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == JSErrCodeMaxMsgsPerSubject ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
	}
	return false
}

// JSErrCodeMaxMsgsPerSubject is "maximum messages per subject exceeded".
const JSErrCodeMaxMsgsPerSubject jetstream.ErrorCode = 10077

// Drain drains nc and waits until it is closed (nats.Conn.Drain returns at
// once), so that the last acks and publishes leave before the process
// exits. It gives up and closes after timeout.
func Drain(nc *nats.Conn, timeout time.Duration) {
	if nc == nil || nc.IsClosed() {
		return
	}
	closed := make(chan struct{})
	prev := nc.Opts.ClosedCB
	nc.SetClosedHandler(func(c *nats.Conn) {
		if prev != nil {
			prev(c)
		}
		close(closed)
	})
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(timeout):
		nc.Close()
	}
}
