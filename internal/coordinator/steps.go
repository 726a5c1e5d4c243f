package coordinator

import (
	"bufio"
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
	results, err := d.collectResults(ctx, "")
	if err != nil {
		return nil, err
	}
	agg := aggregate.Build(d.st, results, d.st.UpdatedAt)
	return d.encodeAggregate(ctx, agg, "reduce-input/")
}

// onStep handles a step's result; it returns a final status when the step
// ends the batch.
func (d *driver) onStep(ctx context.Context, step messages.Step, res *messages.ResultMessage) (end messages.Status, reason string, err error) {
	switch {
	case step == messages.StepSource && d.st.Phase == messages.PhaseSource:
		if !res.OK {
			return messages.StatusFailed, "the source step failed: " + res.Error, nil
		}
		items, err := d.itemsFromSource(ctx, res.Output)
		if err != nil {
			return messages.StatusFailed, "the source step's output: " + err.Error(), nil
		}
		d.req.Items = items
		d.st.Total = len(items)
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

// itemsFromSource turns a source step's output into the item list.
func (d *driver) itemsFromSource(ctx context.Context, output json.RawMessage) ([]json.RawMessage, error) {
	var items []json.RawMessage
	trimmed := bytes.TrimSpace(output)
	switch {
	case len(trimmed) > 0 && trimmed[0] == '[':
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, fmt.Errorf("not a JSON array of items: %v", err)
		}
	case len(trimmed) > 0 && trimmed[0] == '{':
		var ref struct {
			ItemsRef *messages.ObjectRef `json:"items_ref"`
		}
		if err := json.Unmarshal(trimmed, &ref); err != nil || ref.ItemsRef == nil || ref.ItemsRef.Name == "" {
			return nil, errors.New(`must be a JSON array of items or {"items_ref": {"bucket": "...", "name": "..."}}`)
		}
		bucket := ref.ItemsRef.Bucket
		if bucket == "" {
			bucket = d.c.names.BlobBucket()
		}
		obs, err := d.c.js.ObjectStore(ctx, bucket)
		if err != nil {
			return nil, fmt.Errorf("items_ref bucket %s: %w", bucket, err)
		}
		data, err := obs.GetBytes(ctx, ref.ItemsRef.Name)
		if err != nil {
			return nil, fmt.Errorf("items_ref object %s: %w", ref.ItemsRef.Name, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
		for line := 1; sc.Scan(); line++ {
			b := bytes.TrimSpace(sc.Bytes())
			if len(b) == 0 {
				continue
			}
			if !json.Valid(b) {
				return nil, fmt.Errorf("items_ref object %s, line %d: not JSON", ref.ItemsRef.Name, line)
			}
			items = append(items, append(json.RawMessage(nil), b...))
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("items_ref object %s: %w", ref.ItemsRef.Name, err)
		}
	default:
		return nil, errors.New(`must be a JSON array of items or {"items_ref": {"bucket": "...", "name": "..."}}`)
	}
	if len(items) > d.c.cfg.MaxItems {
		return nil, fmt.Errorf("%d items, more than this coordinator's limit of %d", len(items), d.c.cfg.MaxItems)
	}
	return items, nil
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
	items, err := d.itemsFromSource(ctx, res.Output)
	if err != nil {
		return err
	}
	d.req.Items = items
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
