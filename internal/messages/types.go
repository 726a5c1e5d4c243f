package messages

import (
	"encoding/json"
	"fmt"
	"time"
)

// Status is a batch's state. The final ones are completed, failed, canceled
// and timed_out.
type Status string

const (
	StatusRunning   Status = "running"
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
	StatusCanceled  Status = "canceled"
	StatusTimedOut  Status = "timed_out"
)

// Step names a batch's single-run steps.
type Step string

const (
	// StepSource runs once before the fan-out; its output is the item list.
	StepSource Step = "source"
	// StepReduce runs once after the fan-in, given the aggregate; its output
	// becomes the aggregate's output.
	StepReduce Step = "reduce"
)

// Phase is where a running batch is: its source step, its items, or its
// reduce step.
type Phase string

const (
	PhaseSource Phase = "source"
	PhaseItems  Phase = "items"
	PhaseReduce Phase = "reduce"
)

// Final reports whether no more items will be counted for the batch.
// FinalStatuses are the statuses a batch ends with.
var FinalStatuses = []Status{StatusCompleted, StatusFailed, StatusCanceled, StatusTimedOut}

func (s Status) Final() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusCanceled, StatusTimedOut:
		return true
	}
	return false
}

// BatchRequest is the body of a submit request.
type BatchRequest struct {
	// ID is an optional idempotency key: submitting the same id twice
	// returns the same batch. It becomes the batch id.
	ID       string            `json:"id,omitempty"`
	Activity string            `json:"activity"`
	Items    []json.RawMessage `json:"items,omitempty"`
	// ItemsRef names a JSON Lines object in the object store holding the
	// items, one per line, for batches too large for one message.
	ItemsRef *ObjectRef `json:"items_ref,omitempty"`
	Source   *StepSpec  `json:"source,omitempty"`
	Reduce   *StepSpec  `json:"reduce,omitempty"`
	Options  Options    `json:"options,omitempty"`
	// RedriveOf is set by the coordinator on a batch made by a redrive
	// request: the batch whose failed items it runs again.
	RedriveOf *RedriveRef `json:"redrive_of,omitempty"`
}

// RedriveRef links a redriven batch to its origin: item i of the new
// batch is item Items[i] of batch BatchID.
type RedriveRef struct {
	BatchID string `json:"batch_id"`
	Items   []int  `json:"items"`
}

// StepSpec names an activity run once (a source or reduce step).
type StepSpec struct {
	Activity string          `json:"activity"`
	Input    json.RawMessage `json:"input,omitempty"`
}

// Options tune a batch. Zero values take the documented defaults (see
// Options.WithDefaults); for MaxInFlight and ItemsPerMessage zero stays and
// means automatic (BatchState.Window, auto packing).
type Options struct {
	MaxInFlight             int           `json:"max_in_flight,omitempty"`
	ItemsPerMessage         int           `json:"items_per_message,omitempty"`
	MaxAttempts             int           `json:"max_attempts,omitempty"`
	Backoff                 []Duration    `json:"backoff,omitempty"`
	ItemTimeout             Duration      `json:"item_timeout,omitempty"`
	Timeout                 Duration      `json:"timeout,omitempty"`
	FailurePolicy           FailurePolicy `json:"failure_policy,omitempty"`
	ToleratedFailures       *int          `json:"tolerated_failures,omitempty"`
	ToleratedFailurePercent *float64      `json:"tolerated_failure_percent,omitempty"`
}

// FailurePolicy decides what a failed item does to its batch.
type FailurePolicy string

const (
	// FailureContinue: failed items are results; the batch completes.
	FailureContinue FailurePolicy = "continue"
	// FailureFast: the first failed item ends the batch as failed.
	FailureFast FailurePolicy = "fail_fast"
)

// SubmitReply answers a submit request that was accepted.
type SubmitReply struct {
	BatchID string `json:"batch_id"`
	Total   int    `json:"total"`
	Status  Status `json:"status"`
	// Existing is true when the request's id named a batch that already
	// existed; the reply describes that batch.
	Existing bool `json:"existing,omitempty"`
}

// BatchRef is the body of status and cancel requests.
type BatchRef struct {
	BatchID string `json:"batch_id"`
}

// UpdateRequest changes options of a running batch (fanout.update).
type UpdateRequest struct {
	BatchID string        `json:"batch_id"`
	Options OptionsUpdate `json:"options,omitzero"`
	// Paused, when set, pauses (true) or resumes (false) the batch: a
	// paused batch publishes no new work; what is out already finishes.
	Paused *bool `json:"paused,omitempty"`
}

