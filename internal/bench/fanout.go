package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/topology"
	"github.com/fanoutdev/fanout/internal/workerd"
	"github.com/fanoutdev/fanout/worker"
)

// Subject prefixes: the in-process deployment of (b) and (d), and the one
// of (f) whose coordinator runs in a child process. Different prefixes
// keep the two apart on the one server.
const (
	fanoutPrefix = "bench"
	memoryPrefix = "benchmem"
)

// deployment is fanout as a user runs it: a coordinator (unless it runs in
// another process), Workers workers with the built-in activities, and a
// client, each on its own connection.
type deployment struct {
	prefix   string
	itemSize int // of the items submitted, to check their outputs
	coord    *coordinator.Coordinator
	workers  []*worker.Worker
	conns    []*nats.Conn
	nc       *nats.Conn // the client's
	client   *client.Client
}

func startFanout(ctx context.Context, url, prefix string, cfg Config, withCoordinator bool) (_ *deployment, err error) {
	d := &deployment{prefix: prefix, itemSize: cfg.ItemSize}
	defer func() {
		if err != nil {
			d.stop()
		}
	}()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	connect := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1))
		if err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
		d.conns = append(d.conns, nc)
		return nc, nil
	}
	if withCoordinator {
		nc, err := connect("fanout-bench-coordinator")
		if err != nil {
			return nil, err
		}
		c, err := coordinator.New(coordinator.Config{
			Conn: nc, Prefix: prefix, Name: "bench-coordinator",
			Topology: topology.Config{Memory: cfg.memory()},
			Logger:   cfg.Logger,
		})
		if err != nil {
			return nil, err
		}
		if err := c.Start(startCtx); err != nil {
			return nil, fmt.Errorf("coordinator: %w", err)
		}
		d.coord = c
	}
	for i := range cfg.Workers {
		nc, err := connect("fanout-bench-worker")
		if err != nil {
			return nil, err
		}
		w, err := workerd.New(nc, workerd.Config{
			Prefix: prefix, Name: fmt.Sprintf("bench-worker-%d", i+1),
			Concurrency: cfg.Concurrency, Memory: cfg.memory(), Logger: cfg.Logger,
			Activities: []string{"sha256"},
		})
		if err != nil {
			return nil, err
		}
		if err := w.Start(startCtx); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		d.workers = append(d.workers, w)
	}
	if d.nc, err = connect("fanout-bench-client"); err != nil {
		return nil, err
	}
	if d.client, err = client.New(d.nc, client.WithPrefix(prefix), client.WithRequestTimeout(time.Minute)); err != nil {
		return nil, err
	}
	return d, nil
}

// stop drains the workers, then stops the coordinator, then closes the
// connections.
func (d *deployment) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, w := range d.workers {
		_ = w.Stop(ctx)
	}
	if d.coord != nil {
		_ = d.coord.Stop(ctx)
	}
	for _, nc := range d.conns {
		nc.Close()
	}
}

// batchOptions are the options of every measured batch.
func batchOptions(cfg Config) client.Options {
	return client.Options{MaxInFlight: cfg.MaxInFlight}
}

// applyItemsPerMessage is the hook of measurement (e): it sets n items per
// work message on o and reports whether the engine supports that.
func applyItemsPerMessage(o *client.Options, n int) bool {
	o.ItemsPerMessage = n
	return true
}

// batchRun is one measured batch.
type batchRun struct {
	took   time.Duration // from sending the submit request to having the aggregate
	cpu    time.Duration // CPU time this process used meanwhile
	phases FanoutPhases
}

// batch submits one sha256 batch and waits for its aggregate, and checks
// the aggregate (outside the timing). With phases, it also records when
// the first and last results were stored.
func (d *deployment) batch(ctx context.Context, items []json.RawMessage, opts client.Options, phases bool) (batchRun, error) {
	return d.batchFrom(ctx, items, nil, opts, phases)
}

