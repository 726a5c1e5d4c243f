package aggregate

import (
	"time"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Event is something that happened to a batch, given to Batch.Step.
type Event interface{ event() }

// Started: the driver has loaded and fenced the batch.
type Started struct{}

// ResultStored: an item's result read from the results stream at sequence
// Seq. Item is -1 when the subject names no item.
type ResultStored struct {
	Seq    uint64
	Item   int
	Result *messages.ResultMessage
}

// StepStored: a source or reduce step's result read at sequence Seq.
type StepStored struct {
	Seq    uint64
	Step   messages.Step
	Result *messages.ResultMessage
}

// SourceLoaded: the items of the source step's output (LoadSource) are
// ready: Total of them, inline or in the object ItemsRef; Err says why the
// output is unusable instead.
type SourceLoaded struct {
	Total    int
	ItemsRef *messages.ObjectRef
	Err      string
}

// UnpackStored: a worker's request, read at sequence Seq, to publish the
// items of the auto-packed group starting at First on their own, starting
// at attempt Attempt.
type UnpackStored struct {
	Seq     uint64
	First   int
	Attempt int
}

// Requested: what clients' requests have made of the stored state (a
// cancel, changed options, a pause or a resume).
type Requested struct {
	Cancel  bool
	Options messages.Options
	Paused  bool
}

// RequestedBy is the Requested event of a stored state.
func RequestedBy(st *messages.BatchState) Requested {
	return Requested{Cancel: st.CancelRequested, Options: st.Options, Paused: st.Paused}
}

// WorkStored: the work stream has stored every item below Through.
type WorkStored struct{ Through int }

// ItemsUnreadable: the batch's items cannot be read.
type ItemsUnreadable struct{ Err string }

// Tick: time passed.
type Tick struct{}

// Decided: an aggregate of the batch is out already; its outcome is the
// batch's.
type Decided struct{ Outcome Outcome }

func (Started) event()         {}
func (ResultStored) event()    {}
func (StepStored) event()      {}
func (SourceLoaded) event()    {}
func (UnpackStored) event()    {}
func (Requested) event()       {}
func (WorkStored) event()      {}
func (ItemsUnreadable) event() {}
func (Tick) event()            {}
func (Decided) event()         {}

// ActionKind names what an Action asks for.
type ActionKind int

const (
	// PublishWork: publish the work message of items [From, To) in Form.
	PublishWork ActionKind = iota + 1
	// Unpack: publish each item of the group [From, To) that has no result
	// as a message of its own, starting at Attempt, and wait until they
	// are stored.
	Unpack
	// PublishStep: publish the work message of Step.
	PublishStep
	// LoadSource: read the items of the source step's output (Result) and
	// report them with SourceLoaded.
	LoadSource
	// Keep: Result belongs in the aggregate, as item Item's result (or as
	// the reduce step's output when Step is set). Counted: it was counted
	// now, not before a takeover.
	Keep
	// Checkpoint: save State() with compare-and-set.
	Checkpoint
	// Progress: publish Progress(now).
	Progress
	// Purge: remove the batch's queued work.
	Purge
	// PublishAggregate: publish the aggregate of State(); CheckFirst: it
	// may be out already, look first.
	PublishAggregate
	// Release: the batch is finished; let it go.
	Release
)

// WorkForm is how a work message names and describes its items.
type WorkForm int

const (
	// FormPlain: one item, or an items_per_message group.
	FormPlain WorkForm = iota
	// FormAutoPack: an auto-packed group, marked "unpack": true.
	FormAutoPack
	// FormUnpacked: one item of an auto-packed group, on its own.
	FormUnpacked
)

// Action is one thing to do; which fields matter depends on Kind.
type Action struct {
	Kind       ActionKind
	From, To   int
	Form       WorkForm
	Attempt    int
	Step       messages.Step
	Item       int
	Result     *messages.ResultMessage
	Counted    bool
	CheckFirst bool
}

// Outcome is what a published aggregate decided. A batch's aggregate is
// published before its final state is saved, so the aggregate, once out,
// is the outcome, and a state that does not say so yet is brought to it:
// by the driver, and by every reader of the state.
type Outcome struct {
	BatchID    string          `json:"batch_id"`
	Status     messages.Status `json:"status"`
	Reason     string          `json:"reason,omitempty"`
	Total      int             `json:"total"`
	Succeeded  int             `json:"succeeded"`
	Failed     int             `json:"failed"`
	NotRun     int             `json:"not_run"`
	FinishedAt time.Time       `json:"finished_at"`
	// LastSeq is the results-stream sequence the counts reach (the
	// aggregate's Fanout-Last-Seq header); 0 when the aggregate has none.
	LastSeq uint64 `json:"-"`
}

// OutcomeOf is the outcome an aggregate decided.
func OutcomeOf(a *messages.Aggregate) Outcome {
	return Outcome{BatchID: a.BatchID, Status: a.Status, Reason: a.Reason, Total: a.Total,
		Succeeded: a.Succeeded, Failed: a.Failed, NotRun: a.NotRun, FinishedAt: a.FinishedAt}
}

// Check reports why o is not the outcome of a final aggregate of batch.
func (o *Outcome) Check(batch string) error {
	return messages.CheckOutcome(batch, o.BatchID, o.Status, o.Total, o.Succeeded, o.Failed, o.NotRun)
}

// Apply makes st agree with the outcome: its counts, and the fields
// defined by them (a completed batch had every item published; the counts
// reach the aggregate's results-stream sequence).
func (o *Outcome) Apply(st *messages.BatchState) {
	st.Status, st.Reason = o.Status, o.Reason
	st.Succeeded, st.Failed = o.Succeeded, o.Failed
	st.FinishedAt = o.FinishedAt
	if o.Status == messages.StatusCompleted {
		st.Published = st.Total
	}
	if o.LastSeq > 0 {
		st.LastSeq = o.LastSeq
	}
}
