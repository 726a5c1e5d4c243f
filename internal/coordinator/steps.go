package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
)

// A batch with a source step runs it first: its output is the item list
// (a JSON array, or {"items_ref": {"bucket", "name"}} naming a JSON Lines
// object). A batch with a reduce step runs it last, on the aggregate. Both
// are one work message each, retried like items; their results go to
// fanout.result.<batch>.source / .reduce in the results stream, where they
// stay: a resumed coordinator reads the item list back from there.

// publishStep publishes the work of a step.
func (d *driver) publishStep(ctx context.Context, step messages.Step) error {
	spec := d.req.Source
	var input json.RawMessage
	if step == messages.StepReduce {
		spec = d.req.Reduce
		var err error
		if input, err = d.reduceInput(ctx); err != nil {
			return err
		}
	} else {
		input = spec.Input
	}
	if len(input) == 0 {
		input = json.RawMessage("null")
	}
	o := d.st.Options
	wm := messages.WorkMessage{
		BatchID: d.batch, Activity: spec.Activity, Input: input, Step: step,
		Attempt: 1, MaxAttempts: o.MaxAttempts, ItemTimeoutMS: o.ItemTimeout.Std().Milliseconds(),
	}
	for _, b := range o.Backoff {
		wm.BackoffMS = append(wm.BackoffMS, b.Std().Milliseconds())
	}
	data, err := json.Marshal(wm)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(d.c.names.Work(spec.Activity, d.batch))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, messages.StepMsgID(d.batch, step))
	return d.retry(ctx, "publish "+string(step)+" step", func(ctx context.Context) error {
		_, err := d.c.js.PublishMsg(ctx, msg)
		return err
	})
}

// reduceInput is the aggregate so far (status running), with its results
// in the object store when too large for one message.
func (d *driver) reduceInput(ctx context.Context) (json.RawMessage, error) {
	return d.aggregateJSON(ctx, "", "reduce-input/", func(*messages.Aggregate) {})
}

// onStep handles a step's result; it returns a final status when the step
// ends the batch.
func (d *driver) onStep(ctx context.Context, step messages.Step, res *messages.ResultMessage) (end messages.Status, reason string, err error) {
	switch {
	case step == messages.StepSource && d.st.Phase == messages.PhaseSource:
		if !res.OK {
			return messages.StatusFailed, "the source step failed: " + res.Error, nil
		}
		items, ref, err := d.itemsFromSource(ctx, res.Output)
		if err != nil {
			return messages.StatusFailed, "the source step's output: " + err.Error(), nil
		}
		if ref != nil {
			n, e := d.c.countItems(ctx, ref)
			if e != nil {
				return messages.StatusFailed, "the source step's output: " + e.Message, nil
			}
			d.items, d.st.ItemsRef, d.st.Total = d.c.objectItems(ref), ref, n
		} else {
			d.items, d.st.Total = inlineItems(items), len(items)
		}
		d.st.Phase = messages.PhaseItems
		if d.st.Total <= d.c.cfg.InMemoryResults {
			d.results = aggregate.NewResults(d.st.Total)
		}
		d.log.Info().Int("total", d.st.Total).Msg("source step done; fanning out")
		if err := d.retry(ctx, "save item count", d.checkpoint); err != nil {
			return "", "", err
		}
		d.fill(ctx)
	case step == messages.StepReduce && d.st.Phase == messages.PhaseReduce:
		if !res.OK {
			return messages.StatusFailed, "the reduce step failed: " + res.Error, nil
		}
		return messages.StatusCompleted, "", nil
	}
	return "", "", nil
}

// startReduce moves a batch whose items are all counted to its reduce step.
func (d *driver) startReduce(ctx context.Context) error {
	d.st.Phase = messages.PhaseReduce
	if err := d.retry(ctx, "save reduce phase", d.checkpoint); err != nil {
		return err
	}
	return d.publishStep(ctx, messages.StepReduce)
}

// itemsFromSource turns a source step's output into the items: inline
// (a JSON array) or a reference to a JSON Lines object.
func (d *driver) itemsFromSource(ctx context.Context, output json.RawMessage) ([]json.RawMessage, *messages.ObjectRef, error) {
	const shape = `must be a JSON array of items or {"items_ref": {"bucket": "...", "name": "..."}}`
	trimmed := bytes.TrimSpace(output)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, nil, fmt.Errorf("not a JSON array of items: %v", err)
		}
		if len(items) > d.c.cfg.MaxItems {
			return nil, nil, fmt.Errorf("%d items, more than this coordinator's limit of %d", len(items), d.c.cfg.MaxItems)
		}
		return items, nil, nil
	}
	var ref struct {
		ItemsRef *messages.ObjectRef `json:"items_ref"`
	}
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &ref) != nil || ref.ItemsRef == nil || ref.ItemsRef.Name == "" {
		return nil, nil, errors.New(shape)
	}
	return nil, ref.ItemsRef, nil
}

// sourceItems reads back the item list of a batch resumed after its source
// step, from the step's stored result.
func (d *driver) sourceItems(ctx context.Context) error {
	m, err := d.c.stores.Results.GetLastMsgForSubject(ctx, d.c.names.StepResult(d.batch, messages.StepSource))
	if err != nil {
		return fmt.Errorf("source result of %s: %w", d.batch, err)
	}
	var res messages.ResultMessage
	if err := json.Unmarshal(m.Data, &res); err != nil {
		return fmt.Errorf("source result of %s: %w", d.batch, err)
	}
	items, _, err := d.itemsFromSource(ctx, res.Output)
	if err != nil {
		return err
	}
	d.items = inlineItems(items)
	return nil
}

// reduceOutput returns the reduce step's output, if it succeeded.
func (d *driver) reduceOutput(ctx context.Context) (json.RawMessage, error) {
	m, err := d.c.stores.Results.GetLastMsgForSubject(ctx, d.c.names.StepResult(d.batch, messages.StepReduce))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var res messages.ResultMessage
	if err := json.Unmarshal(m.Data, &res); err != nil || !res.OK {
		return nil, nil
	}
	return res.Output, nil
}