// OptionsUpdate holds the options that can change while a batch runs;
// nil fields stay as they are.
type OptionsUpdate struct {
	MaxInFlight             *int           `json:"max_in_flight,omitempty"`
	FailurePolicy           *FailurePolicy `json:"failure_policy,omitempty"`
	ToleratedFailures       *int           `json:"tolerated_failures,omitempty"`
	ToleratedFailurePercent *float64       `json:"tolerated_failure_percent,omitempty"`
}

// Apply returns o with the update's fields set.
func (u OptionsUpdate) Apply(o Options) Options {
	if u.MaxInFlight != nil {
		o.MaxInFlight = *u.MaxInFlight
	}
	if u.FailurePolicy != nil {
		o.FailurePolicy = *u.FailurePolicy
	}
	if u.ToleratedFailures != nil {
		n := *u.ToleratedFailures
		o.ToleratedFailures = &n
	}
	if u.ToleratedFailurePercent != nil {
		p := *u.ToleratedFailurePercent
		o.ToleratedFailurePercent = &p
	}
	return o
}

// RedriveRequest runs the failed items of a finished batch again, as a new
// batch (fanout.redrive). ID is the new batch's optional idempotency key.
type RedriveRequest struct {
	BatchID string `json:"batch_id"`
	ID      string `json:"id,omitempty"`
}

// ErrorReply is the reply to any request that failed.
type ErrorReply struct {
	Error *Error `json:"error"`
}

// WorkMessage is one item of work, published to Names.Work.
type WorkMessage struct {
	BatchID  string          `json:"batch_id"`
	Item     int             `json:"item"`
	Activity string          `json:"activity"`
	Input    json.RawMessage `json:"input,omitempty"`
	// InputRef replaces Input when the input is larger than the claim-check
	// threshold: the input is that object's content.
	InputRef *ObjectRef `json:"input_ref,omitempty"`
	// Attempt is 1 as published; the attempt a worker is running is the
	// JetStream delivery count of the message (see the protocol page).
	Attempt int `json:"attempt"`
	// Step is set on the work of a source or reduce step: its result goes to
	// Names.StepResult, not to an item's subject.
	Step Step `json:"step,omitempty"`
	// Items is set instead of Item/Input when the batch packs several items
	// per message (items_per_message); Item is then the first one's index.
	Items []WorkItem `json:"items,omitempty"`
	// Unpack marks a group packed by the coordinator on its own (auto
	// packing): a worker that gets it a second time asks for it to be
	// unpacked (a ResultMessage with Unpack set) instead of running it, so
	// that an item that crashes its worker takes no other item down.
	Unpack bool `json:"unpack,omitempty"`
	// The batch's retry policy, so that any worker can apply it alone.
	MaxAttempts   int     `json:"max_attempts"`
	BackoffMS     []int64 `json:"backoff_ms,omitempty"`
	ItemTimeoutMS int64   `json:"item_timeout_ms"`
}

// NewWorkMessage is the start of every work message of a batch, items
// and steps alike: the batch, the activity, attempt 1 and the batch's
// retry policy, which a worker applies alone.
func NewWorkMessage(batch, activity string, o Options) WorkMessage {
	wm := WorkMessage{BatchID: batch, Activity: activity, Attempt: 1,
		MaxAttempts: o.MaxAttempts, ItemTimeoutMS: o.ItemTimeout.Std().Milliseconds()}
	for _, b := range o.Backoff {
		wm.BackoffMS = append(wm.BackoffMS, b.Std().Milliseconds())
	}
	return wm
}

// WorkItem is one item of a packed work message.
type WorkItem struct {
	Item     int             `json:"item"`
	Input    json.RawMessage `json:"input,omitempty"`
	InputRef *ObjectRef      `json:"input_ref,omitempty"`
}

// ResultMessage is one item's result, published to Names.Result.
type ResultMessage struct {
	BatchID string          `json:"batch_id"`
	Item    int             `json:"item"`
	Step    Step            `json:"step,omitempty"`
	OK      bool            `json:"ok"`
	Output  json.RawMessage `json:"output,omitempty"`
	// OutputRef replaces Output when the output is larger than the
	// claim-check threshold: the output is that object's content.
	OutputRef  *ObjectRef `json:"output_ref,omitempty"`
	Error      string     `json:"error,omitempty"`
	Attempts   int        `json:"attempts"`
	Worker     string     `json:"worker,omitempty"`
	DurationMS float64    `json:"duration_ms"`
	// Unpack makes this message an unpack request, not a result: published
	// to Names.UnpackRequest(batch, item) for the auto-packed group that
	// starts at Item.
	Unpack *UnpackRequest `json:"unpack,omitempty"`
}

