// Package aggregate decides a batch's fan-in. Batch is the state machine of
// one running batch: it takes events (a stored result, a step's result, an
// unpack request, a client's request, the passing of time) and returns the
// actions to run (publish work, checkpoint, publish progress, finish). It
// does no I/O and reads no clock, so every decision about a batch is made
// here, once, and tested without a server; the coordinator's driver feeds
// it events and runs its actions. The package also assembles a batch's
// per-item results in item order (results.go).
package aggregate

import (
	"time"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Config tunes the decisions that are the deployment's, not the batch's.
type Config struct {
	// CheckpointEvery is the most results counted between two checkpoints.
	CheckpointEvery int
	// ProgressInterval is the least time between two progress events.
	ProgressInterval time.Duration
	// AutoPack is the largest group auto packing makes; 1 turns it off.
	AutoPack int
}

// DefaultAutoPack is the usual Config.AutoPack.
const DefaultAutoPack = 16

// Auto packing. A message costs the server and the clients about the same
// whatever it carries, so for items of microseconds the messages, not the
// items, are the work. A batch that leaves items_per_message out starts
// with one item per message; once its first results show the items are
// fast, the rest goes out packed, recorded in the state before the first
// group is published so that a later driver publishes the same groups.
const (
	// autoPackSample is how many counted results the decision waits for.
	autoPackSample = 64
	// autoPackGroupMS is the work one packed message aims at: the group
	// size is this over the mean item time.
	autoPackGroupMS = 5.0
	// autoPackInFlight is the fewest messages a window keeps out once
	// packed, so that packing costs the workers little parallelism.
	autoPackInFlight = 16
	// autoPackMinLeft: fewer items left are not worth the checkpoint.
	autoPackMinLeft = 512
)

// Batch is one batch's state machine. Its zero value is not usable: make
// one with New from the batch's stored state.
type Batch struct {
	cfg    Config
	st     messages.BatchState
	reduce bool // the batch has a reduce step
	ended  bool // the final status is decided

	next      int // the next item to publish
	sinceSave int // results counted since the last checkpoint
	dirty     bool

	progressAt   time.Time
	progressDone int

	packDecided bool
	sampled     int
	sampledMS   float64

	out []Action
}

// New makes the state machine of a batch from its stored state; reduce
// tells whether the batch has a reduce step. The driver that raised the
// epoch to st.Epoch owns it.
func New(cfg Config, st messages.BatchState, reduce bool) *Batch {
	return &Batch{cfg: cfg, st: st, reduce: reduce, next: st.Published, progressDone: -1}
}

// State is the state to checkpoint.
func (b *Batch) State() messages.BatchState { return b.st }

// Ended reports whether the batch's final status is decided.
func (b *Batch) Ended() bool { return b.ended }

// Deadline is when the batch times out (zero: never).
func (b *Batch) Deadline() time.Time {
	if t := b.st.Options.Timeout.Std(); t > 0 {
		return b.st.CreatedAt.Add(t)
	}
	return time.Time{}
}

// Progress is the progress event of the batch now.
func (b *Batch) Progress(now time.Time) messages.Progress {
	p := b.st.Progress(now)
	if !b.st.Status.Final() {
		p.InFlight = max(b.next-p.Done, 0)
	}
	return p
}

// Step applies one event at time now and returns the actions to run, in
// order. The slice is reused by the next call.
func (b *Batch) Step(now time.Time, ev Event) []Action {
	b.out = b.out[:0]
	switch e := ev.(type) {
	case Started:
		b.start(now)
	case ResultStored:
		b.result(now, e)
	case StepStored:
		b.step(now, e)
	case SourceLoaded:
		b.sourceLoaded(now, e)
	case UnpackStored:
		b.unpack(now, e)
	case Requested:
		if !b.ended {
			b.st.CancelRequested = b.st.CancelRequested || e.Cancel
			b.st.Options = e.Options
			b.st.Paused = e.Paused
			b.decide(now)
		}
	case WorkStored:
		if e.Through > b.st.Published {
			b.st.Published = e.Through
			b.dirty = true
		}
	case ItemsUnreadable:
		if !b.ended {
			b.finish(now, messages.StatusFailed, "reading the items: "+e.Err)
		}
	case Tick:
		b.tick(now)
	case Decided:
		e.Outcome.Apply(&b.st)
		b.ended = true
	}
	return b.out
}

func (b *Batch) emit(a Action) { b.out = append(b.out, a) }

func (b *Batch) checkpoint() {
	b.emit(Action{Kind: Checkpoint})
	b.sinceSave, b.dirty = 0, false
}

func (b *Batch) done() int { return b.st.Succeeded + b.st.Failed }

func (b *Batch) inItems() bool {
	return b.st.Phase == messages.PhaseItems || b.st.Phase == ""
}

func (b *Batch) start(now time.Time) {
	if b.st.Status.Final() {
		// Decided before a crash: the aggregate may be out already.
		b.ended = true
		b.end(true)
		return
	}
	b.decide(now)
	if b.ended {
		return
	}
	switch b.st.Phase {
	case messages.PhaseSource:
		b.emit(Action{Kind: PublishStep, Step: messages.StepSource})
	case messages.PhaseReduce:
		b.emit(Action{Kind: PublishStep, Step: messages.StepReduce})
	}
}

// result counts an item's result in stream order. A result at or below
// the checkpoint's sequence was counted before (the driver reads a batch's
// results from the start): it is only kept for the aggregate.
func (b *Batch) result(now time.Time, e ResultStored) {
	st := &b.st
	inRange := e.Item >= 0 && e.Item < st.Total
	if e.Seq <= st.LastSeq {
		if inRange {
			b.emit(Action{Kind: Keep, Item: e.Item, Result: e.Result})
		}
		return
	}
	if b.ended {
		return // stored after the end: never counted
	}
	st.LastSeq = e.Seq
	b.sinceSave++
	b.dirty = true
	if inRange {
		if e.Result.OK {
			st.Succeeded++
		} else {
			st.Failed++
		}
		b.emit(Action{Kind: Keep, Item: e.Item, Result: e.Result, Counted: true})
		if !b.packDecided {
			b.sampled++
			b.sampledMS += max(e.Result.DurationMS, 0)
		}
	}
	b.decide(now)
	if !b.ended && b.sinceSave >= b.cfg.CheckpointEvery {
		b.checkpoint()
	}
}

// step handles a source or reduce step's result.
func (b *Batch) step(now time.Time, e StepStored) {
	st := &b.st
	if e.Seq <= st.LastSeq {
		if e.Step == messages.StepReduce && e.Result.OK {
			b.emit(Action{Kind: Keep, Step: e.Step, Result: e.Result})
		}
		return
	}
	if b.ended {
		return
	}
	st.LastSeq = e.Seq
	b.sinceSave++
	b.dirty = true
	switch {
	case e.Step == messages.StepSource && st.Phase == messages.PhaseSource:
		if !e.Result.OK {
			b.finish(now, messages.StatusFailed, "the source step failed: "+e.Result.Error)
			return
		}
		b.emit(Action{Kind: LoadSource, Result: e.Result})
	case e.Step == messages.StepReduce && st.Phase == messages.PhaseReduce:
		if !e.Result.OK {
			b.finish(now, messages.StatusFailed, "the reduce step failed: "+e.Result.Error)
			return
		}
		b.emit(Action{Kind: Keep, Step: e.Step, Result: e.Result})
		b.finish(now, messages.StatusCompleted, "")
	}
}

// sourceLoaded starts the fan-out on the items a source step gave.
func (b *Batch) sourceLoaded(now time.Time, e SourceLoaded) {
	st := &b.st
	if b.ended || st.Phase != messages.PhaseSource {
		return
	}
	if e.Err != "" {
		b.finish(now, messages.StatusFailed, "the source step's output: "+e.Err)
		return
	}
	st.Total, st.ItemsRef, st.Phase = e.Total, e.ItemsRef, messages.PhaseItems
	b.checkpoint() // the item count, before any item goes out
	b.decide(now)
}

// unpack handles a worker's request to publish the items of an auto-packed
// group on their own. The request is counted as read (LastSeq) here, and
// the Unpack action runs before any later checkpoint, so a checkpoint never
// covers a request whose items were not published.
func (b *Batch) unpack(now time.Time, e UnpackStored) {
	st := &b.st
	if e.Seq <= st.LastSeq || b.ended {
		return
	}
	st.LastSeq = e.Seq
	b.sinceSave++
	b.dirty = true
	if end, form := b.group(e.First); form == FormAutoPack {
		b.emit(Action{Kind: Unpack, From: e.First, To: end, Attempt: max(e.Attempt, 1)})
	}
	b.decide(now)
}

func (b *Batch) tick(now time.Time) {
	if b.ended {
		return
	}
	b.decide(now)
	if b.ended {
		return
	}
	if b.dirty {
		b.checkpoint()
	}
	if done := b.done(); done != b.progressDone && now.Sub(b.progressAt) >= b.cfg.ProgressInterval {
		b.progress(now)
	}
}

func (b *Batch) progress(now time.Time) {
	b.emit(Action{Kind: Progress})
	b.progressAt, b.progressDone = now, b.done()
}

// decide ends the batch when a rule says so, or else publishes work until
// the window is full, unless the batch is paused. The failure policy goes
// first: the last results can cross it.
func (b *Batch) decide(now time.Time) {
	if b.ended {
		return
	}
	st := &b.st
	failed := FailureExceeded(st)
	switch {
	case st.CancelRequested:
		b.finish(now, messages.StatusCanceled, "canceled by request")
	case !b.inItems():
		b.checkDeadline(now)
	case failed != "":
		b.finish(now, messages.StatusFailed, failed)
	case b.done() >= st.Total && b.reduce:
		st.Phase = messages.PhaseReduce
		b.checkpoint() // the phase, so that a later driver runs the step
		b.emit(Action{Kind: PublishStep, Step: messages.StepReduce})
	case b.done() >= st.Total:
		b.finish(now, messages.StatusCompleted, "")
	case b.checkDeadline(now):
	case st.Paused:
		// Nothing new goes out; what is out finishes and is counted.
	default:
		b.fill()
	}
}

// checkDeadline ends a batch whose timeout has passed, and says so.
func (b *Batch) checkDeadline(now time.Time) bool {
	if d := b.Deadline(); d.IsZero() || now.Before(d) {
		return false
	}
	b.finish(now, messages.StatusTimedOut, "the batch timeout of "+b.st.Options.Timeout.Std().String()+" passed")
	return true
}

// FailureExceeded reports why the batch's failure policy ends it as
// failed, or "" if it does not.
func FailureExceeded(st *messages.BatchState) string {
	o := st.Options
	switch {
	case st.Failed == 0:
		return ""
	case o.FailurePolicy == messages.FailureFast:
		return "an item failed and failure_policy is fail_fast"
	case o.ToleratedFailures != nil && st.Failed > *o.ToleratedFailures:
		return "more items failed than tolerated_failures allows"
	case o.ToleratedFailurePercent != nil && float64(st.Failed)*100/float64(st.Total) > *o.ToleratedFailurePercent:
		return "the failed percentage exceeded tolerated_failure_percent"
	}
	return ""
}

// finish decides the final status and ends the batch.
func (b *Batch) finish(now time.Time, status messages.Status, reason string) {
	st := &b.st
	st.Status, st.Reason, st.FinishedAt = status, reason, now.UTC()
	if status == messages.StatusCompleted {
		// Every item has a result, so every item's work was stored.
		st.Published = st.Total
	}
	b.ended = true
	b.end(false)
}

// end is the order of a batch's last steps, each safe to repeat after a
// crash: remove queued work if the batch did not complete; publish the
// aggregate (once: the done stream keeps one per batch, and one already
// out decides the outcome); save the final state; a last progress event;
// let the batch go. A batch found final when loaded (resumed) may have
// its aggregate out already: look before building it.
func (b *Batch) end(resumed bool) {
	if b.st.Status != messages.StatusCompleted {
		b.emit(Action{Kind: Purge})
	}
	b.emit(Action{Kind: PublishAggregate, CheckFirst: resumed})
	b.emit(Action{Kind: Checkpoint})
	b.emit(Action{Kind: Progress})
	b.emit(Action{Kind: Release})
}

// Window is the most items of the batch published and not yet counted:
// max_in_flight, or when the request left it out DefaultMaxInFlight, and
// once the batch is auto packed AutoWindowGroups groups if that is more
// (auto-packed items are fast: that many groups queued ahead of another
// batch's items delay it by milliseconds, and 256 items, only 16 groups,
// were too few to keep two cores busy).
func Window(st *messages.BatchState) int {
	switch {
	case st.Options.MaxInFlight > 0:
		return st.Options.MaxInFlight
	case st.PackSize > 1:
		return max(messages.DefaultMaxInFlight, messages.AutoWindowGroups*st.PackSize)
	default:
		return messages.DefaultMaxInFlight
	}
}

// fill publishes work until the window is full. A group may overshoot
// the window by its size less one.
func (b *Batch) fill() {
	b.decidePacking()
	for b.next < b.st.Total && b.next-b.done() < Window(&b.st) {
		end, form := b.group(b.next)
		b.emit(Action{Kind: PublishWork, From: b.next, To: end, Form: form})
		b.next = end
	}
}

// group returns where the work message that starts at item ends
// (exclusive) and its form. Groups are a function of the state alone, so
// a group published again after a crash is the same message (same
// Nats-Msg-Id) and is dropped as a duplicate.
func (b *Batch) group(item int) (end int, form WorkForm) {
	st := &b.st
	if n := st.Options.ItemsPerMessage; n > 1 {
		return min((item/n+1)*n, st.Total), FormPlain
	}
	if st.PackSize > 1 && item >= st.PackFrom {
		if (item-st.PackFrom)%st.PackSize != 0 {
			// Inside a group that went out item by item.
			return item + 1, FormUnpacked
		}
		if end := min(item+st.PackSize, st.Total); end-item > 1 {
			return end, FormAutoPack
		}
	}
	return min(item+1, st.Total), FormPlain
}

// decidePacking decides once, when enough results are in, whether the
// rest of the batch goes out packed; the decision is checkpointed before
// the first group is published.
func (b *Batch) decidePacking() {
	if b.packDecided || b.sampled < autoPackSample {
		return
	}
	b.packDecided = true
	st := &b.st
	switch {
	case st.PackSize > 0, st.Options.ItemsPerMessage != 0, b.cfg.AutoPack < 2:
		return // packed already, or the batch or the deployment decides
	case st.Epoch != 1:
		// A driver that took the batch over cannot know how far its
		// predecessor published one item per message past the checkpoint:
		// a group starting at such an item would share its message id and
		// be dropped as a duplicate, with the rest of the group.
		return
	case st.Options.MaxAttempts < 2:
		// Unpacking a group costs its items an attempt: with one attempt
		// an item that crashes its worker would fail the others.
		return
	case st.Total-b.next < autoPackMinLeft:
		return
	}
	n := min(b.cfg.AutoPack, Window(st)/autoPackInFlight)
	if mean := b.sampledMS / float64(b.sampled); mean > 0 {
		n = min(n, int(autoPackGroupMS/mean))
	}
	if n < 2 {
		return
	}
	st.PackFrom, st.PackSize = b.next, n
	b.checkpoint()
}
