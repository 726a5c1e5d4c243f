package worker

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Presence is a running worker as its heartbeat describes it: the value of
// its key in the KV bucket <PREFIX>_WORKERS (FANOUT_WORKERS by default),
// which `fanout workers` and client.Workers list. It is the wire type
// messages.WorkerPresence.
//
// A worker writes it as it starts (Start waits up to a second for that)
// and every PresenceInterval after. The bucket keeps a value PresenceTTL
// after it was written, so a worker that crashed or lost its connection
// drops out of the bucket within PresenceTTL, and one that stops cleanly
// deletes its key when Stop ends. Heartbeats are best effort: a worker
// whose NATS user may not write the bucket runs all the same, and logs a
// warning. Name is the worker's name (WithName), Concurrency its
// WithConcurrency.
type Presence = messages.WorkerPresence

// Heartbeat timing of worker presence.
const (
	PresenceInterval = messages.WorkerPresenceInterval
	PresenceTTL      = messages.WorkerPresenceTTL
)

// presence writes a worker's heartbeats. Its goroutine is started by
// Worker.Start and ended by Worker.Stop, which then deletes the key.
type presence struct {
	w        *Worker
	log      zerolog.Logger
	bucket   string
	interval time.Duration
	ttl      time.Duration
	static   Presence

	ctx    context.Context // canceled by stop
	cancel context.CancelFunc
	first  chan struct{} // closed after the first heartbeat's attempt
	done   chan struct{}

	// Owned by the goroutine until done is closed, then by stop.
	kv      jetstream.KeyValue // the open bucket, nil until opened
	written jetstream.KeyValue // the bucket the key was last written to
	failing bool

	stopOnce sync.Once
}

// startPresence begins the heartbeats of a started worker. It waits for
// the first one, so that the worker is listed once Start returns, but not
// past a second or ctx: heartbeats are not what a worker is for.
func (w *Worker) startPresence(ctx context.Context) *presence {
	p := startPresence(w, PresenceInterval, PresenceTTL)
	wait := time.NewTimer(time.Second)
	defer wait.Stop()
	select {
	case <-p.first:
	case <-wait.C:
	case <-ctx.Done():
	}
	return p
}

func startPresence(w *Worker, interval, ttl time.Duration) *presence {
	host, _ := os.Hostname()
	activities := w.Activities()
	slices.Sort(activities)
	p := &presence{
		w: w, log: w.log, bucket: w.names.WorkersBucket(), interval: interval, ttl: ttl,
		static: Presence{
			Name: w.cfg.name, Key: presenceKey(w.cfg.name, uuid.NewString()[:8]), Host: host,
			Activities: activities, Concurrency: w.cfg.concurrency, StartedAt: time.Now().UTC(),
		},
		first: make(chan struct{}),
		done:  make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	go p.run()
	return p
}

// presenceKey makes a KV key of a worker name: characters a key cannot
// hold become '_'.
func presenceKey(name, run string) string {
	var b strings.Builder
	for _, r := range name {
		if b.Len() >= 200 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		b.WriteString("worker")
	}
	return b.String() + "." + run
}

func (p *presence) run() {
	defer close(p.done)
	t := time.NewTimer(p.interval)
	defer t.Stop()
	for first := true; ; first = false {
		ctx, cancel := context.WithTimeout(p.ctx, p.interval)
		p.beat(ctx)
		cancel()
		if first {
			close(p.first)
		}
		t.Reset(p.interval)
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// beat writes one heartbeat, opening (or creating) the bucket first when
// needed.
func (p *presence) beat(ctx context.Context) {
	err := p.open(ctx)
	if err == nil {
		v := p.static
		v.InUse = int(p.w.inUse.Load())
		v.Draining = p.w.draining.Load()
		v.UpdatedAt = time.Now().UTC()
		data, _ := json.Marshal(&v)
		if _, err = p.kv.Put(ctx, v.Key, data); err == nil {
			p.written = p.kv
		} else {
			p.kv = nil // the bucket may be gone (a memory stream after a server restart): open it again
		}
	}
	switch {
	case err != nil && p.ctx.Err() != nil:
		// Stopping.
	case err != nil && !p.failing:
		p.failing = true
		p.log.Warn().Err(err).Str("bucket", p.bucket).Msg("worker heartbeat not written; `fanout workers` will not list this worker until it is (does its NATS user have the worker permissions of docs/security.md?)")
	case err != nil:
		p.log.Debug().Err(err).Str("bucket", p.bucket).Msg("worker heartbeat not written")
	case p.failing:
		p.failing = false
		p.log.Info().Str("bucket", p.bucket).Msg("worker heartbeats written again")
	}
}

func (p *presence) open(ctx context.Context) error {
	if p.kv != nil {
		return nil
	}
	kv, err := p.w.js.KeyValue(ctx, p.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = p.w.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      p.bucket,
			Description: "fanout worker heartbeats: one key per running worker, dropped when its heartbeats stop",
			History:     1,
			// Every heartbeat is a new message: a key expires ttl after
			// the last one.
			TTL:      p.ttl,
			Storage:  jetstream.MemoryStorage,
			Replicas: max(p.w.cfg.replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = p.w.js.KeyValue(ctx, p.bucket) // another worker made it first
		}
	}
	if err != nil {
		return err
	}
	p.kv = kv
	return nil
}

// stop ends the heartbeats and deletes the worker's key. A nil p and a
// second call are harmless.
func (p *presence) stop() {
	if p == nil {
		return
	}
	p.stopOnce.Do(func() {
		p.cancel()
		<-p.done
		if p.written == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := p.written.Delete(ctx, p.static.Key); err != nil {
			p.log.Debug().Err(err).Msg("delete worker heartbeat")
		}
	})
}
