package thumbnail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/worker"
)

// ImagePrefix is where uploaded images go in the bucket.
const ImagePrefix = "images/"

// Config is one run of the example.
type Config struct {
	// Prefix is the fanout deployment's subject prefix ("fanout").
	Prefix string
	// Bucket is the Object Store bucket for images and thumbnails; it is
	// created when missing.
	Bucket string
	// Max is the thumbnails' largest width and height.
	Max    int
	Images []Image
}

// Result is what a run did.
type Result struct {
	Aggregate *client.Aggregate
	// Inputs and Outputs are per item, in item order; Outputs[i] is nil when
	// item i failed.
	Inputs  []Input
	Outputs []*Output
}

// Run uploads the images, serves the "thumbnail" activity with a worker of
// its own (the deployment's workers do not know it), submits one batch with
// an item per image, waits for its aggregate and stops the worker.
func Run(ctx context.Context, nc *nats.Conn, cfg Config) (*Result, error) {
	if len(cfg.Images) == 0 {
		return nil, errors.New("no images")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	store, err := js.ObjectStore(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		store, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      cfg.Bucket,
			Description: "fanout thumbnails example: images/ and their thumbs/",
		})
	}
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", cfg.Bucket, err)
	}
	inputs := make([]Input, len(cfg.Images))
	items := make([]json.RawMessage, len(cfg.Images))
	for i, img := range cfg.Images {
		name := ImagePrefix + img.Name
		if _, err := store.PutBytes(ctx, name, img.Data); err != nil {
			return nil, fmt.Errorf("upload %s: %w", name, err)
		}
		inputs[i] = Input{Bucket: cfg.Bucket, Name: name, Max: cfg.Max}
		if items[i], err = json.Marshal(inputs[i]); err != nil {
			return nil, err
		}
	}

	w, err := worker.New(nc, worker.WithPrefix(cfg.Prefix))
	if err != nil {
		return nil, err
	}
	Register(w, js)
	if err := w.Start(ctx); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	defer func() { _ = w.Stop(context.WithoutCancel(ctx)) }()

	c, err := client.New(nc, client.WithPrefix(cfg.Prefix))
	if err != nil {
		return nil, err
	}
	reply, err := c.Submit(ctx, client.BatchRequest{
		Activity: Activity,
		Items:    items,
		Options:  client.Options{MaxAttempts: 3},
	})
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	agg, err := c.Wait(ctx, reply.BatchID, nil)
	if err != nil {
		return nil, fmt.Errorf("wait for batch %s: %w", reply.BatchID, err)
	}
	res := &Result{Aggregate: agg, Inputs: inputs, Outputs: make([]*Output, len(inputs))}
	for _, r := range agg.Results {
		if !r.OK || r.Item < 0 || r.Item >= len(inputs) {
			continue
		}
		var out Output
		if err := json.Unmarshal(r.Output, &out); err != nil {
			return res, fmt.Errorf("item %d: output %s: %w", r.Item, r.Output, err)
		}
		res.Outputs[r.Item] = &out
	}
	return res, nil
}
