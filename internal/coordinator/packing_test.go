package coordinator_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

// packTotal is large enough for the driver to judge the items' speed and
// still have more than its minimum left to pack.
const packTotal = 1500

// counter is an activity that counts its calls per item and runs them in
// well under a millisecond, unless fail or hold say otherwise.
type counter struct {
	calls []atomic.Int32
	fail  func(item int) error // nil: succeed
	hold  func(ctx context.Context, item int) error
}

func newCounter(n int) *counter { return &counter{calls: make([]atomic.Int32, n)} }

func (c *counter) handle(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	info, _ := worker.InfoFrom(ctx)
	c.calls[info.Item].Add(1)
	if c.hold != nil {
		if err := c.hold(ctx, info.Item); err != nil {
			return nil, err
		}
	}
	if c.fail != nil {
		if err := c.fail(info.Item); err != nil {
			return nil, err
		}
	}
	return input, nil
}

func (c *counter) register(w *worker.Worker) { w.HandleFunc("count", c.handle) }

// holdFrom holds every item from first on until the returned function (or
// the test's end) releases them.
func (c *counter) holdFrom(t *testing.T, first int) (release func()) {
	released := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(released) }) }
	t.Cleanup(release)
	c.hold = func(ctx context.Context, item int) error {
		if item < first {
			return nil
		}
		select {
		case <-released:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return release
}

// workWatch counts the work messages of one activity as the server routes
// them (a core subscription sees every publish, stored or not).
type workWatch struct {
	mu      sync.Mutex
	msgs    int
	packed  int
	flagged int // packed with "unpack": true
	sub     *nats.Subscription
}

func watchWork(t *testing.T, env *testenv.Env, activity string) *workWatch {
	t.Helper()
	w := &workWatch{}
	sub, err := env.Connect().Subscribe(names.Prefix+".work."+activity+".>", func(m *nats.Msg) {
		var wm messages.WorkMessage
		if json.Unmarshal(m.Data, &wm) != nil {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.msgs++
		if len(wm.Items) > 1 {
			w.packed++
			if wm.Unpack {
				w.flagged++
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

func (w *workWatch) counts() (msgs, packed, flagged int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.msgs, w.packed, w.flagged
}

// unpackRequests counts the unpack requests stored for a batch.
func unpackRequests(t *testing.T, env *testenv.Env, batch string) []string {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	s, err := jsOf(t, env).Stream(ctx, names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(names.ResultBatchFilter(batch)))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for subj := range info.State.Subjects {
		if strings.HasSuffix(subj, ".unpack") {
			out = append(out, subj)
		}
	}
	return out
}

// A batch that does not set items_per_message and whose items are fast
// goes out packed once its first results are in: far fewer work messages
// than items, every item run once and counted once, each group flagged
// for unpacking, and the packing recorded in the state.
func TestAutoPackingPacksFastItems(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	c := newCounter(packTotal)
	env.Worker(c.register, worker.WithConcurrency(2)) // few handlers sharing the CPUs: their wall time is their run time
	env.Worker(c.register, worker.WithConcurrency(2)) // few handlers sharing the CPUs: their wall time is their run time
	watch := watchWork(t, env, "count")

	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(packTotal)})
	agg := env.Wait(r.BatchID, 60*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, packTotal, packTotal, 0)
	for i, res := range agg.Results {
		if string(res.Output) != string(echoItems(packTotal)[i]) {
			t.Fatalf("item %d: output %s", i, res.Output)
		}
		if n := c.calls[i].Load(); n != 1 {
			t.Errorf("item %d ran %d times, want once", i, n)
		}
	}
	st := batchState(t, env, r.BatchID)
	if st.PackSize < 2 || st.PackSize > coordinator.DefaultAutoPack || st.PackFrom <= 0 || st.PackFrom >= packTotal {
		t.Fatalf("state packs from %d by %d; want packing recorded (size 2..%d)", st.PackFrom, st.PackSize, coordinator.DefaultAutoPack)
	}
	if st.Options.ItemsPerMessage != 0 {
		t.Errorf("options.items_per_message %d, want it left out (auto)", st.Options.ItemsPerMessage)
	}
	msgs, packed, flagged := watch.counts()
	wantMsgs := st.PackFrom + (packTotal-st.PackFrom+st.PackSize-1)/st.PackSize
	t.Logf("%d work messages (%d packed) for %d items; packed by %d from item %d", msgs, packed, packTotal, st.PackSize, st.PackFrom)
	if msgs != wantMsgs || packed < wantMsgs-st.PackFrom-1 || flagged != packed {
		t.Errorf("%d work messages, %d packed, %d flagged for unpacking; want %d messages, all groups flagged", msgs, packed, flagged, wantMsgs)
	}
	if u := unpackRequests(t, env, r.BatchID); len(u) != 0 {
		t.Errorf("unpack requests %v on a batch where nothing failed", u)
	}
}

// Auto packing stays off for items that are not fast, for a batch that
// asks for one item per message or allows one attempt (unpacking costs an
// attempt), and for a coordinator started with --auto-pack 1. The same
// fast batch does pack in TestAutoPackingPacksFastItems.
func TestAutoPackingOff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		opts   client.Options
		slowMS int
		config func(*coordinator.Config)
	}{
		{"slow items", client.Options{}, 3, nil},
		{"items_per_message 1", client.Options{ItemsPerMessage: 1}, 0, nil},
		{"max_attempts 1", client.Options{MaxAttempts: 1}, 0, nil},
		{"auto-pack 1", client.Options{}, 0, func(c *coordinator.Config) { c.AutoPack = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := testenv.Server(t)
			env.Coordinator(tc.config)
			c := newCounter(packTotal)
			if tc.slowMS > 0 {
				c.hold = func(ctx context.Context, _ int) error {
					time.Sleep(time.Duration(tc.slowMS) * time.Millisecond)
					return nil
				}
			}
			env.Worker(c.register, worker.WithConcurrency(64))
			watch := watchWork(t, env, "count")
			r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(packTotal), Options: tc.opts})
			agg := env.Wait(r.BatchID, 120*time.Second)
			checkAggregate(t, agg, client.StatusCompleted, packTotal, packTotal, 0)
			if st := batchState(t, env, r.BatchID); st.PackSize != 0 {
				t.Errorf("state packs from %d by %d, want no packing", st.PackFrom, st.PackSize)
			}
			if msgs, packed, _ := watch.counts(); msgs != packTotal || packed != 0 {
				t.Errorf("%d work messages (%d packed), want %d, none packed", msgs, packed, packTotal)
			}
		})
	}
}

// An item of an auto-packed group that fails every attempt is retried on
// its own: the group's delivery after the retry's backoff is unpacked, so
// the other items of its group ran exactly once (a packed message retried
// as a whole would run them all again) and only that item fails, after
// its max_attempts.
func TestAutoPackedItemRetriedAlone(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	const bad, maxAttempts = packTotal - 100, 3
	c := newCounter(packTotal)
	c.fail = func(item int) error {
		if item == bad {
			return errors.New("flaky downstream")
		}
		return nil
	}
	env.Worker(c.register, worker.WithConcurrency(2))
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(packTotal), Options: client.Options{
		MaxAttempts: maxAttempts, Backoff: durations(20 * time.Millisecond),
	}})
	agg := env.Wait(r.BatchID, 60*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, packTotal, packTotal-1, 1)
	st := batchState(t, env, r.BatchID)
	if st.PackSize < 2 || st.PackFrom > bad {
		t.Fatalf("state packs from %d by %d: item %d was not in a packed group, the test proves nothing", st.PackFrom, st.PackSize, bad)
	}
	if res := agg.Results[bad]; res.OK || res.Error != "flaky downstream" {
		t.Errorf("item %d: %+v, want failed with the handler's error", bad, res)
	}
	for i := range packTotal {
		want := int32(1)
		if i == bad {
			want = maxAttempts
		}
		if n := c.calls[i].Load(); n != want {
			t.Errorf("item %d ran %d times, want %d", i, n, want)
		}
	}
	first := st.PackFrom + (bad-st.PackFrom)/st.PackSize*st.PackSize
	if u := unpackRequests(t, env, r.BatchID); len(u) != 1 || u[0] != names.UnpackRequest(r.BatchID, first) {
		t.Errorf("unpack requests %v, want the one of the group at %d", u, first)
	}
}

