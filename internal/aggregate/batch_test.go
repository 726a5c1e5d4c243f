package aggregate

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/internal/messages"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

var testConfig = Config{CheckpointEvery: 1000, ProgressInterval: 250 * time.Millisecond, AutoPack: DefaultAutoPack}

// newState is a batch of total items as a token makes it, with opts.
func newState(total int, opts messages.Options) messages.BatchState {
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = 3
	}
	return messages.BatchState{BatchID: "b", Activity: "a", Status: messages.StatusRunning, Total: total,
		Options: opts, Epoch: 1, CreatedAt: t0, StartedAt: t0}
}

func ok(item int) *messages.ResultMessage { return &messages.ResultMessage{Item: item, OK: true} }
func bad(item int) *messages.ResultMessage {
	return &messages.ResultMessage{Item: item, Error: "boom"}
}

// describe renders actions compactly: "work 0-1 plain", "checkpoint", ...
func describe(acts []Action) string {
	var out []string
	for _, a := range acts {
		switch a.Kind {
		case PublishWork:
			out = append(out, fmt.Sprintf("work %d-%d %s", a.From, a.To, [...]string{"plain", "pack", "unpacked"}[a.Form]))
		case Unpack:
			out = append(out, fmt.Sprintf("unpack %d-%d@%d", a.From, a.To, a.Attempt))
		case PublishStep:
			out = append(out, "step "+string(a.Step))
		case LoadSource:
			out = append(out, "load source")
		case Keep:
			if a.Step != "" {
				out = append(out, "keep "+string(a.Step))
			} else {
				out = append(out, fmt.Sprintf("keep %d%s", a.Item, map[bool]string{true: "", false: " again"}[a.Counted]))
			}
		case Checkpoint:
			out = append(out, "checkpoint")
		case Progress:
			out = append(out, "progress")
		case Purge:
			out = append(out, "purge")
		case PublishAggregate:
			out = append(out, map[bool]string{true: "aggregate if absent", false: "aggregate"}[a.CheckFirst])
		case Release:
			out = append(out, "release")
		}
	}
	return strings.Join(out, ", ")
}

type step struct {
	at   time.Duration // since t0
	ev   Event
	want string // the actions, described
}

