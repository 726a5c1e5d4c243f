package aggregate

import (
	"time"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Apply counts one result read from the results stream at sequence seq.
// Results must be applied in stream order: LastSeq then says exactly which
// results the counts include. It returns false for a result that cannot
// belong to the batch (an item index out of range), which is skipped but
// still advances LastSeq.
func Apply(st *messages.BatchState, seq uint64, item int, ok bool) bool {
	if seq <= st.LastSeq {
		// Already counted: a replay after resuming from a checkpoint.
		return false
	}
	st.LastSeq = seq
	if item < 0 || item >= st.Total {
		return false
	}
	if ok {
		st.Succeeded++
	} else {
		st.Failed++
	}
	return true
}

// Done reports whether every item has a result.
func Done(st *messages.BatchState) bool { return st.Succeeded+st.Failed >= st.Total }

// FailureExceeded reports whether the batch's failure policy ends it as
// failed, and why.
func FailureExceeded(st *messages.BatchState) (bool, string) {
	o := st.Options
	if st.Failed == 0 {
		return false, ""
	}
	if o.FailurePolicy == messages.FailureFast {
		return true, "an item failed and failure_policy is fail_fast"
	}
	if o.ToleratedFailures != nil && st.Failed > *o.ToleratedFailures {
		return true, "more items failed than tolerated_failures allows"
	}
	if p := o.ToleratedFailurePercent; p != nil && float64(st.Failed)*100/float64(st.Total) > *p {
		return true, "the failed percentage exceeded tolerated_failure_percent"
	}
	return false, ""
}

// Outcome is what a published aggregate decided: a batch's aggregate is
// published before its final state is saved, so the aggregate, once out,
// is the outcome, and a state that does not say so yet is brought to it.
type Outcome struct {
	Status     messages.Status `json:"status"`
	Reason     string          `json:"reason,omitempty"`
	Succeeded  int             `json:"succeeded"`
	Failed     int             `json:"failed"`
	FinishedAt time.Time       `json:"finished_at"`
}

// Apply makes st agree with the outcome.
func (o *Outcome) Apply(st *messages.BatchState) {
	st.Status, st.Reason = o.Status, o.Reason
	st.Succeeded, st.Failed = o.Succeeded, o.Failed
	st.FinishedAt = o.FinishedAt
}
