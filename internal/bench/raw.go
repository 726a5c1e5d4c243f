package bench

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The raw round trip's names; nothing of fanout's is shared with it.
const (
	rawWorkStream    = "BENCH_RAW_WORK"
	rawResultsStream = "BENCH_RAW_RESULTS"
	rawWorkSubject   = "bench_raw.work"
	rawKeeperSubject = "bench_raw.keeper"
	rawResultPrefix  = "bench_raw.result"
	rawConsumer      = "raw-workers"
	// rawMaxPending bounds unacknowledged async publishes per connection.
	rawMaxPending = 4096
)

// rawPayloads builds the raw work messages: the item's index (8 bytes, big
// endian, for the guarded variant's result subject) and then the same JSON
// item fanout gets. The worker hashes the item bytes as they are: no JSON
// work at all, which is the point of "raw".
func rawPayloads(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		item := itemJSON(i, size)
		p := make([]byte, 8+len(item))
		binary.BigEndian.PutUint64(p, uint64(i))
		copy(p[8:], item)
		out[i] = p
	}
	return out
}

// rawThroughput runs one round trip of all payloads on fresh streams and
// returns the time from the first publish to the last result collected,
// and the CPU time the process used meanwhile.
func rawThroughput(ctx context.Context, url string, cfg Config, guard bool, payloads [][]byte) (wall, cpu time.Duration, err error) {
	rig, err := newRawRig(ctx, url, cfg, guard)
	if err != nil {
		return 0, 0, err
	}
	defer rig.close()
	c0 := cpuTime()
	wall, err = rig.roundTrip(ctx, payloads)
	return wall, cpuTime() - c0, err
}

// rawRig is the bare JetStream round trip, written as tightly as the
// semantics allow: async publishes everywhere, an ack only after the
// result's PubAck (from the PubAck handler, without a goroutine per item),
// no JSON. Each worker and the publisher and collector have their own
// connection, as fanout's workers, coordinator and client do.
type rawRig struct {
	guard     bool
	conns     []*nats.Conn
	js        jetstream.JetStream // admin and publisher
	workers   []*rawWorker
	collector *collector
	consumes  []jetstream.ConsumeContext
	pubErr    atomic.Pointer[error]
	rounds    int
}

// rawKeeperEvery is how many round trips the raw rig makes between keeper
// messages: the same trick as fanout's work-stream keeper
// (coordinator/keeper.go), so that neither side pays for a new block file
// each time its work queue empties. Sent outside the timing.
const rawKeeperEvery = 100

func newRawRig(ctx context.Context, url string, cfg Config, guard bool) (_ *rawRig, err error) {
	r := &rawRig{guard: guard}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	nc, err := r.connect(url)
	if err != nil {
		return nil, err
	}
	r.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(rawMaxPending),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			r.pubErr.CompareAndSwap(nil, &err)
		}))
	if err != nil {
		return nil, err
	}
	storage := jetstream.FileStorage
	if cfg.memory() {
		storage = jetstream.MemoryStorage
	}
	setupCtx, cancelSetup := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSetup()
	for _, name := range []string{rawWorkStream, rawResultsStream} {
		if err := r.js.DeleteStream(setupCtx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("delete stream %s: %w", name, err)
		}
	}
	work, err := r.js.CreateStream(setupCtx, jetstream.StreamConfig{
		Name: rawWorkStream, Subjects: []string{rawWorkSubject, rawKeeperSubject},
		Retention: jetstream.WorkQueuePolicy, Storage: storage, AllowRollup: true,
	})
	if err != nil {
		return nil, fmt.Errorf("raw work stream: %w", err)
	}
	resCfg := jetstream.StreamConfig{
		Name: rawResultsStream, Subjects: []string{rawResultPrefix, rawResultPrefix + ".>"},
		Retention: jetstream.LimitsPolicy, Storage: storage,
	}
	if guard {
		resCfg.MaxMsgsPerSubject = 1
		resCfg.Discard = jetstream.DiscardNew
		resCfg.DiscardNewPerSubject = true
	}
	if _, err := r.js.CreateStream(setupCtx, resCfg); err != nil {
		return nil, fmt.Errorf("raw results stream: %w", err)
	}
	cons, err := work.CreateOrUpdateConsumer(setupCtx, jetstream.ConsumerConfig{
		Durable:       rawConsumer,
		FilterSubject: rawWorkSubject, // not the keeper
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 20_000,
	})
	if err != nil {
		return nil, fmt.Errorf("raw consumer: %w", err)
	}

	cnc, err := r.connect(url)
	if err != nil {
		return nil, err
	}
	cjs, err := jetstream.New(cnc)
	if err != nil {
		return nil, err
	}
	ordered, err := cjs.OrderedConsumer(setupCtx, rawResultsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("raw collector: %w", err)
	}
	r.collector = &collector{}
	cc, err := ordered.Consume(func(jetstream.Msg) { r.collector.add() })
	if err != nil {
		return nil, fmt.Errorf("raw collector: %w", err)
	}
	r.consumes = append(r.consumes, cc)

	for range cfg.Workers {
		wnc, err := r.connect(url)
		if err != nil {
			return nil, err
		}
		w, err := newRawWorker(wnc, guard)
		if err != nil {
			return nil, err
		}
		cc, err := cons.Consume(w.handle)
		if err != nil {
			return nil, fmt.Errorf("raw worker: %w", err)
		}
		r.workers = append(r.workers, w)
		r.consumes = append(r.consumes, cc)
	}
	return r, nil
}

