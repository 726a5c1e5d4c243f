package aggregate

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/internal/messages"
)

// The state machine driven through random interleavings of everything that
// can happen to a batch: results in any order and with any outcome,
// duplicate deliveries, results after the end, auto-packed groups lost and
// unpacked, cancel and update requests, the deadline, and drivers that
// crash between any two actions and are resumed from the last checkpoint
// by a driver that reads the results stream from its start. A simple
// reference model of the results stream checks the machine: its counts
// are exactly the results stored up to its position, every item it keeps
// for the aggregate is kept once, the batch ends, and it ends the way its
// rules say.
func TestBatchSimulation(t *testing.T) {
	for seed := uint64(1); seed <= 400; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { simulate(t, seed) })
	}
}

// FuzzBatchSimulation explores more seeds: go test -fuzz FuzzBatchSimulation.
func FuzzBatchSimulation(f *testing.F) {
	for _, seed := range []uint64{7, 42, 1 << 40} {
		f.Add(seed)
	}
	f.Fuzz(simulate)
}

// stored is a message of the simulated results stream at sequence index+1.
type stored struct {
	item   int
	ok     bool
	unpack bool // an unpack request for the group starting at item
	ms     float64
}

// work is a message of the simulated work stream.
type work struct {
	from, to  int
	form      WorkForm
	delivered int
}

type simulation struct {
	t      *testing.T
	rng    *rand.Rand
	now    time.Time
	total  int
	failP  float64
	stream []stored
	has    map[int]bool // items with a stored result (the per-subject guard)
	queue  []*work

	m         *Batch
	read      int                 // messages of the stream given to the machine
	kept      map[int]bool        // items kept for the aggregate
	counted   map[int]int         // items counted
	saved     messages.BatchState // the last checkpoint
	todo      []Action
	pubTo     int // the work published so far ends here
	justSaved bool
	drivers   int
	window    int // the largest window the batch had

	mayCancel bool             // this run may send a cancel request
	cancel    bool             // a cancel was requested
	options   messages.Options // as requests made them
	aggregate *Outcome         // the aggregate published, once
	released  bool
	decided   bool
}

func simulate(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s := &simulation{t: t, rng: rng, now: t0, total: 1 + rng.IntN(80), failP: []float64{0, 0.05, 0.3}[rng.IntN(3)], has: map[int]bool{}}
	o := messages.Options{MaxAttempts: 1 + rng.IntN(3)}
	switch rng.IntN(4) {
	case 0:
		o.MaxInFlight = 1 + rng.IntN(10)
	case 1:
		o.ItemsPerMessage = 1 + rng.IntN(5)
	}
	switch rng.IntN(5) {
	case 0:
		o.FailurePolicy = messages.FailureFast
	case 1:
		n := rng.IntN(4)
		o.ToleratedFailures = &n
	case 2:
		p := float64(rng.IntN(30))
		o.ToleratedFailurePercent = &p
	}
	if rng.IntN(4) == 0 {
		o.Timeout = messages.Duration(time.Duration(1+rng.IntN(20)) * 100 * time.Millisecond)
	}
	s.options, s.mayCancel = o, rng.IntN(2) == 0
	st := messages.BatchState{BatchID: "b", Activity: "a", Status: messages.StatusRunning, Total: s.total, Options: o, CreatedAt: t0}
	cfg := Config{CheckpointEvery: 1 + rng.IntN(20), ProgressInterval: 250 * time.Millisecond, AutoPack: 1 + rng.IntN(8)}
	// Small batches pack early here: the sample and the least items left
	// are the machine's constants, so give it more items sometimes.
	if rng.IntN(2) == 0 {
		s.total = messages.DefaultMaxInFlight + autoPackSample + autoPackMinLeft + rng.IntN(300)
		st.Total = s.total
		if rng.IntN(3) > 0 { // long enough to see its groups lost and unpacked
			o.MaxInFlight, o.ItemsPerMessage, o.FailurePolicy, o.ToleratedFailures, o.ToleratedFailurePercent, o.Timeout = 0, 0, "", nil, nil, 0
			o.MaxAttempts = 3
			st.Options, s.options, s.mayCancel = o, o, false
		}
	}
	s.saved = st
	s.start(cfg)
	for step := 0; !s.released; step++ {
		if step > 200_000 {
			t.Fatalf("the batch did not end: %+v", s.m.State())
		}
		s.next(cfg)
		s.check()
	}
	s.checkEnd()
}