// UnpackRequest asks the coordinator to publish the items of a packed
// group that have no result yet as work messages of their own.
type UnpackRequest struct {
	// Attempt is the attempt the group's delivery was on: each item's own
	// message starts there (the lost delivery counts for all of them).
	Attempt int `json:"attempt"`
}

// ItemResult is one item's entry in an aggregate.
type ItemResult struct {
	Item   int             `json:"item"`
	OK     bool            `json:"ok"`
	Output json.RawMessage `json:"output,omitempty"`
	// OutputRef: see ResultMessage.OutputRef. The Go client fills Output
	// from it when it reads an aggregate.
	OutputRef *ObjectRef `json:"output_ref,omitempty"`
	Error     string     `json:"error,omitempty"`
	// NotRun is true for items the batch ended without a result for
	// (canceled, timed out, failed by policy).
	NotRun bool `json:"not_run,omitempty"`
}

// Aggregate is published once to Names.Done when a batch ends.
type Aggregate struct {
	BatchID   string       `json:"batch_id"`
	Activity  string       `json:"activity"`
	Status    Status       `json:"status"`
	Reason    string       `json:"reason,omitempty"`
	Total     int          `json:"total"`
	Succeeded int          `json:"succeeded"`
	Failed    int          `json:"failed"`
	NotRun    int          `json:"not_run"`
	Results   []ItemResult `json:"results,omitempty"`
	// ResultsRef is set instead of Results when they are too large for one
	// message: a JSON Lines object of ItemResult in item order.
	ResultsRef *ObjectRef      `json:"results_ref,omitempty"`
	Output     json.RawMessage `json:"output,omitempty"`
	RedriveOf  *RedriveRef     `json:"redrive_of,omitempty"`
	StartedAt  time.Time       `json:"started_at"`
	FinishedAt time.Time       `json:"finished_at"`
	DurationMS float64         `json:"duration_ms"`
}

// ClaimCheckBytes is the default size above which an item's input or
// output travels through the object store (claim check) instead of inside
// its message.
const ClaimCheckBytes = 256 * 1024

// PayloadObject is the object name of a claim-checked input ("in") or
// output ("out") of an item.
func PayloadObject(batch string, item int, dir string) string {
	return fmt.Sprintf("payloads/%s/%d.%s", batch, item, dir)
}

// ObjectRef points at an object in the deployment's Object Store bucket.
type ObjectRef struct {
	Bucket string `json:"bucket,omitempty"` // default: the deployment's blob bucket
	Name   string `json:"name"`
	Size   uint64 `json:"size,omitempty"`
	// Digest is the object's SHA-256 digest as the object store writes it
	// ("SHA-256=" and the unpadded URL-safe base64 of the sum), recorded by
	// the coordinator for the objects it writes: a reader checks the
	// object it reads is the one the coordinator wrote.
	Digest string `json:"digest,omitempty"`
}