func (r *rawRig) connect(url string) (*nats.Conn, error) {
	nc, err := nats.Connect(url, nats.Name("fanout-bench-raw"))
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	r.conns = append(r.conns, nc)
	return nc, nil
}

// roundTrip publishes every payload and waits until as many results have
// been collected; it returns the time from the first publish to the last
// result.
func (r *rawRig) roundTrip(ctx context.Context, payloads [][]byte) (time.Duration, error) {
	if r.rounds%rawKeeperEvery == 0 {
		keeper := &nats.Msg{Subject: rawKeeperSubject, Header: nats.Header{jetstream.MsgRollup: []string{jetstream.MsgRollupSubject}}}
		if _, err := r.js.PublishMsg(ctx, keeper); err != nil {
			return 0, fmt.Errorf("publish keeper: %w", err)
		}
	}
	r.rounds++
	done := r.collector.expect(len(payloads))
	start := time.Now()
	for _, p := range payloads {
		if err := publishAsync(ctx, r.js, &nats.Msg{Subject: rawWorkSubject, Data: p}); err != nil {
			return 0, fmt.Errorf("publish work: %w", err)
		}
	}
	if err := waitCount(ctx, done, r.collector.count, func() error {
		if p := r.pubErr.Load(); p != nil {
			return fmt.Errorf("publish work: %w", *p)
		}
		for _, w := range r.workers {
			if p := w.err.Load(); p != nil {
				return fmt.Errorf("publish result: %w", *p)
			}
		}
		return nil
	}); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (r *rawRig) close() {
	for _, cc := range r.consumes {
		cc.Stop()
	}
	if r.js != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, name := range []string{rawWorkStream, rawResultsStream} {
			_ = r.js.DeleteStream(ctx, name)
		}
		cancel()
	}
	for _, nc := range r.conns {
		nc.Close()
	}
}

// publishAsync publishes without waiting for the PubAck, waiting only when
// the connection's window of unacknowledged publishes is full.
func publishAsync(ctx context.Context, js jetstream.JetStream, m *nats.Msg) error {
	for {
		_, err := js.PublishMsgAsync(m)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return err
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// rawWorker is one worker: its consume callback hashes the item and
// publishes the result async; the PubAck handler acks the work message.
type rawWorker struct {
	js    jetstream.JetStream
	guard bool
	mu    sync.Mutex
	work  map[*nats.Msg]jetstream.Msg // result publish -> work message to ack
	err   atomic.Pointer[error]
}

func newRawWorker(nc *nats.Conn, guard bool) (*rawWorker, error) {
	w := &rawWorker{guard: guard, work: make(map[*nats.Msg]jetstream.Msg, 1024)}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(rawMaxPending),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			if wm := w.take(m); wm != nil {
				_ = wm.Ack()
			}
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			wm := w.take(m)
			if wm == nil {
				return
			}
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == 10077 {
				_ = wm.Ack() // the guard refused a second result: recorded already
				return
			}
			w.err.CompareAndSwap(nil, &err)
			_ = wm.Nak()
		}))
	if err != nil {
		return nil, err
	}
	w.js = js
	return w, nil
}

func (w *rawWorker) take(m *nats.Msg) jetstream.Msg {
	w.mu.Lock()
	wm := w.work[m]
	delete(w.work, m)
	w.mu.Unlock()
	return wm
}

func (w *rawWorker) handle(m jetstream.Msg) {
	data := m.Data()
	if len(data) < 8 {
		_ = m.Term()
		return
	}
	sum := sha256.Sum256(data[8:])
	out := make([]byte, hex.EncodedLen(len(sum)))
	hex.Encode(out, sum[:])
	subject := rawResultPrefix
	if w.guard {
		subject += "." + strconv.FormatUint(binary.BigEndian.Uint64(data), 10)
	}
	res := &nats.Msg{Subject: subject, Data: out}
	w.mu.Lock()
	w.work[res] = m
	w.mu.Unlock()
	if _, err := w.js.PublishMsgAsync(res); err != nil {
		w.take(res)
		_ = m.Nak()
	}
}

// collector counts results and signals when an expected count is reached.
type collector struct {
	mu     sync.Mutex
	n      int
	target int
	done   chan struct{}
}

func (c *collector) add() {
	c.mu.Lock()
	c.n++
	if c.done != nil && c.n >= c.target {
		close(c.done)
		c.done = nil
	}
	c.mu.Unlock()
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// expect returns a channel closed once n more results have arrived.
func (c *collector) expect(n int) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	c.target = c.n + n
	if c.n >= c.target {
		close(ch)
	} else {
		c.done = ch
	}
	return ch
}

// waitCount waits for done, failing when ctx ends, when check reports an
// error, or when count stops moving for a minute.
func waitCount(ctx context.Context, done <-chan struct{}, count func() int, check func() error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last, lastMove := count(), time.Now()
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if err := check(); err != nil {
				return err
			}
			if n := count(); n != last {
				last, lastMove = n, time.Now()
			} else if time.Since(lastMove) > time.Minute {
				return fmt.Errorf("%w (%d results collected)", errStalled, n)
			}
		}
	}
}
