package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/topology"
)

// List returns the most recent batches, newest first: at most limit of
// them (all when limit <= 0), as the progress view of their state
// (Options included). Batches are kept as long as the deployment's
// retention (7 days by default).
//
// List reads the batch-state bucket (FANOUT_BATCHES) directly, not through
// a coordinator, so the connection's user must be allowed to read it: the
// least-privilege client role of docs/security.md is not (it sees batches
// only through the coordinators' status requests); the coordinator's role
// or an administrator's is. Memory is bounded by limit, not by the number
// of batches. A batch whose aggregate is out is listed with its outcome
// even if its state does not say so yet (the coordinator saves the final
// state just after publishing the aggregate).
func (c *Client) List(ctx context.Context, limit int) ([]Progress, error) {
	var states []*messages.BatchState
	trim := func() {
		states = latestOf(states)
		// Stable: a batch's two states keep their order for the next trim.
		slices.SortStableFunc(states, compareNewestFirst)
		if limit > 0 && len(states) > limit {
			states = states[:limit]
		}
	}
	err := c.eachValue(ctx, c.names.BatchesBucket(), " (listing batches needs read access to it)", true, func(v []byte) {
		var st messages.BatchState
		if json.Unmarshal(v, &st) != nil || st.BatchID == "" || st.Check(st.BatchID) != nil {
			return // not a batch's state
		}
		states = append(states, &st)
		if limit > 0 && len(states) >= 2*limit+64 {
			trim()
		}
	})
	if err != nil {
		return nil, err
	}
	trim()
	now := time.Now()
	out := make([]Progress, 0, len(states))
	for _, st := range states {
		if err := c.applyOutcome(ctx, st); err != nil {
			return nil, err
		}
		out = append(out, st.ProgressWithOptions(now))
	}
	return out, nil
}

// latestOf keeps the last of each batch's states (a batch written again
// while listed comes twice, the newer after the older).
func latestOf(states []*messages.BatchState) []*messages.BatchState {
	at := make(map[string]int, len(states))
	out := states[:0]
	for _, st := range states {
		if i, ok := at[st.BatchID]; ok {
			out[i] = st
			continue
		}
		at[st.BatchID] = len(out)
		out = append(out, st)
	}
	return out
}

// eachValue calls fn with every current value of a KV bucket (none if the
// bucket does not exist yet), reading them with an ordered pull consumer
// on the last message of each key; a value written while it reads may come
// twice. openHint is added to the error of opening the bucket. (Pulled
// rather than watched: a watch is a push consumer, whose delivery subject
// would have to be exported to a client in another account, see
// docs/security.md.)
//
// The end of the current values (no message pending) can come early while
// keys are written (the pending count is not monotonic). With everyKey, for
// a bucket of one value per key that deletes none, the read goes on until
// it has seen as many keys as the bucket holds.
func (c *Client) eachValue(ctx context.Context, bucket, openHint string, everyKey bool, fn func([]byte)) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	stream, err := c.js.Stream(ctx, "KV_"+bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // nothing has written here yet
	}
	if err != nil {
		return fmt.Errorf("open bucket %s%s: %w", bucket, openHint, err)
	}
	keys := "$KV." + bucket + "."
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{keys + ">"},
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		InactiveThreshold: topology.ReaderIdle,
	})
	if err != nil {
		return fmt.Errorf("read bucket %s: %w", bucket, err)
	}
	seen := map[string]struct{}{}
	ended := false
	for {
		// Until the end of the current values, take what is there; after
		// it, a key still missing is waited for at most a second (a
		// deleted one would never come).
		var batch jetstream.MessageBatch
		if ended {
			batch, err = cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		} else {
			batch, err = cons.FetchNoWait(256)
		}
		if err != nil {
			return fmt.Errorf("read bucket %s: %w", bucket, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if meta, err := m.Metadata(); err == nil && meta.NumPending == 0 {
				ended = true
			}
			switch m.Headers().Get(kvOperation) {
			case "DEL", "PURGE":
				continue
			}
			seen[strings.TrimPrefix(m.Subject(), keys)] = struct{}{}
			fn(m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read bucket %s: %w", bucket, err)
		}
		if got == 0 {
			if ended {
				return nil // waited a second for the missing keys
			}
			ended = true
		}
		if !ended {
			continue
		}
		if !everyKey {
			return nil
		}
		info, err := stream.Info(ctx)
		if err != nil {
			return fmt.Errorf("read bucket %s: %w", bucket, err)
		}
		if uint64(len(seen)) >= info.State.Msgs {
			return nil
		}
	}
}

// kvOperation is the header of a KV bucket's delete and purge markers.
const kvOperation = "KV-Operation"

// withTimeout bounds ctx by the request timeout when it has no deadline.
func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}