// Progress is published (throttled) to Names.Progress while a batch runs,
// and is the reply to a status request.
type Progress struct {
	BatchID   string  `json:"batch_id"`
	Activity  string  `json:"activity"`
	Status    Status  `json:"status"`
	Total     int     `json:"total"`
	Succeeded int     `json:"succeeded"`
	Failed    int     `json:"failed"`
	Done      int     `json:"done"`
	InFlight  int     `json:"in_flight"`
	Percent   float64 `json:"percent"`
	// RatePerSec is items finished per second over the batch's life so far.
	RatePerSec float64   `json:"rate_per_sec"`
	ETAMS      int64     `json:"eta_ms,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Options are the batch's options in force (status, cancel and update
	// replies; not in progress events).
	Options *Options `json:"options,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	// Paused: the batch runs but publishes no new work (see UpdateRequest).
	Paused bool `json:"paused,omitempty"`
	// FinishedAt is when a final batch's status was decided; zero, and
	// left out, while it runs.
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// BatchState is the value of a batch's key in the FANOUT_BATCHES bucket:
// the fan-in checkpoint. Counts and LastSeq are written together in one CAS
// update, so they never disagree.
type BatchState struct {
	BatchID   string `json:"batch_id"`
	Activity  string `json:"activity"`
	Status    Status `json:"status"`
	Reason    string `json:"reason,omitempty"`
	Total     int    `json:"total"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	// Published: items [0, Published) have been published at least once.
	Published int `json:"published"`
	// ItemsRef is where the items are when they are not in the request:
	// the request's items_ref, or the one a source step returned.
	ItemsRef *ObjectRef `json:"items_ref,omitempty"`
	// Phase is the running batch's phase (empty: items).
	Phase Phase `json:"phase,omitempty"`
	// PackFrom and PackSize record auto packing (options without
	// items_per_message): from item PackFrom on, items go out in groups of
	// PackSize (the last may be shorter). PackSize 0: not packed (yet).
	PackFrom int `json:"pack_from,omitempty"`
	PackSize int `json:"pack_size,omitempty"`
	// LastSeq is the last FANOUT_RESULTS stream sequence counted.
	LastSeq uint64  `json:"last_seq"`
	Options Options `json:"options"`
	// TokenSeq is the control stream sequence of the batch's token; a token
	// with another sequence is a duplicate.
	TokenSeq uint64 `json:"token_seq"`
	// Epoch grows each time a coordinator takes the batch over; a driver
	// whose epoch is stale has lost the batch and stops.
	Epoch     uint64      `json:"epoch"`
	Owner     string      `json:"owner,omitempty"`
	RedriveOf *RedriveRef `json:"redrive_of,omitempty"`
	// CancelRequested is set by a cancel request; the driver ends the batch.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Paused is set by an update request: no new work goes out until an
	// update clears it.
	Paused     bool      `json:"paused,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
	FinishedAt time.Time `json:"finished_at,omitempty"`
}

// ProgressWithOptions is Progress with the batch's options, as status
// replies and listings show it.
func (s *BatchState) ProgressWithOptions(now time.Time) Progress {
	p := s.Progress(now)
	o := s.Options
	p.Options = &o
	return p
}

// Progress derives the progress view of a state.
func (s *BatchState) Progress(now time.Time) Progress {
	done := s.Succeeded + s.Failed
	p := Progress{
		BatchID: s.BatchID, Activity: s.Activity, Status: s.Status,
		Total: s.Total, Succeeded: s.Succeeded, Failed: s.Failed, Done: done,
		CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt, Reason: s.Reason,
		Paused: s.Paused && !s.Status.Final(),
	}
	if s.Status.Final() {
		p.FinishedAt = s.FinishedAt
	}
	if !s.Status.Final() {
		p.InFlight = max(s.Published-done, 0)
	}
	if s.Total > 0 {
		p.Percent = float64(done) * 100 / float64(s.Total)
	}
	if !s.StartedAt.IsZero() {
		end := now
		if !s.FinishedAt.IsZero() {
			end = s.FinishedAt
		}
		if el := end.Sub(s.StartedAt).Seconds(); el > 0 && done > 0 {
			p.RatePerSec = float64(done) / el
			if !s.Status.Final() {
				p.ETAMS = int64(float64(s.Total-done) / p.RatePerSec * 1000)
			}
		}
	}
	return p
}

// WorkerPresence is a running worker as its heartbeat describes it: the
// value of its key in the KV bucket Names.WorkersBucket (FANOUT_WORKERS).
// A worker writes it as it starts and every WorkerPresenceInterval after;
// the bucket drops a value WorkerPresenceTTL after it was written, so a
// worker that stopped writing drops out of the listing. A worker that
// stops cleanly deletes its key.
type WorkerPresence struct {
	// Name is the worker's name; Key is its key in the bucket, the name
	// made a valid key plus an id of this run, so that two workers started
	// with the same name are both listed.
	Name string `json:"name"`
	Key  string `json:"key"`
	Host string `json:"host"`
	// Activities the worker serves, sorted.
	Activities []string `json:"activities"`
	// Concurrency is how many items it runs at once; InUse how many it was
	// running at the heartbeat.
	Concurrency int  `json:"concurrency"`
	InUse       int  `json:"in_use"`
	Draining    bool `json:"draining,omitempty"`
	// StartedAt is when the worker started, UpdatedAt when it wrote this.
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Heartbeat timing of worker presence: a worker writes its WorkerPresence
// every WorkerPresenceInterval, and the workers bucket keeps a value
// WorkerPresenceTTL after it was written.
const (
	WorkerPresenceInterval = 5 * time.Second
	WorkerPresenceTTL      = 3 * WorkerPresenceInterval
)