// start makes a driver from the last checkpoint, as a coordinator taking
// the token does: the epoch raised, the requests in the stored state.
func (s *simulation) start(cfg Config) {
	st := s.saved
	st.Epoch++
	st.CancelRequested = st.CancelRequested || s.cancel
	st.Options = s.options
	s.saved = st
	s.m = New(cfg, st, false)
	s.read, s.kept, s.counted, s.todo, s.decided, s.pubTo, s.justSaved = 0, map[int]bool{}, map[int]int{}, nil, false, st.Published, false
	s.drivers++
	s.feed(Started{})
}

func (s *simulation) feed(ev Event) {
	for _, a := range s.m.Step(s.now, ev) {
		if a.Kind == Keep {
			s.kept[a.Item] = true
			if a.Counted {
				s.counted[a.Item]++
			}
			continue
		}
		s.todo = append(s.todo, a)
	}
}

// next does one random thing. As in the driver, the actions of an event
// all run before the next event, but a driver may die between any two.
func (s *simulation) next(cfg Config) {
	r := s.rng
	if len(s.todo) > 0 {
		// Dying right after a checkpoint is the most telling: whatever the
		// checkpoint covers must not need the actions after it.
		chance := 400
		if s.justSaved && s.todo[0].Kind != Progress {
			chance = 20
			if s.todo[0].Kind == Unpack {
				chance = 3
			}
		}
		if r.IntN(chance) == 0 && s.drivers < maxDrivers {
			s.start(cfg)
		} else {
			s.act()
		}
		return
	}
	if r.IntN(400) == 0 && s.drivers < maxDrivers {
		s.start(cfg)
		return
	}
	switch n := r.IntN(100); {
	case n < 40:
		s.deliver()
	case n < 85:
		if s.read < len(s.stream) {
			s.read++
			s.feedStored(s.read)
		}
	case n < 87 && s.read > 0:
		s.feedStored(1 + r.IntN(s.read)) // a message read again
	case n < 88 && s.mayCancel && r.IntN(50) == 0:
		s.cancel = true
		s.feed(Requested{Cancel: true, Options: s.options})
	case n < 90:
		o := s.options
		if o.MaxInFlight > 0 {
			o.MaxInFlight = 1 + r.IntN(12)
		}
		s.options = o
		s.window = max(s.window, Window(&messages.BatchState{Options: o}))
		s.feed(Requested{Cancel: s.cancel, Options: o})
	default:
		s.now = s.now.Add(time.Duration(r.IntN(150)) * time.Millisecond)
		s.feed(Tick{})
	}
}

func (s *simulation) feedStored(seq int) {
	m := s.stream[seq-1]
	if m.unpack {
		s.feed(UnpackStored{Seq: uint64(seq), First: m.item, Attempt: 2})
		return
	}
	s.feed(ResultStored{Seq: uint64(seq), Item: m.item, Result: &messages.ResultMessage{Item: m.item, OK: m.ok, DurationMS: m.ms}})
}

// act runs the next action, as the driver would.
func (s *simulation) act() {
	a := s.todo[0]
	s.todo = s.todo[1:]
	s.justSaved = a.Kind == Checkpoint
	switch a.Kind {
	case PublishWork:
		if !s.m.Ended() {
			s.publish(&work{from: a.From, to: a.To, form: a.Form})
			s.pubTo = a.To
		}
	case Unpack:
		for i := a.From; i < a.To; i++ {
			if !s.has[i] {
				s.publish(&work{from: i, to: i + 1, form: FormUnpacked, delivered: a.Attempt - 1})
			}
		}
	case Checkpoint:
		s.saved = s.m.State()
		// What a request wrote meanwhile is merged, as the driver does.
		s.saved.CancelRequested = s.saved.CancelRequested || s.cancel
		s.saved.Options = s.options
		s.feed(WorkStored{Through: s.pubTo})
	case Purge:
		s.queue = nil
	case PublishAggregate:
		// The driver first reads what it counted and has not read yet.
		for s.read < int(s.m.State().LastSeq) {
			s.read++
			s.feedStored(s.read)
		}
		if s.aggregate != nil {
			s.decided = true
			s.feed(Decided{Outcome: *s.aggregate})
			return
		}
		st := s.m.State()
		s.aggregate = &Outcome{Status: st.Status, Reason: st.Reason, Succeeded: st.Succeeded, Failed: st.Failed}
	case Release:
		s.released = true
	}
}