// An auto-packed group whose delivery is lost (taken by a worker that then
// says nothing, as a crashed one would) comes back after the ack wait, is
// unpacked, and each of its items runs on its own on its second attempt.
// Every item is counted once.
func TestLostAutoPackedGroupIsUnpacked(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	const holdFrom = packTotal - 400
	c := newCounter(packTotal)
	open := c.holdFrom(t, holdFrom)
	env.Worker(c.register, worker.WithConcurrency(1), worker.WithPrefetch(1), worker.WithAckWait(time.Second))
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(packTotal)})

	// Once the worker is held, take the next group from the same consumer
	// and never answer for it.
	st := waitState(t, env, r.BatchID, 30*time.Second, "packing", func(st *messages.BatchState) bool { return st.PackSize > 1 })
	if st.PackFrom >= holdFrom {
		t.Fatalf("packing starts at %d, after the held items", st.PackFrom)
	}
	waitState(t, env, r.BatchID, 30*time.Second, "items before the held ones counted", func(st *messages.BatchState) bool {
		return st.Succeeded >= holdFrom-st.PackSize
	})
	ctx := ctxFor(t, 30*time.Second)
	cons, err := jsOf(t, env).Consumer(ctx, names.WorkStream(), names.WorkConsumer("count"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var stolen messages.WorkMessage
	for m := range batch.Messages() {
		if err := json.Unmarshal(m.Data(), &stolen); err != nil {
			t.Fatal(err)
		}
	}
	if len(stolen.Items) < 2 || !stolen.Unpack {
		t.Fatalf("took %+v, want an auto-packed group", stolen)
	}
	open()

	agg := env.Wait(r.BatchID, 60*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, packTotal, packTotal, 0)
	if u := unpackRequests(t, env, r.BatchID); len(u) != 1 || u[0] != names.UnpackRequest(r.BatchID, stolen.Item) {
		t.Errorf("unpack requests %v, want the one of the group at %d", u, stolen.Item)
	}
	for _, it := range stolen.Items {
		if n := c.calls[it.Item].Load(); n != 1 {
			t.Errorf("item %d of the lost group ran %d times, want once (on its own)", it.Item, n)
		}
	}
	for i := range packTotal {
		if n := c.calls[i].Load(); n != 1 {
			t.Errorf("item %d ran %d times, want once", i, n)
		}
	}
	stored := storedResults(t, env, r.BatchID)
	for _, it := range stolen.Items {
		if res := stored[it.Item]; res.Attempts != 2 {
			t.Errorf("item %d of the lost group: result says attempt %d, want 2", it.Item, res.Attempts)
		}
	}
}

// storedResults reads a batch's result messages (not its unpack requests)
// from the results stream, by item.
func storedResults(t *testing.T, env *testenv.Env, batch string) map[int]messages.ResultMessage {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	s, err := jsOf(t, env).Stream(ctx, names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{names.ResultBatchFilter(batch)}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]messages.ResultMessage{}
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		_, item, ok := names.ParseResultSubject(m.Subject())
		if !ok {
			continue
		}
		var res messages.ResultMessage
		if err := json.Unmarshal(m.Data(), &res); err != nil {
			t.Fatal(err)
		}
		if _, dup := out[item]; dup {
			t.Errorf("item %d has two stored results", item)
		}
		out[item] = res
	}
}