// uploadItems stores items as a JSON Lines object in the deployment's blob
// bucket, for a batch that names it with items_ref.
func (d *deployment) uploadItems(ctx context.Context, name string, items []json.RawMessage) (*client.ObjectRef, error) {
	js, err := jetstream.New(d.nc)
	if err != nil {
		return nil, err
	}
	bucket := messages.MustNames(d.prefix).BlobBucket()
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("blob bucket %s: %w", bucket, err)
	}
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 1<<20)
		for _, it := range items {
			_, _ = bw.Write(it)
			_ = bw.WriteByte('\n')
		}
		pw.CloseWithError(bw.Flush())
	}()
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, pr); err != nil {
		return nil, fmt.Errorf("upload items: %w", err)
	}
	return &client.ObjectRef{Bucket: bucket, Name: name}, nil
}

// batchFrom is batch with the items read from ref (already uploaded) when
// ref is set; items are still needed to check the outputs.
func (d *deployment) batchFrom(ctx context.Context, items []json.RawMessage, ref *client.ObjectRef, opts client.Options, phases bool) (batchRun, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute+time.Duration(len(items))*time.Millisecond)
	defer cancel()
	req := client.BatchRequest{Activity: "sha256", Items: items, Options: opts}
	if ref != nil {
		req.Items, req.ItemsRef = nil, ref
	}
	var br batchRun
	var rt *resultTimes
	if phases {
		req.ID = uuid.NewString()
		var err error
		if rt, err = watchResults(d.nc, d.prefix, req.ID, len(items)); err != nil {
			return br, err
		}
		defer rt.stop()
	}
	c0, start := cpuTime(), time.Now()
	r, err := d.client.Submit(ctx, req)
	if err != nil {
		return br, fmt.Errorf("submit: %w", err)
	}
	br.phases.SubmitReplyMS = ms(time.Since(start))
	agg, err := d.client.Wait(ctx, r.BatchID, nil)
	if err != nil {
		return br, fmt.Errorf("wait: %w", err)
	}
	br.took, br.cpu = time.Since(start), cpuTime()-c0
	br.phases.AggregateMS = ms(br.took)
	if rt != nil {
		first, last := rt.times()
		br.phases.FirstResultMS, br.phases.LastResultMS = ms(first.Sub(start)), ms(last.Sub(start))
	}
	if err := checkAggregate(agg, len(items), d.itemSize); err != nil {
		return br, err
	}
	return br, nil
}

// checkAggregate makes sure a measured batch really did the work: every
// item succeeded, and sampled outputs are the right hashes in item order.
func checkAggregate(agg *client.Aggregate, n, size int) error {
	if agg.Status != client.StatusCompleted || agg.Succeeded != n || len(agg.Results) != n {
		why := agg.Reason
		for _, r := range agg.Results {
			if !r.OK {
				why += fmt.Sprintf("; item %d: %s", r.Item, r.Error)
				break
			}
		}
		return fmt.Errorf("batch %s: status %s, %d of %d succeeded, %d results (%s)", agg.BatchID, agg.Status, agg.Succeeded, n, len(agg.Results), why)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		var out struct{ SHA256 string }
		res := agg.Results[i]
		if err := json.Unmarshal(res.Output, &out); err != nil || res.Item != i || out.SHA256 != wantSHA256(i, size) {
			return fmt.Errorf("batch %s: item %d has output %s, want sha256 %s", agg.BatchID, i, res.Output, wantSHA256(i, size))
		}
	}
	return nil
}

// resultTimes watches a batch's result subjects with a core NATS
// subscription and notes when the first and the n-th result went by.
type resultTimes struct {
	sub         *nats.Subscription
	mu          sync.Mutex
	n, want     int
	first, last time.Time
}

func watchResults(nc *nats.Conn, prefix, batch string, n int) (*resultTimes, error) {
	rt := &resultTimes{want: n}
	sub, err := nc.Subscribe(prefix+".result."+batch+".>", func(*nats.Msg) {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		rt.n++
		now := time.Now()
		if rt.n == 1 {
			rt.first = now
		}
		if rt.n == rt.want {
			rt.last = now
		}
	})
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	rt.sub = sub
	return rt, nil
}

func (rt *resultTimes) times() (first, last time.Time) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.first, rt.last
}

func (rt *resultTimes) stop() { _ = rt.sub.Unsubscribe() }
