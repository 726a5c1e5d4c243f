package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/observe"
)

// JetStreamStats reads what the operations metrics show of JetStream
// (observe.NewJetStreamCollector): each stream's use against its limits,
// the account's, and per activity the work stored, the pull requests
// waiting and the live workers.
func (c *Coordinator) JetStreamStats(ctx context.Context) (*observe.JetStreamStats, error) {
	if !c.started.Load() {
		return nil, errors.New("not started")
	}
	out := &observe.JetStreamStats{}
	streams := []jetstream.Stream{c.stores.Work, c.stores.Results, c.stores.Done, c.stores.Control}
	names := []string{"KV_" + c.names.BatchesBucket(), "OBJ_" + c.names.BlobBucket()}
	for _, n := range names {
		s, err := c.js.Stream(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", n, err)
		}
		streams = append(streams, s)
	}
	perActivity := map[string]*observe.ActivityStats{}
	activity := func(a string) *observe.ActivityStats {
		if perActivity[a] == nil {
			perActivity[a] = &observe.ActivityStats{Activity: a}
		}
		return perActivity[a]
	}
	workPrefix := c.names.Prefix + ".work."
	for i, s := range streams {
		var opts []jetstream.StreamInfoOpt
		if i == 0 { // the work stream: its messages by subject, for the activities
			opts = append(opts, jetstream.WithSubjectFilter(c.names.WorkAll()))
		}
		info, err := s.Info(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("stream info: %w", err)
		}
		cfg := info.Config
		out.Streams = append(out.Streams, observe.StreamStats{
			Name: cfg.Name, Messages: info.State.Msgs, Bytes: info.State.Bytes, Consumers: info.State.Consumers,
			MaxMessages: cfg.MaxMsgs, MaxBytes: cfg.MaxBytes, MaxConsumers: cfg.MaxConsumers,
		})
		for subject, n := range info.State.Subjects {
			a, batch, ok := strings.Cut(strings.TrimPrefix(subject, workPrefix), ".")
			if ok && messages.ValidToken(a) && messages.ValidToken(batch) {
				activity(a).Messages += n
			}
		}
	}
	workers, err := client.New(c.nc, client.WithPrefix(c.cfg.Prefix))
	if err != nil {
		return nil, err
	}
	live, err := workers.Workers(ctx)
	if err != nil {
		return nil, err
	}
	for _, w := range live {
		for _, a := range w.Activities {
			st := activity(a)
			st.Workers++
			st.WorkersConcurrent += w.Concurrency
		}
	}
	c.activities.Range(func(a, _ any) bool {
		activity(a.(string))
		return true
	})
	for _, a := range slices.Sorted(maps.Keys(perActivity)) {
		st := perActivity[a]
		cons, err := c.stores.Work.Consumer(ctx, c.names.WorkConsumer(a))
		if err == nil {
			info := cons.CachedInfo()
			st.AckPending, st.PullRequests = info.NumAckPending, info.NumWaiting
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("consumer of activity %s: %w", a, err)
		}
		out.Activities = append(out.Activities, *st)
	}
	if ai, err := c.js.AccountInfo(ctx); err == nil {
		out.Account = &observe.AccountStats{Memory: ai.Memory, Store: ai.Store, MaxMemory: ai.Limits.MaxMemory, MaxStore: ai.Limits.MaxStore}
	}
	return out, nil
}
