// Package aggregate holds a batch's fan-in state: the counters and
// checkpoint kept in the FANOUT_BATCHES bucket, the rules that apply a
// result to them, and the assembly of the final aggregate.
package aggregate

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Errors returned by Store.
var (
	// ErrNotFound: no state for that batch id.
	ErrNotFound = errors.New("batch not found")
	// ErrExists: Create found a state already there.
	ErrExists = errors.New("batch already exists")
	// ErrConflict: Update's revision was stale; somebody else wrote since.
	ErrConflict = errors.New("batch state changed concurrently")
)

// Store reads and writes batch states with compare-and-set.
type Store struct {
	kv jetstream.KeyValue
}

// NewStore wraps the batches bucket.
func NewStore(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Get returns a batch's state and its revision.
func (s *Store) Get(ctx context.Context, batch string) (*messages.BatchState, uint64, error) {
	e, err := s.kv.Get(ctx, batch)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get state of %s: %w", batch, err)
	}
	var st messages.BatchState
	if err := messages.Decode(e.Value(), &st); err != nil {
		return nil, 0, fmt.Errorf("decode state of %s: %w", batch, err)
	}
	return &st, e.Revision(), nil
}

// Create stores a new state; ErrExists if the batch has one.
func (s *Store) Create(ctx context.Context, st *messages.BatchState) (uint64, error) {
	b, err := messages.Encode(st)
	if err != nil {
		return 0, err
	}
	rev, err := s.kv.Create(ctx, st.BatchID, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrExists
	}
	if err != nil {
		return 0, fmt.Errorf("create state of %s: %w", st.BatchID, err)
	}
	return rev, nil
}

// Update replaces the state at revision rev; ErrConflict if it moved on.
func (s *Store) Update(ctx context.Context, st *messages.BatchState, rev uint64) (uint64, error) {
	b, err := messages.Encode(st)
	if err != nil {
		return 0, err
	}
	nrev, err := s.kv.Update(ctx, st.BatchID, b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("update state of %s: %w", st.BatchID, err)
	}
	return nrev, nil
}

// Modify applies fn to the current state and writes it back, retrying on
// conflicts. fn may return an error to abort without writing.
func (s *Store) Modify(ctx context.Context, batch string, fn func(*messages.BatchState) error) (*messages.BatchState, error) {
	for {
		st, rev, err := s.Get(ctx, batch)
		if err != nil {
			return nil, err
		}
		if err := fn(st); err != nil {
			return st, err
		}
		if _, err := s.Update(ctx, st, rev); errors.Is(err, ErrConflict) {
			continue
		} else if err != nil {
			return nil, err
		}
		return st, nil
	}
}
