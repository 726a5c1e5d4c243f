package report

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/worker"
)

// Result is what a run did.
type Result struct {
	Aggregate *client.Aggregate
	// Report is the reduce step's output, the aggregate's "output".
	Report Report
}

// Run serves "section" and "combine" with a worker of its own (the
// deployment's workers do not know them), submits one batch with a section
// per region and "combine" as its reduce step, waits for the aggregate and
// stops the worker.
func Run(ctx context.Context, nc *nats.Conn, prefix string, regions []Region) (*Result, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	w, err := worker.New(nc, worker.WithPrefix(prefix))
	if err != nil {
		return nil, err
	}
	Register(w, js)
	if err := w.Start(ctx); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	defer func() { _ = w.Stop(context.WithoutCancel(ctx)) }()

	items := make([]json.RawMessage, len(regions))
	for i, r := range regions {
		if items[i], err = json.Marshal(r); err != nil {
			return nil, err
		}
	}
	c, err := client.New(nc, client.WithPrefix(prefix))
	if err != nil {
		return nil, err
	}
	reply, err := c.Submit(ctx, client.BatchRequest{
		Activity: SectionActivity,
		Items:    items,
		Reduce:   &client.StepSpec{Activity: CombineActivity},
		Options:  client.Options{MaxAttempts: 3},
	})
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	agg, err := c.Wait(ctx, reply.BatchID, nil)
	if err != nil {
		return nil, fmt.Errorf("wait for batch %s: %w", reply.BatchID, err)
	}
	res := &Result{Aggregate: agg}
	if agg.Status != client.StatusCompleted {
		return res, fmt.Errorf("batch %s ended %s: %s", agg.BatchID, agg.Status, agg.Reason)
	}
	if err := json.Unmarshal(agg.Output, &res.Report); err != nil {
		return res, fmt.Errorf("batch %s: the reduce step's output %s is not a report: %w", agg.BatchID, agg.Output, err)
	}
	return res, nil
}
