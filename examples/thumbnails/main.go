// Command thumbnails makes thumbnails of images in the JetStream Object
// Store with a fanout batch: one item per image, run by a worker of its
// own that scales each image with golang.org/x/image/draw.
//
//	go run ./cmd/fanout dev &         # NATS, a coordinator and workers
//	go run ./examples/thumbnails      # generated sample images
//	go run ./examples/thumbnails -dir ~/Pictures -max 256
//
// It connects to $NATS_URL (default nats://127.0.0.1:4222), uploads the
// images to the bucket (default "thumbnails") under images/, serves the
// "thumbnail" activity, submits the batch, prints the aggregate, and exits
// 0 when every image got its thumbnail under thumbs/.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"image"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/examples/thumbnails/thumbnail"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "thumbnails:", err)
		}
		os.Exit(1)
	}
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func run(ctx context.Context, args []string, out io.Writer) (*thumbnail.Result, error) {
	fs := flag.NewFlagSet("thumbnails", flag.ContinueOnError)
	server := fs.String("server", env("NATS_URL", nats.DefaultURL), "NATS server URL ($NATS_URL)")
	prefix := fs.String("prefix", env("FANOUT_PREFIX", "fanout"), "subject prefix of the fanout deployment ($FANOUT_PREFIX)")
	bucket := fs.String("bucket", "thumbnails", "Object Store bucket for the images and thumbnails (created if missing)")
	dir := fs.String("dir", "", "directory of images to use instead of generated samples")
	maxSize := fs.Int("max", 160, "largest width and height of a thumbnail, in pixels")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	var images []thumbnail.Image
	var err error
	if *dir != "" {
		images, err = thumbnail.FromDir(*dir)
	} else {
		images, err = thumbnail.Samples()
	}
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(*server, nats.Name("fanout example: thumbnails"))
	if err != nil {
		return nil, fmt.Errorf("connect to %s (is `go run ./cmd/fanout dev` running?): %w", *server, err)
	}
	defer nc.Close()

	fmt.Fprintf(out, "uploading %d images to bucket %q under %s\n", len(images), *bucket, thumbnail.ImagePrefix)
	res, err := thumbnail.Run(ctx, nc, thumbnail.Config{Prefix: *prefix, Bucket: *bucket, Max: *maxSize, Images: images})
	if err != nil {
		return res, err
	}
	printResult(out, res, images)
	agg := res.Aggregate
	if agg.Status != client.StatusCompleted || agg.Failed > 0 || agg.NotRun > 0 {
		return res, fmt.Errorf("batch %s: %s, %d of %d images failed", agg.BatchID, agg.Status, agg.Failed+agg.NotRun, agg.Total)
	}
	return res, nil
}

func printResult(out io.Writer, res *thumbnail.Result, images []thumbnail.Image) {
	agg := res.Aggregate
	fmt.Fprintf(out, "batch %s (%s): %s, %d of %d succeeded, %d failed, in %.0fms\n",
		agg.BatchID, agg.Activity, agg.Status, agg.Succeeded, agg.Total, agg.Failed, agg.DurationMS)
	for _, r := range agg.Results {
		src := res.Inputs[r.Item].Name
		if o := res.Outputs[r.Item]; o != nil {
			size := "?"
			if c, _, err := image.DecodeConfig(bytes.NewReader(images[r.Item].Data)); err == nil {
				size = fmt.Sprintf("%dx%d", c.Width, c.Height)
			}
			fmt.Fprintf(out, "  %d  %-22s %9s %8d bytes  ->  %-20s %7s %7d bytes\n",
				r.Item, src, size, len(images[r.Item].Data), o.Name, fmt.Sprintf("%dx%d", o.Width, o.Height), o.Bytes)
		} else {
			fmt.Fprintf(out, "  %d  %-24s failed: %s\n", r.Item, src, r.Error)
		}
	}
}