// A table of transitions: each case is a state and the events given to a
// new machine in order, with the actions each must return and the state
// that results.
func TestBatchTransitions(t *testing.T) {
	tolerate := func(n int) *int { return &n }
	percent := func(p float64) *float64 { return &p }
	const end = "aggregate, checkpoint, progress, release"
	const endFailed = "purge, " + end
	for _, tc := range []struct {
		name   string
		every  int // CheckpointEvery, if not the default
		st     messages.BatchState
		reduce bool
		steps  []step
		status messages.Status
		reason string
		check  func(t *testing.T, st messages.BatchState)
	}{{
		name: "a new batch fills its window",
		st:   newState(3, messages.Options{}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain, work 2-3 plain"},
			{0, ResultStored{Seq: 1, Item: 0, Result: ok(0)}, "keep 0"},
			{0, ResultStored{Seq: 2, Item: 2, Result: bad(2)}, "keep 2"},
			{0, ResultStored{Seq: 3, Item: 1, Result: ok(1)}, "keep 1, " + end},
		},
		status: messages.StatusCompleted,
		check: func(t *testing.T, st messages.BatchState) {
			if st.Succeeded != 2 || st.Failed != 1 || st.LastSeq != 3 || st.Published != 3 {
				t.Errorf("state %+v", st)
			}
		},
	}, {
		name: "max_in_flight holds the window; each result frees a place",
		st:   newState(5, messages.Options{MaxInFlight: 2}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain"},
			{0, ResultStored{Seq: 1, Item: 1, Result: ok(1)}, "keep 1, work 2-3 plain"},
			{0, Requested{Options: messages.Options{MaxInFlight: 4, MaxAttempts: 3}}, "work 3-4 plain, work 4-5 plain"},
		},
		status: messages.StatusRunning,
	}, {
		name: "a paused batch publishes nothing new; what is out is counted; resume fills the window",
		st:   newState(4, messages.Options{MaxInFlight: 2, MaxAttempts: 3}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain"},
			{0, Requested{Options: messages.Options{MaxInFlight: 2, MaxAttempts: 3}, Paused: true}, ""},
			{0, ResultStored{Seq: 1, Item: 0, Result: ok(0)}, "keep 0"},
			{0, ResultStored{Seq: 2, Item: 1, Result: ok(1)}, "keep 1"},
			{time.Second, Tick{}, "checkpoint, progress"},
			{time.Second, Requested{Options: messages.Options{MaxInFlight: 2, MaxAttempts: 3}, Paused: false}, "work 2-3 plain, work 3-4 plain"},
			{time.Second, ResultStored{Seq: 3, Item: 2, Result: ok(2)}, "keep 2"},
			{time.Second, ResultStored{Seq: 4, Item: 3, Result: ok(3)}, "keep 3, " + end},
		},
		status: messages.StatusCompleted,
		check: func(t *testing.T, st messages.BatchState) {
			if st.Succeeded != 4 || st.Published != 4 || st.Paused {
				t.Errorf("state %+v", st)
			}
		},
	}, {
		name: "a batch paused before it starts publishes nothing",
		st: func() messages.BatchState {
			st := newState(2, messages.Options{})
			st.Paused = true
			return st
		}(),
		steps: []step{
			{0, Started{}, ""},
			{time.Second, Tick{}, "progress"},
		},
		status: messages.StatusRunning,
		check: func(t *testing.T, st messages.BatchState) {
			if !st.Paused || st.Published != 0 {
				t.Errorf("state %+v", st)
			}
		},
	}, {
		name: "a paused batch still ends: by cancel, by its failure policy, by its deadline",
		st:   newState(3, messages.Options{MaxInFlight: 1, FailurePolicy: messages.FailureFast, Timeout: messages.Duration(time.Minute)}),
		steps: []step{
			{0, Started{}, "work 0-1 plain"},
			{0, Requested{Options: messages.Options{MaxInFlight: 1, FailurePolicy: messages.FailureFast, Timeout: messages.Duration(time.Minute)}, Paused: true}, ""},
			{0, ResultStored{Seq: 1, Item: 0, Result: bad(0)}, "keep 0, " + endFailed},
		},
		status: messages.StatusFailed,
		reason: "an item failed and failure_policy is fail_fast",
	}, {
		name: "a paused batch times out at its deadline",
		st: func() messages.BatchState {
			st := newState(2, messages.Options{Timeout: messages.Duration(time.Minute)})
			st.Paused = true
			return st
		}(),
		steps: []step{
			{0, Started{}, ""},
			{2 * time.Minute, Tick{}, endFailed},
		},
		status: messages.StatusTimedOut,
		reason: "the batch timeout of 1m0s passed",
	}, {
		name: "results at or below the checkpoint were counted before: kept, not counted",
		st: func() messages.BatchState {
			st := newState(3, messages.Options{})
			st.Succeeded, st.LastSeq, st.Published, st.Epoch = 1, 5, 3, 2
			return st
		}(),
		steps: []step{
			{0, Started{}, ""},
			{0, ResultStored{Seq: 5, Item: 0, Result: ok(0)}, "keep 0 again"},
			{0, ResultStored{Seq: 6, Item: 1, Result: ok(1)}, "keep 1"},
			{0, ResultStored{Seq: 6, Item: 1, Result: ok(1)}, "keep 1 again"},
			{0, ResultStored{Seq: 7, Item: 9, Result: ok(9)}, ""}, // not an item of the batch
		},
		status: messages.StatusRunning,
		check: func(t *testing.T, st messages.BatchState) {
			if st.Succeeded != 2 || st.LastSeq != 7 {
				t.Errorf("state %+v", st)
			}
		},
	}, {
		name: "fail_fast ends the batch at the first failure",
		st:   newState(4, messages.Options{FailurePolicy: messages.FailureFast}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain, work 2-3 plain, work 3-4 plain"},
			{0, ResultStored{Seq: 1, Item: 0, Result: ok(0)}, "keep 0"},
			{0, ResultStored{Seq: 2, Item: 3, Result: bad(3)}, "keep 3, " + endFailed},
			{0, ResultStored{Seq: 3, Item: 1, Result: ok(1)}, ""},
		},
		status: messages.StatusFailed, reason: "an item failed and failure_policy is fail_fast",
	}, {
		name: "tolerated_failures: one more than tolerated fails the batch",
		st:   newState(4, messages.Options{ToleratedFailures: tolerate(1)}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain, work 2-3 plain, work 3-4 plain"},
			{0, ResultStored{Seq: 1, Item: 0, Result: bad(0)}, "keep 0"},
			{0, ResultStored{Seq: 2, Item: 1, Result: bad(1)}, "keep 1, " + endFailed},
		},
		status: messages.StatusFailed, reason: "more items failed than tolerated_failures allows",
	}, {
		name: "tolerated_failure_percent, crossed by the last result",
		st:   newState(2, messages.Options{ToleratedFailurePercent: percent(50)}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain"},
			{0, ResultStored{Seq: 1, Item: 0, Result: bad(0)}, "keep 0"},
			{0, ResultStored{Seq: 2, Item: 1, Result: bad(1)}, "keep 1, " + endFailed},
		},
		status: messages.StatusFailed, reason: "the failed percentage exceeded tolerated_failure_percent",
	}, {
		name: "a threshold lowered by an update ends the batch",
		st:   newState(4, messages.Options{}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain, work 2-3 plain, work 3-4 plain"},
			{0, ResultStored{Seq: 1, Item: 0, Result: bad(0)}, "keep 0"},
			{0, Requested{Options: messages.Options{ToleratedFailures: tolerate(0), MaxAttempts: 3}}, endFailed},
		},
		status: messages.StatusFailed, reason: "more items failed than tolerated_failures allows",
	}, {
		name: "cancel",
		st:   newState(4, messages.Options{}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain, work 2-3 plain, work 3-4 plain"},
			{0, Requested{Cancel: true, Options: newState(4, messages.Options{}).Options}, endFailed},
			{0, Tick{}, ""},
		},
		status: messages.StatusCanceled, reason: "canceled by request",
	}, {
		name: "the deadline, at a tick",
		st:   newState(2, messages.Options{Timeout: messages.Duration(time.Second)}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain"},
			{999 * time.Millisecond, Tick{}, "progress"},
			{time.Second, Tick{}, endFailed},
		},
		status: messages.StatusTimedOut, reason: "the batch timeout of 1s passed",
	}, {
		name: "ticks checkpoint what changed and send throttled progress",
		st:   newState(3, messages.Options{}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain, work 2-3 plain"},
			{100 * time.Millisecond, Tick{}, "progress"},
			{200 * time.Millisecond, ResultStored{Seq: 1, Item: 0, Result: ok(0)}, "keep 0"},
			{300 * time.Millisecond, Tick{}, "checkpoint"},
			{400 * time.Millisecond, Tick{}, "progress"},
			{500 * time.Millisecond, WorkStored{Through: 3}, ""},
			{600 * time.Millisecond, Tick{}, "checkpoint"},
		},
		status: messages.StatusRunning,
	}, {
		name:  "every CheckpointEvery results are saved",
		every: 2,
		st:    newState(5, messages.Options{MaxInFlight: 1}),
		steps: []step{
			{0, Started{}, "work 0-1 plain"},
			{0, ResultStored{Seq: 1, Item: 0, Result: ok(0)}, "keep 0, work 1-2 plain"},
			{0, ResultStored{Seq: 2, Item: 1, Result: ok(1)}, "keep 1, work 2-3 plain, checkpoint"},
		},
		status: messages.StatusRunning,
	}, {
		name: "items_per_message groups start at its multiples",
		st:   newState(5, messages.Options{ItemsPerMessage: 2, MaxInFlight: 3}),
		steps: []step{
			{0, Started{}, "work 0-2 plain, work 2-4 plain"},
			{0, ResultStored{Seq: 1, Item: 0, Result: ok(0)}, "keep 0"},
			{0, ResultStored{Seq: 2, Item: 1, Result: ok(1)}, "keep 1, work 4-5 plain"},
		},
		status: messages.StatusRunning,
	}, {
		name: "a resumed batch publishes again from the stored watermark, inside a group item by item",
		st: func() messages.BatchState {
			st := newState(20, messages.Options{MaxInFlight: 8})
			st.PackFrom, st.PackSize, st.Published, st.Succeeded, st.Epoch = 4, 4, 6, 2, 2
			return st
		}(),
		steps: []step{
			{0, Started{}, "work 6-7 unpacked, work 7-8 unpacked, work 8-12 pack"},
		},
		status: messages.StatusRunning,
	}, {
		name: "an unpack request for an auto-packed group; one for anything else is read and ignored",
		st: func() messages.BatchState {
			st := newState(20, messages.Options{MaxInFlight: 8})
			st.PackFrom, st.PackSize, st.Published, st.Epoch = 4, 4, 20, 2
			return st
		}(),
		steps: []step{
			{0, Started{}, ""},
			{0, UnpackStored{Seq: 1, First: 8, Attempt: 2}, "unpack 8-12@2"},
			{0, UnpackStored{Seq: 2, First: 9, Attempt: 2}, ""},
			{0, UnpackStored{Seq: 2, First: 12, Attempt: 2}, ""}, // read before
			{0, UnpackStored{Seq: 3, First: 2, Attempt: 2}, ""},
		},
		status: messages.StatusRunning,
		check: func(t *testing.T, st messages.BatchState) {
			if st.LastSeq != 3 {
				t.Errorf("last_seq %d, want 3", st.LastSeq)
			}
		},
	}, {
		name: "a source step gives the items",
		st: func() messages.BatchState {
			st := newState(0, messages.Options{})
			st.Phase = messages.PhaseSource
			return st
		}(),
		steps: []step{
			{0, Started{}, "step source"},
			{0, StepStored{Seq: 1, Step: messages.StepSource, Result: ok(0)}, "load source"},
			{0, SourceLoaded{Total: 2}, "checkpoint, work 0-1 plain, work 1-2 plain"},
			{0, ResultStored{Seq: 2, Item: 0, Result: ok(0)}, "keep 0"},
			{0, ResultStored{Seq: 3, Item: 1, Result: ok(1)}, "keep 1, " + end},
		},
		status: messages.StatusCompleted,
	}, {
		name: "a failed source step fails the batch",
		st: func() messages.BatchState {
			st := newState(0, messages.Options{})
			st.Phase = messages.PhaseSource
			return st
		}(),
		steps:  []step{{0, Started{}, "step source"}, {0, StepStored{Seq: 1, Step: messages.StepSource, Result: bad(0)}, endFailed}},
		status: messages.StatusFailed, reason: "the source step failed: boom",
	}, {
		name: "a source step's unusable output fails the batch",
		st: func() messages.BatchState {
			st := newState(0, messages.Options{})
			st.Phase = messages.PhaseSource
			return st
		}(),
		steps: []step{
			{0, Started{}, "step source"},
			{0, StepStored{Seq: 1, Step: messages.StepSource, Result: ok(0)}, "load source"},
			{0, SourceLoaded{Err: "not a list"}, endFailed},
		},
		status: messages.StatusFailed, reason: "the source step's output: not a list",
	}, {
		name:   "a reduce step runs once every item is counted, and its result ends the batch",
		st:     newState(1, messages.Options{}),
		reduce: true,
		steps: []step{
			{0, Started{}, "work 0-1 plain"},
			{0, ResultStored{Seq: 1, Item: 0, Result: ok(0)}, "keep 0, checkpoint, step reduce"},
			{0, StepStored{Seq: 2, Step: messages.StepReduce, Result: ok(0)}, "keep reduce, " + end},
		},
		status: messages.StatusCompleted,
	}, {
		name: "a failed reduce step fails the batch",
		st: func() messages.BatchState {
			st := newState(1, messages.Options{})
			st.Phase = messages.PhaseReduce
			return st
		}(),
		reduce: true,
		steps: []step{
			{0, Started{}, "step reduce"},
			{0, StepStored{Seq: 2, Step: messages.StepReduce, Result: bad(0)}, endFailed},
		},
		status: messages.StatusFailed, reason: "the reduce step failed: boom",
	}, {
		name: "a batch final when loaded ends again, its aggregate published only if absent",
		st: func() messages.BatchState {
			st := newState(2, messages.Options{})
			st.Status, st.Succeeded, st.LastSeq = messages.StatusCompleted, 2, 2
			return st
		}(),
		steps: []step{
			{0, Started{}, "aggregate if absent, checkpoint, progress, release"},
			{0, ResultStored{Seq: 1, Item: 0, Result: ok(0)}, "keep 0 again"},
			{0, ResultStored{Seq: 3, Item: 1, Result: ok(1)}, ""},
		},
		status: messages.StatusCompleted,
	}, {
		name: "an aggregate out decides the outcome",
		st:   newState(2, messages.Options{}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain"},
			{0, Decided{Outcome{Status: messages.StatusFailed, Reason: "decided elsewhere", Failed: 1}}, ""},
			{0, ResultStored{Seq: 1, Item: 0, Result: ok(0)}, ""},
		},
		status: messages.StatusFailed, reason: "decided elsewhere",
	}, {
		name: "items that cannot be read fail the batch",
		st:   newState(2, messages.Options{}),
		steps: []step{
			{0, Started{}, "work 0-1 plain, work 1-2 plain"},
			{0, ItemsUnreadable{Err: "gone"}, endFailed},
		},
		status: messages.StatusFailed, reason: "reading the items: gone",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig
			if tc.every > 0 {
				cfg.CheckpointEvery = tc.every
			}
			b := New(cfg, tc.st, tc.reduce)
			for i, s := range tc.steps {
				if got := describe(b.Step(t0.Add(s.at), s.ev)); got != s.want {
					t.Fatalf("step %d (%T): actions %q, want %q", i, s.ev, got, s.want)
				}
			}
			st := b.State()
			if st.Status != tc.status || st.Reason != tc.reason {
				t.Errorf("status %s (%q), want %s (%q)", st.Status, st.Reason, tc.status, tc.reason)
			}
			if tc.check != nil {
				tc.check(t, st)
			}
		})
	}
}

