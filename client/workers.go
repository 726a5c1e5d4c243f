package client

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/fanoutdev/fanout/internal/messages"
)

// WorkerPresence is a live worker as its last heartbeat describes it (the
// same type as worker.Presence).
type WorkerPresence = messages.WorkerPresence

// Workers returns the live workers, sorted by name: those whose heartbeat
// in the workers bucket (FANOUT_WORKERS) has not expired. A worker writes
// its heartbeat every 5 s (worker.PresenceInterval); one that crashed is
// listed until its last heartbeat expires, 15 s (worker.PresenceTTL) after
// it was written.
func (c *Client) Workers(ctx context.Context) ([]WorkerPresence, error) {
	var out []WorkerPresence
	err := c.eachValue(ctx, c.names.WorkersBucket(), "", false, func(v []byte) {
		var p WorkerPresence
		if json.Unmarshal(v, &p) == nil && p.Name != "" {
			out = append(out, p)
		}
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b WorkerPresence) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out, nil
}
