package messages

import (
	"errors"
	"fmt"
)

// The checks below decide whether a value read back from fanout's streams
// and bucket is one that fanout wrote for that batch. Anybody allowed to
// publish there (or a JetStream API reply aimed there) can store anything:
// a value that fails its check is not taken.

// Known reports whether s is one of the statuses.
func (s Status) Known() bool { return s == StatusRunning || s.Final() }

// Check reports why st is not the state of batch, or nil.
func (st *BatchState) Check(batch string) error {
	switch {
	case st.BatchID != batch:
		return fmt.Errorf("state names batch %q, not %q", st.BatchID, batch)
	case !st.Status.Known():
		return fmt.Errorf("state has status %q", st.Status)
	case st.TokenSeq == 0:
		return errors.New("state names no token")
	case st.Total < 0 || st.Succeeded < 0 || st.Failed < 0 || st.Published < 0 || st.Succeeded+st.Failed > st.Total:
		return fmt.Errorf("state counts %d succeeded and %d failed of %d", st.Succeeded, st.Failed, st.Total)
	}
	return nil
}

// CheckResult reports why r, stored on an item's (step empty) or a step's
// result subject of batch, is not that item's or step's result, or nil.
func (r *ResultMessage) CheckResult(batch string, item int, step Step) error {
	switch {
	case r.BatchID != batch:
		return fmt.Errorf("result names batch %q, not %q", r.BatchID, batch)
	case r.Step != step:
		return fmt.Errorf("result names step %q, not %q", r.Step, step)
	case step == "" && r.Item != item:
		return fmt.Errorf("result names item %d, not %d", r.Item, item)
	case r.Unpack != nil:
		return errors.New("an unpack request on a result subject")
	}
	return nil
}

// CheckUnpack reports why r, stored on the unpack subject of the group of
// batch that starts at first, is not its unpack request, or nil.
func (r *ResultMessage) CheckUnpack(batch string, first int) error {
	switch {
	case r.BatchID != batch:
		return fmt.Errorf("unpack request names batch %q, not %q", r.BatchID, batch)
	case r.Item != first:
		return fmt.Errorf("unpack request names item %d, not %d", r.Item, first)
	case r.Unpack == nil || r.Unpack.Attempt < 1:
		return errors.New("unpack request without an attempt")
	}
	return nil
}

// Check reports why a is not a final aggregate of batch, or nil.
func (a *Aggregate) Check(batch string) error {
	if err := CheckOutcome(batch, a.BatchID, a.Status, a.Total, a.Succeeded, a.Failed, a.NotRun); err != nil {
		return err
	}
	switch {
	case a.ResultsRef != nil && a.Results != nil:
		return errors.New("aggregate has both results and results_ref")
	case a.ResultsRef == nil && len(a.Results) != a.Total:
		return fmt.Errorf("aggregate holds %d results of %d", len(a.Results), a.Total)
	}
	for i, r := range a.Results {
		if r.Item != i {
			return fmt.Errorf("aggregate holds item %d's result at %d", r.Item, i)
		}
	}
	return nil
}

// CheckOutcome reports why the fields of an aggregate that decide a
// batch's outcome are not those of a final aggregate of batch, or nil.
func CheckOutcome(batch, id string, status Status, total, succeeded, failed, notRun int) error {
	switch {
	case id != batch:
		return fmt.Errorf("aggregate names batch %q, not %q", id, batch)
	case !status.Final():
		return fmt.Errorf("aggregate has status %q", status)
	case total < 0 || succeeded < 0 || failed < 0 || notRun < 0 || succeeded+failed+notRun != total:
		return fmt.Errorf("aggregate counts %d succeeded, %d failed and %d not run of %d", succeeded, failed, notRun, total)
	}
	return nil
}