// publish adds work unless the same message is queued (Nats-Msg-Id).
func (s *simulation) publish(w *work) {
	for _, q := range s.queue {
		if q.from == w.from && (q.form == FormUnpacked) == (w.form == FormUnpacked) {
			return
		}
	}
	s.queue = append(s.queue, w)
}

// deliver gives a random queued work message to a worker: it runs (a
// packed group delivered again asks to be unpacked instead), or its worker
// dies and it stays queued.
func (s *simulation) deliver() {
	if len(s.queue) == 0 {
		return
	}
	i := s.rng.IntN(len(s.queue))
	w := s.queue[i]
	w.delivered++
	if s.rng.IntN(8) == 0 {
		return // the worker died: delivered again later
	}
	s.queue = append(s.queue[:i], s.queue[i+1:]...)
	if w.form == FormAutoPack && w.delivered > 1 {
		s.stream = append(s.stream, stored{item: w.from, unpack: true})
		return
	}
	for item := w.from; item < w.to; item++ {
		if !s.has[item] { // a second result is refused
			s.has[item] = true
			s.stream = append(s.stream, stored{item: item, ok: s.rng.Float64() >= s.failP, ms: s.rng.Float64()})
		}
	}
}

// check compares the machine with the reference model after each step.
func (s *simulation) check() {
	t, st := s.t, s.m.State()
	for item, n := range s.counted {
		if n > 1 {
			t.Fatalf("item %d counted %d times by one driver", item, n)
		}
	}
	if s.decided {
		return // the outcome of the aggregate out, not this driver's count
	}
	succeeded, failed := 0, 0
	for _, m := range s.stream[:min(int(st.LastSeq), len(s.stream))] {
		if !m.unpack && m.item < s.total {
			if m.ok {
				succeeded++
			} else {
				failed++
			}
		}
	}
	if st.Succeeded != succeeded || st.Failed != failed {
		t.Fatalf("counts %d/%d at last_seq %d, the stream says %d/%d", st.Succeeded, st.Failed, st.LastSeq, succeeded, failed)
	}
	s.window = max(s.window, Window(&st))
	if done := st.Succeeded + st.Failed; !s.m.Ended() && s.m.next-done > s.window+max(st.Options.ItemsPerMessage, st.PackSize, 1)-1 {
		t.Fatalf("%d items out, past the window of %d", s.m.next-done, s.window)
	}
}

// checkEnd checks how the batch ended.
func (s *simulation) checkEnd() {
	t, st := s.t, s.m.State()
	if !st.Status.Final() || s.aggregate == nil || st.Status != s.aggregate.Status {
		t.Fatalf("released with status %s, aggregate %+v", st.Status, s.aggregate)
	}
	if s.decided {
		return
	}
	done := st.Succeeded + st.Failed
	switch st.Status {
	case messages.StatusCompleted:
		if done != s.total || FailureExceeded(&st) != "" {
			t.Fatalf("completed with %d of %d done, failure rule %q", done, s.total, FailureExceeded(&st))
		}
	case messages.StatusFailed:
		if FailureExceeded(&st) == "" {
			t.Fatalf("failed (%s) without its rule", st.Reason)
		}
	case messages.StatusCanceled:
		if !s.cancel {
			t.Fatal("canceled without a request")
		}
	case messages.StatusTimedOut:
		if s.now.Before(s.m.Deadline()) {
			t.Fatalf("timed out at %s, before its deadline", s.now)
		}
	}
	// The aggregate holds exactly the results counted.
	for seq, m := range s.stream[:st.LastSeq] {
		if !m.unpack && m.item < s.total && !s.kept[m.item] {
			t.Fatalf("item %d (seq %d) not kept for the aggregate", m.item, seq+1)
		}
	}
	if len(s.kept) != done {
		t.Fatalf("%d results kept, %d counted", len(s.kept), done)
	}
}

// maxDrivers bounds the drivers one run starts (crashes and resumes).
const maxDrivers = 20
