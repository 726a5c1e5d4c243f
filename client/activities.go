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
)

// ActivityQueue is the work queued for one activity: its durable consumer
// on the work stream (FANOUT_WORK), which every worker of the activity
// shares. Counts are of work messages; an auto-packed message carries
// several items.
type ActivityQueue struct {
	Activity string
	// Queued work messages no worker has taken yet.
	Queued uint64
	// Running: taken by a worker and not acknowledged yet.
	Running int
	// Redelivered: running messages delivered more than once.
	Redelivered int
	// WaitingPulls: workers' pull requests waiting for work.
	WaitingPulls int
	// LastDelivered is when a worker last took a message (zero: never).
	LastDelivered time.Time
}

// Unserved reports whether the activity has work that no worker is there
// to take: work queued or running, no live worker serving the activity
// (live: its heartbeat in FANOUT_WORKERS is current and it is not
// draining), and no pull request waiting (a worker that writes no
// heartbeat, in another language say, still pulls).
func (q ActivityQueue) Unserved(live int) bool {
	return live == 0 && q.WaitingPulls == 0 && q.Queued+uint64(q.Running) > 0
}

// LiveWorkers counts the live workers among ws that serve activity and
// are not draining.
func LiveWorkers(ws []WorkerPresence, activity string) int {
	n := 0
	for _, w := range ws {
		if slices.Contains(w.Activities, activity) && !w.Draining {
			n++
		}
	}
	return n
}

// Serving returns the work queued for one activity and how many live
// workers serve it; see ActivityQueue.Unserved. The connection's user
// needs consumer info on the work stream and reads of FANOUT_WORKERS.
// An activity no worker ever registered has no queue: an *Error with
// CodeUnknownActivity.
func (c *Client) Serving(ctx context.Context, activity string) (q ActivityQueue, live int, err error) {
	if !messages.ValidToken(activity) {
		return q, 0, messages.Errorf(messages.CodeInvalidRequest, "activity: %q is not an activity name", activity)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	info, err := c.js.Consumer(ctx, c.names.WorkStream(), c.names.WorkConsumer(activity))
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return q, 0, messages.Errorf(messages.CodeUnknownActivity, "activity %q: no worker has registered it", activity)
	}
	if err != nil {
		return q, 0, fmt.Errorf("activity %s: %w", activity, err)
	}
	ci := info.CachedInfo()
	q = ActivityQueue{Activity: activity, Queued: ci.NumPending, Running: ci.NumAckPending,
		Redelivered: ci.NumRedelivered, WaitingPulls: ci.NumWaiting}
	if ci.Delivered.Last != nil {
		q.LastDelivered = *ci.Delivered.Last
	}
	ws, err := c.Workers(ctx)
	if err != nil {
		return q, 0, err
	}
	return q, LiveWorkers(ws, activity), nil
}

// Activities returns the work queued per activity, sorted by activity:
// one entry per activity any worker has ever served on this deployment.
// It reads consumer information of the work stream, so the connection's
// user needs the JetStream API's consumer list and info on it.
func (c *Client) Activities(ctx context.Context) ([]ActivityQueue, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	stream, err := c.stream(ctx, c.names.WorkStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil // no worker or coordinator has started yet
	}
	if err != nil {
		return nil, fmt.Errorf("activities: %w", err)
	}
	var out []ActivityQueue
	list := stream.ListConsumers(ctx)
	for info := range list.Info() {
		activity, ok := strings.CutPrefix(info.Name, c.names.WorkConsumer(""))
		if !ok || !messages.ValidToken(activity) {
			continue
		}
		q := ActivityQueue{
			Activity: activity, Queued: info.NumPending, Running: info.NumAckPending,
			Redelivered: info.NumRedelivered, WaitingPulls: info.NumWaiting,
		}
		if info.Delivered.Last != nil {
			q.LastDelivered = *info.Delivered.Last
		}
		out = append(out, q)
	}
	if err := list.Err(); err != nil {
		return nil, fmt.Errorf("activities: %w", err)
	}
	slices.SortFunc(out, func(a, b ActivityQueue) int { return strings.Compare(a.Activity, b.Activity) })
	return out, nil
}

// SubscribeProgress calls fn with each progress event of a running batch
// (throttled by the coordinator; none once it has ended) until the
// returned function is called. Events are not stored: what was published
// before the subscription is not delivered; Status gives the current state.
func (c *Client) SubscribeProgress(batchID string, fn func(Progress)) (stop func(), err error) {
	if !messages.ValidToken(batchID) {
		return nil, messages.Errorf(messages.CodeInvalidRequest, "batch_id: %q is not a batch id", batchID)
	}
	sub, err := c.nc.Subscribe(c.names.Progress(batchID), func(m *nats.Msg) {
		var p Progress
		if json.Unmarshal(m.Data, &p) == nil && p.BatchID == batchID {
			fn(p)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("progress of %s: %w", batchID, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