// A batch that leaves max_in_flight out gets a window of 64 groups once it
// is auto-packed: with every item after the first 64 held, the driver
// publishes past the 256 items the default window allows, and no further
// than 64 groups.
func TestAutoPackedBatchGetsAWiderWindow(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	const fast = 64 // the results the packing decision waits for
	c := newCounter(packTotal)
	c.holdFrom(t, fast)
	env.Worker(c.register, worker.WithConcurrency(2))
	r := env.Submit(client.BatchRequest{Activity: "count", Items: echoItems(packTotal)})
	st := waitState(t, env, r.BatchID, 30*time.Second, "a window of 64 groups published", func(st *messages.BatchState) bool {
		return st.PackSize > 1 && st.Published >= fast+messages.AutoWindowGroups*st.PackSize
	})
	// The default window, overshot by its last group, ends at 64 + 256 + n - 1.
	if messages.AutoWindowGroups*st.PackSize < messages.DefaultMaxInFlight+st.PackSize {
		t.Fatalf("packed by %d: 64 groups are no wider than the default window, the test cannot tell them apart", st.PackSize)
	}
	if done := st.Progress(time.Now()).Done; done != fast {
		t.Fatalf("%d items done, want the %d that are not held", done, fast)
	}
	if limit := fast + messages.AutoWindowGroups*st.PackSize + st.PackSize; st.Published > limit {
		t.Fatalf("%d items published in groups of %d, over the window of %d groups", st.Published, st.PackSize, messages.AutoWindowGroups)
	}
	if st.Options.MaxInFlight != 0 {
		t.Fatalf("state options max_in_flight %d, want it left out (auto)", st.Options.MaxInFlight)
	}
}
