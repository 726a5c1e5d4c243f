package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
)

// Errors of the state store.
var (
	// errNotFound: no state for that batch id.
	errNotFound = errors.New("batch not found")
	// errExists: create found a state already there.
	errExists = errors.New("batch already exists")
	// errConflict: the revision was stale; somebody else wrote since.
	errConflict = errors.New("batch state changed concurrently")
)

// stateStore reads and writes batch states (FANOUT_BATCHES) with
// compare-and-set.
type stateStore struct {
	kv     jetstream.KeyValue
	ignore func(kind, batch string, err error)
}

// get returns a batch's state and its revision. A stored value that is not
// the batch's state (it does not decode, or fails its check) is
// errNotFound with the value's revision, so that the next write replaces
// it: with the state its driver holds, or the state made from its token.
func (s stateStore) get(ctx context.Context, batch string) (*messages.BatchState, uint64, error) {
	e, err := s.kv.Get(ctx, batch)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, errNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get state of %s: %w", batch, err)
	}
	var st messages.BatchState
	if err = messages.Decode(e.Value(), &st); err == nil {
		err = st.Check(batch)
	}
	if err != nil {
		s.ignore("state", batch, err)
		return nil, e.Revision(), errNotFound
	}
	return &st, e.Revision(), nil
}

// create stores a new state; errExists if the batch has one.
func (s stateStore) create(ctx context.Context, st *messages.BatchState) (uint64, error) {
	b, err := messages.Encode(st)
	if err != nil {
		return 0, err
	}
	rev, err := s.kv.Create(ctx, st.BatchID, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, errExists
	}
	if err != nil {
		return 0, fmt.Errorf("create state of %s: %w", st.BatchID, err)
	}
	return rev, nil
}

// update replaces the state at revision rev; errConflict if it moved on.
func (s stateStore) update(ctx context.Context, st *messages.BatchState, rev uint64) (uint64, error) {
	b, err := messages.Encode(st)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	if rev == 0 {
		// Create, unlike an update of revision 0, also writes over a
		// deleted value.
		nrev, err = s.kv.Create(ctx, st.BatchID, b)
	} else {
		nrev, err = s.kv.Update(ctx, st.BatchID, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, errConflict
	}
	if err != nil {
		return 0, fmt.Errorf("update state of %s: %w", st.BatchID, err)
	}
	return nrev, nil
}

// view returns a batch's state as every reader must see it: the state
// made from its token until its first driver has saved one (revision 0:
// an update creates it), settled.
func (c *Coordinator) view(ctx context.Context, batch string) (*messages.BatchState, uint64, error) {
	st, rev, err := c.state.get(ctx, batch)
	if errors.Is(err, errNotFound) { // rev: of a value that is no state
		var tok *token
		if tok, err = c.readToken(ctx, batch); errors.Is(err, jetstream.ErrMsgNotFound) {
			err = errNotFound
		} else if err == nil {
			st = tok.state()
		}
	}
	if err == nil {
		err = c.settle(ctx, st)
	}
	if err != nil {
		return nil, 0, err
	}
	return st, rev, nil
}

// settle brings a state that is not final yet to the outcome of the
// batch's aggregate if that is out: the aggregate is published before the
// final state is saved, and it decides.
func (c *Coordinator) settle(ctx context.Context, st *messages.BatchState) error {
	if st.Status.Final() {
		return nil
	}
	out, err := c.outcome(ctx, st.BatchID)
	if out != nil {
		out.Apply(st)
	}
	return err
}

// outcome returns the outcome of the batch's aggregate if it is out, or
// nil.
func (c *Coordinator) outcome(ctx context.Context, batch string) (*aggregate.Outcome, error) {
	out, _, err := c.storedOutcome(ctx, batch)
	return out, err
}

// storedOutcome returns the outcome of the batch's aggregate if it is
// out; if what the done stream holds for the batch is not its aggregate,
// nil and that message's sequence (the driver removes it).
func (c *Coordinator) storedOutcome(ctx context.Context, batch string) (*aggregate.Outcome, uint64, error) {
	m, err := c.stores.Done.GetLastMsgForSubject(ctx, c.names.Done(batch))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	} else if err != nil {
		return nil, 0, fmt.Errorf("aggregate of %s: %w", batch, err)
	}
	var out aggregate.Outcome
	if err = messages.Decode(m.Data, &out); err == nil {
		err = out.Check(batch)
	}
	if err == nil && m.Header.Get(messages.LastSeqHeader) != "" {
		out.LastSeq, err = strconv.ParseUint(m.Header.Get(messages.LastSeqHeader), 10, 64)
	}
	if err != nil {
		c.ignore("aggregate", batch, err)
		return nil, m.Sequence, nil
	}
	return &out, 0, nil
}

// ignore logs and counts a value read back that is not fanout's own.
func (c *Coordinator) ignore(kind, batch string, err error) {
	c.log.Warn().Str("kind", kind).Str("batch_id", batch).Err(err).Msg("ignoring a stored value that is not fanout's")
	c.cfg.Metrics.Ignored(kind, 1)
}

// purge removes a stream's messages on subjects that match filter and
// returns how many there were (which nats.go's Purge does not tell).
func (c *Coordinator) purge(ctx context.Context, stream, filter string) (uint64, error) {
	req, err := json.Marshal(jetstream.StreamPurgeRequest{Subject: filter})
	if err != nil {
		return 0, err
	}
	m, err := c.nc.RequestWithContext(ctx, jetstream.DefaultAPIPrefix+"STREAM.PURGE."+stream, req)
	if err != nil {
		return 0, fmt.Errorf("purge %s of %s: %w", stream, filter, err)
	}
	var resp struct {
		Purged uint64              `json:"purged"`
		Error  *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return 0, fmt.Errorf("purge %s of %s: %w", stream, filter, err)
	}
	if resp.Error != nil {
		return 0, fmt.Errorf("purge %s of %s: %w", stream, filter, resp.Error)
	}
	return resp.Purged, nil
}
