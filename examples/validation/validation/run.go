package validation

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/worker"
)

// TolerancePercent is the share of invalid records a batch accepts:
// failed ÷ total × 100 above it ends the batch "failed".
const TolerancePercent = 10.0

// Batch is one validation run: records and how many to check at once.
type Batch struct {
	Title   string
	Records []Record
	// Bad lists the records made invalid on purpose (for the printout).
	Bad []int
	// MaxInFlight caps the records being checked at once (0: the default).
	MaxInFlight int
}

// Demo is the example's two runs of 40 records each: a few bad records
// (3, 7.5%), which the threshold tolerates, and too many (8, 20%), which
// fail the batch. The second checks one record at a time (max_in_flight 1)
// so that it stops exactly at the record that takes the failures past 10%
// (its 5th bad one, item 21: 5 of 40 is 12.5%): the aggregate counts 17
// valid and 5 invalid records, and the 18 after item 21 are not_run. With
// more in flight, records already out when the threshold is crossed may
// be counted too, so where a batch stops varies.
func Demo() []Batch {
	bad1 := []int{5, 18, 33}
	bad2 := []int{3, 8, 12, 17, 21, 26, 30, 35}
	return []Batch{
		{Title: "a few bad records", Records: Records(40, bad1...), Bad: bad1},
		{Title: "too many bad records", Records: Records(40, bad2...), Bad: bad2, MaxInFlight: 1},
	}
}

// Options are the batch options of b: continue past failures, up to
// TolerancePercent.
func (b Batch) Options() client.Options {
	pct := TolerancePercent
	return client.Options{
		FailurePolicy:           client.FailureContinue,
		ToleratedFailurePercent: &pct,
		MaxInFlight:             b.MaxInFlight,
	}
}

// Run serves "validate" with a worker of its own (the deployment's workers
// do not know it), submits each batch in turn and waits for its aggregate,
// then stops the worker. It returns the aggregates in the batches' order.
func Run(ctx context.Context, nc *nats.Conn, prefix string, batches []Batch) ([]*client.Aggregate, error) {
	w, err := worker.New(nc, worker.WithPrefix(prefix))
	if err != nil {
		return nil, err
	}
	Register(w)
	if err := w.Start(ctx); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	defer func() { _ = w.Stop(context.WithoutCancel(ctx)) }()
	c, err := client.New(nc, client.WithPrefix(prefix))
	if err != nil {
		return nil, err
	}
	var out []*client.Aggregate
	for _, b := range batches {
		items := make([]json.RawMessage, len(b.Records))
		for i, r := range b.Records {
			if items[i], err = json.Marshal(r); err != nil {
				return out, err
			}
		}
		reply, err := c.Submit(ctx, client.BatchRequest{Activity: Activity, Items: items, Options: b.Options()})
		if err != nil {
			return out, fmt.Errorf("submit %q: %w", b.Title, err)
		}
		agg, err := c.Wait(ctx, reply.BatchID, nil)
		if err != nil {
			return out, fmt.Errorf("wait for batch %s: %w", reply.BatchID, err)
		}
		out = append(out, agg)
	}
	return out, nil
}
