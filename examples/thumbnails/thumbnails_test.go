package main

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/examples/thumbnails/thumbnail"
	"github.com/fanoutdev/fanout/internal/embedded"
)

// devStack starts what `fanout dev` runs (real embedded NATS, a
// coordinator, a built-in worker) on a free port, stopped with the test.
func devStack(t *testing.T) *embedded.Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stack, err := embedded.StartStack(ctx, embedded.StackConfig{DataDir: t.TempDir(), Port: 0, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stack.Stop(context.Background()) })
	return stack
}

// The example as `go run ./examples/thumbnails` runs it: every sample
// image gets a thumbnail that fits the box, keeps the aspect ratio, is never
// enlarged, and is in the Object Store with the size the result reports.
func TestThumbnails(t *testing.T) {
	t.Parallel()
	stack := devStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const maxSize = 120
	var out bytes.Buffer
	res, err := run(ctx, []string{"-server", stack.URL, "-bucket", "thumbs_test", "-max", "120"}, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	samples, err := thumbnail.Samples()
	if err != nil {
		t.Fatal(err)
	}
	agg := res.Aggregate
	if agg.Status != client.StatusCompleted || agg.Total != len(samples) || agg.Succeeded != len(samples) || agg.Failed != 0 || len(agg.Results) != len(samples) {
		t.Fatalf("aggregate %s: %d/%d succeeded, %d failed, %d results; want all %d", agg.Status, agg.Succeeded, agg.Total, agg.Failed, len(agg.Results), len(samples))
	}
	if !strings.Contains(out.String(), agg.BatchID) || !strings.Contains(out.String(), "completed") {
		t.Errorf("output does not name the batch and its status")
	}

	nc, err := nats.Connect(stack.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	store, err := js.ObjectStore(ctx, "thumbs_test")
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range samples {
		src, _, err := image.DecodeConfig(bytes.NewReader(s.Data))
		if err != nil {
			t.Fatal(err)
		}
		o := res.Outputs[i]
		if o == nil {
			t.Fatalf("item %d (%s): no output: %+v", i, s.Name, agg.Results[i])
		}
		if o.Width > maxSize || o.Height > maxSize || o.Width < 1 || o.Height < 1 {
			t.Errorf("%s: thumbnail %dx%d does not fit %d", s.Name, o.Width, o.Height, maxSize)
		}
		if src.Width <= maxSize && src.Height <= maxSize {
			if o.Width != src.Width || o.Height != src.Height {
				t.Errorf("%s: %dx%d fits already but became %dx%d", s.Name, src.Width, src.Height, o.Width, o.Height)
			}
		} else {
			if max(o.Width, o.Height) != maxSize {
				t.Errorf("%s: thumbnail %dx%d: the longer side should be %d", s.Name, o.Width, o.Height, maxSize)
			}
			// Aspect ratio kept to within rounding of one pixel.
			if d := o.Width*src.Height - o.Height*src.Width; abs(d) > max(src.Width, src.Height) {
				t.Errorf("%s: %dx%d -> %dx%d changes the aspect ratio", s.Name, src.Width, src.Height, o.Width, o.Height)
			}
		}
		if want := thumbnail.ThumbName(thumbnail.ImagePrefix+s.Name, formatOf(s.Name)); o.Name != want {
			t.Errorf("%s: thumbnail named %q, want %q", s.Name, o.Name, want)
		}
		data, err := store.GetBytes(ctx, o.Name)
		if err != nil {
			t.Fatalf("%s: thumbnail object %s: %v", s.Name, o.Name, err)
		}
		if len(data) != o.Bytes {
			t.Errorf("%s: object has %d bytes, result says %d", s.Name, len(data), o.Bytes)
		}
		got, format, err := image.DecodeConfig(bytes.NewReader(data))
		if err != nil || got.Width != o.Width || got.Height != o.Height || format != formatOf(s.Name) {
			t.Errorf("%s: stored thumbnail decodes as %s %dx%d (%v), want %s %dx%d", s.Name, format, got.Width, got.Height, err, formatOf(s.Name), o.Width, o.Height)
		}
		// The original is still there, as uploaded.
		if orig, err := store.GetBytes(ctx, thumbnail.ImagePrefix+s.Name); err != nil || !bytes.Equal(orig, s.Data) {
			t.Errorf("%s: original object missing or changed (%v)", s.Name, err)
		}
	}
}

// Bytes that are not an image, and a missing object, fail their items with
// a permanent error that says why; the other items still succeed.
func TestThumbnailsBadImages(t *testing.T) {
	t.Parallel()
	stack := devStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := nats.Connect(stack.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var small bytes.Buffer
	if err := png.Encode(&small, image.NewGray(image.Rect(0, 0, 200, 50))); err != nil {
		t.Fatal(err)
	}
	images := []thumbnail.Image{{Name: "small.png", Data: small.Bytes()}, {Name: "notes.png", Data: []byte("not really a PNG")}}
	res, err := thumbnail.Run(ctx, nc, thumbnail.Config{Prefix: "fanout", Bucket: "bad_test", Max: 64, Images: images})
	if err != nil {
		t.Fatal(err)
	}
	agg := res.Aggregate
	if agg.Status != client.StatusCompleted || agg.Succeeded != 1 || agg.Failed != 1 {
		t.Fatalf("aggregate %s %d succeeded %d failed, want completed 1/1", agg.Status, agg.Succeeded, agg.Failed)
	}
	if o := res.Outputs[0]; o == nil || o.Width != 64 || o.Height != 16 {
		t.Errorf("200x50 image: thumbnail %+v, want 64x16", o)
	}
	if e := agg.Results[1].Error; !strings.Contains(e, "images/notes.png") || !strings.Contains(e, "not an image") {
		t.Errorf("bad image's error %q: want it to name the object and say it is not an image", e)
	}

	js, _ := jetstream.New(nc)
	out, err := thumbnail.Make(ctx, js, thumbnail.Input{Bucket: "bad_test", Name: "images/missing.png", Max: 64})
	if err == nil || !strings.Contains(err.Error(), "no such object") {
		t.Errorf("missing object: %+v, %v; want a no such object error", out, err)
	}
}

func formatOf(name string) string {
	if strings.HasSuffix(name, ".jpg") {
		return "jpeg"
	}
	return "png"
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