// Auto packing: after 64 fast results the first driver packs the rest,
// saving the decision before the first group; a driver that took the
// batch over, a batch with one attempt or its own items_per_message, and
// slow items are not packed.
func TestAutoPacking(t *testing.T) {
	for _, tc := range []struct {
		name      string
		epoch     uint64
		opts      messages.Options
		ms        float64
		wantGroup int
	}{
		{"fast items", 1, messages.Options{}, 0.1, 16},
		{"items of 1 ms", 1, messages.Options{}, 1, 5},
		{"slow items", 1, messages.Options{}, 4, 0},
		{"taken over", 2, messages.Options{}, 0.1, 0},
		{"one attempt", 1, messages.Options{MaxAttempts: 1}, 0.1, 0},
		{"items_per_message set", 1, messages.Options{ItemsPerMessage: 1}, 0.1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newState(2000, tc.opts)
			st.Epoch = tc.epoch
			b := New(testConfig, st, false)
			b.Step(t0, Started{})
			var acts []Action
			for i := range autoPackSample {
				acts = b.Step(t0, ResultStored{Seq: uint64(i + 1), Item: i, Result: &messages.ResultMessage{OK: true, DurationMS: tc.ms}})
			}
			st = b.State()
			if st.PackSize != tc.wantGroup {
				t.Fatalf("pack size %d, want %d", st.PackSize, tc.wantGroup)
			}
			if tc.wantGroup == 0 {
				return
			}
			// Each result before freed a place for one more item.
			const from = 256 + autoPackSample - 1
			want := fmt.Sprintf("keep 63, checkpoint, work %d-%d pack", from, from+tc.wantGroup)
			if got := describe(acts); !strings.HasPrefix(got, want) {
				t.Fatalf("actions %q, want them to start %q", got, want)
			}
			if st.PackFrom != from || Window(&st) != max(256, 64*tc.wantGroup) {
				t.Fatalf("packs from %d, window %d", st.PackFrom, Window(&st))
			}
		})
	}
}

func TestWindow(t *testing.T) {
	for _, c := range []struct{ maxInFlight, packSize, want int }{
		{0, 0, messages.DefaultMaxInFlight},
		{0, 2, messages.DefaultMaxInFlight}, // 64 groups of 2 are fewer
		{0, 16, messages.AutoWindowGroups * 16},
		{10, 0, 10},
		{10, 16, 10}, // set by the request: kept when packed
		{5000, 16, 5000},
	} {
		st := messages.BatchState{Options: messages.Options{MaxInFlight: c.maxInFlight}, PackSize: c.packSize}
		if got := Window(&st); got != c.want {
			t.Errorf("max_in_flight %d, pack size %d: window %d, want %d", c.maxInFlight, c.packSize, got, c.want)
		}
	}
}
