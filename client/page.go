package client

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
)

// ListCursor is a position in the newest-first order of batches: a batch's
// creation time and id. Pass the last batch of a page as Before to get the
// next, older page; the first batch as After to get the previous one.
type ListCursor struct {
	CreatedAt time.Time
	BatchID   string
}

// String encodes the cursor for a URL or a command line; ParseListCursor
// reads it back.
func (c ListCursor) String() string {
	return c.CreatedAt.UTC().Format(time.RFC3339Nano) + "~" + c.BatchID
}

// ParseListCursor reads a cursor written by ListCursor.String.
func ParseListCursor(s string) (ListCursor, error) {
	at, id, ok := strings.Cut(s, "~")
	t, err := time.Parse(time.RFC3339Nano, at)
	if !ok || err != nil || !messages.ValidToken(id) {
		return ListCursor{}, messages.Errorf(messages.CodeInvalidRequest, "cursor %q: not a position in the batch list (a time~batch id, as a page's links give)", s)
	}
	return ListCursor{CreatedAt: t, BatchID: id}, nil
}

// newer reports whether a batch created at t with id sorts before the
// cursor in newest-first order.
func (c ListCursor) newer(t time.Time, id string) bool {
	if cmp := t.Compare(c.CreatedAt); cmp != 0 {
		return cmp > 0
	}
	return id < c.BatchID
}

// compareNewestFirst orders batch states newest first, then by id.
func compareNewestFirst(a, b *messages.BatchState) int {
	if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.BatchID, b.BatchID)
}

// is reports whether the cursor is at st.
func (c ListCursor) is(st *messages.BatchState) bool {
	return c.BatchID == st.BatchID && c.CreatedAt.Equal(st.CreatedAt)
}

// ListQuery selects a page of batches for ListPage.
type ListQuery struct {
	// Limit is the page size (default 50).
	Limit int
	// Before, if set, lists batches older than it; After, if set, those
	// newer than it (the page just before, in newest-first order). Not both.
	Before, After *ListCursor
	// Status and Activity, if not empty, keep only batches with that
	// status or activity.
	Status   Status
	Activity string
}

// BatchPage is a page of ListPage.
type BatchPage struct {
	// Batches newest first.
	Batches []Progress
	// Matched is how many stored batches match the query's filters, on
	// every page.
	Matched int
	// Newer and Older report whether batches matching the filters come
	// before the page's first batch and after its last.
	Newer, Older bool
}

// ListPage returns one page of the batches, newest first, filtered by
// status and activity, with cursors to move through them.
//
// Like List, it reads the batch-state bucket directly (see List for the
// permission it needs). It reads every stored state once, so its time
// grows with the number of batches kept, but it holds only a page of
// states (and the ids of the batches it has read).
func (c *Client) ListPage(ctx context.Context, q ListQuery) (*BatchPage, error) {
	if q.Before != nil && q.After != nil {
		return nil, messages.Errorf(messages.CodeInvalidRequest, "list: give a page's Before or After cursor, not both")
	}
	if q.Limit <= 0 {
		q.Limit = 50
	}
	if q.Status != "" && q.Status != StatusRunning && !q.Status.Final() {
		return nil, messages.Errorf(messages.CodeInvalidRequest, "list: status %q: use running, completed, failed, canceled or timed_out", q.Status)
	}
	// Keep the limit+1 states closest to the cursor on its side: the
	// newest ones before (or without) a Before cursor, the oldest ones
	// after an After cursor. The extra one tells whether there are more.
	// Only the fields that select and order a batch are decoded while
	// reading (a whole state costs several times more); the page's states
	// are decoded in full at the end.
	type listed struct {
		BatchID   string          `json:"batch_id"`
		Activity  string          `json:"activity"`
		Status    messages.Status `json:"status"`
		CreatedAt time.Time       `json:"created_at"`
		raw       []byte
	}
	order := func(a, b *listed) int {
		n := compareNewestFirst(&messages.BatchState{BatchID: a.BatchID, CreatedAt: a.CreatedAt}, &messages.BatchState{BatchID: b.BatchID, CreatedAt: b.CreatedAt})
		if q.After != nil {
			return -n
		}
		return n
	}
	var (
		kept    []*listed
		matches = map[string]bool{} // batch id: matches the filters
		beyond  = map[string]bool{} // batch id: matches, on the other side of the cursor
	)
	err := c.eachValue(ctx, c.names.BatchesBucket(), " (listing batches needs read access to it)", true, func(v []byte) {
		var st listed
		if json.Unmarshal(v, &st) != nil || !messages.ValidToken(st.BatchID) {
			return // not a batch's state
		}
		// A batch written while listed comes twice: its last state counts.
		kept = slices.DeleteFunc(kept, func(k *listed) bool { return k.BatchID == st.BatchID })
		delete(beyond, st.BatchID)
		matches[st.BatchID] = (q.Status == "" || st.Status == q.Status) && (q.Activity == "" || st.Activity == q.Activity)
		if !matches[st.BatchID] {
			return
		}
		at := &messages.BatchState{BatchID: st.BatchID, CreatedAt: st.CreatedAt}
		// The cursor's own batch counts as on the other side of it.
		switch {
		case q.Before != nil && (q.Before.is(at) || q.Before.newer(st.CreatedAt, st.BatchID)),
			q.After != nil && (q.After.is(at) || !q.After.newer(st.CreatedAt, st.BatchID)):
			beyond[st.BatchID] = true
			return
		}
		i, _ := slices.BinarySearchFunc(kept, &st, order)
		if i <= q.Limit {
			st.raw = v
			kept = slices.Insert(kept, i, &st)
			kept = kept[:min(len(kept), q.Limit+1)]
		}
	})
	if err != nil {
		return nil, err
	}
	matched := 0
	for _, m := range matches {
		if m {
			matched++
		}
	}
	page := &BatchPage{Matched: matched}
	more := len(kept) > q.Limit
	if more {
		kept = kept[:q.Limit]
	}
	if q.After != nil {
		slices.Reverse(kept)
		page.Newer, page.Older = more, len(beyond) > 0
	} else {
		page.Newer, page.Older = len(beyond) > 0, more
	}
	now := time.Now()
	for _, l := range kept {
		var st messages.BatchState
		if json.Unmarshal(l.raw, &st) != nil || st.Check(l.BatchID) != nil {
			continue // not a batch's state after all: left out of the page
		}
		if err := c.applyOutcome(ctx, &st); err != nil {
			return nil, err
		}
		page.Batches = append(page.Batches, st.ProgressWithOptions(now))
	}
	return page, nil
}

// applyOutcome brings a running state to its batch's outcome when the
// aggregate is out already (the coordinator saves the final state just
// after publishing the aggregate).
func (c *Client) applyOutcome(ctx context.Context, st *messages.BatchState) error {
	if st.Status.Final() {
		return nil
	}
	agg, err := c.storedAggregate(ctx, st.BatchID)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if agg != nil {
		o := aggregate.OutcomeOf(agg)
		o.Apply(st)
	}
	return nil
}
