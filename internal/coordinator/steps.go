package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
)

// A batch with a source step runs it first: its output is the item list
// (a JSON array, or {"items_ref": {"bucket", "name"}} naming a JSON Lines
// object). A batch with a reduce step runs it last, on the aggregate. Both
// are one work message each, retried like items; their results go to
// fanout.result.<batch>.source / .reduce in the results stream, where they
// stay: a resumed coordinator reads the item list back from there.

// publishStep publishes the work of a step. The reduce step's input is
// the aggregate so far (status running).
func (d *driver) publishStep(ctx context.Context, step messages.Step) error {
	spec, input := d.req.Reduce, json.RawMessage(nil)
	if step == messages.StepSource {
		spec, input = d.req.Source, d.req.Source.Input
	} else {
		var err error
		if input, err = d.aggregateJSON(ctx, ""); err != nil {
			return err
		}
	}
	if len(input) == 0 {
		input = json.RawMessage("null")
	}
	wm := messages.NewWorkMessage(d.batch, spec.Activity, d.m.State().Options)
	wm.Step, wm.Input = step, input
	msg, err := d.encodeWork(&wm, messages.StepMsgID(d.batch, step))
	if err != nil {
		return err
	}
	return d.retry(ctx, "publish "+string(step)+" step", func(ctx context.Context) error {
		_, err := d.c.js.PublishMsg(ctx, msg)
		return err
	})
}

// loadSource reads the items a source step's output gives and reports
// them to the machine.
func (d *driver) loadSource(ctx context.Context, res *messages.ResultMessage) error {
	items, ref, err := d.c.itemsFromSource(res.Output)
	if err != nil {
		d.feed(aggregate.SourceLoaded{Err: err.Error()})
		return nil
	}
	total := len(items)
	if ref != nil {
		n, e := d.c.countItems(ctx, ref)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if e != nil {
			d.feed(aggregate.SourceLoaded{Err: e.Message})
			return nil
		}
		total = n
		d.items.Close()
		d.items = d.c.objectItems(ref)
	} else {
		d.items = inlineItems(items)
	}
	d.log.Info().Int("total", total).Msg("source step done; fanning out")
	d.results.abort()
	d.results = d.newResults(total)
	d.feed(aggregate.SourceLoaded{Total: total, ItemsRef: ref})
	return nil
}

// openItems opens the batch's items: in the request, in an object, or in
// the stored result of the batch's source step.
func (d *driver) openItems(ctx context.Context, st *messages.BatchState) error {
	switch {
	case st.ItemsRef != nil:
		d.items = d.c.objectItems(st.ItemsRef)
	case d.req.Source != nil && st.Phase != messages.PhaseSource:
		m, err := d.c.stores.Results.GetLastMsgForSubject(ctx, d.c.names.StepResult(d.batch, messages.StepSource))
		if err != nil {
			return fmt.Errorf("source result of %s: %w", d.batch, err)
		}
		var res messages.ResultMessage
		if err := messages.Decode(m.Data, &res); err != nil {
			return fmt.Errorf("source result of %s: %w", d.batch, err)
		}
		items, _, err := d.c.itemsFromSource(res.Output)
		if err != nil {
			return err
		}
		d.items = inlineItems(items)
	default:
		d.items = inlineItems(d.req.Items)
	}
	return nil
}

// itemsFromSource turns a source step's output into the items: inline
// (a JSON array) or a reference to a JSON Lines object.
func (c *Coordinator) itemsFromSource(output json.RawMessage) ([]json.RawMessage, *messages.ObjectRef, error) {
	const shape = `must be a JSON array of items or {"items_ref": {"bucket": "...", "name": "..."}}`
	trimmed := bytes.TrimSpace(output)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, nil, fmt.Errorf("not a JSON array of items: %v", err)
		}
		if len(items) > c.cfg.MaxItems {
			return nil, nil, fmt.Errorf("%d items, more than this coordinator's limit of %d", len(items), c.cfg.MaxItems)
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
