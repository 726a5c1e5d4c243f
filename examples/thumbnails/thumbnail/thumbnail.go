// Package thumbnail is the worker side of the thumbnails example: activity
// "thumbnail" reads an image from a JetStream Object Store bucket, scales
// it to fit a square box with golang.org/x/image/draw (Catmull-Rom) and
// writes the thumbnail back to the bucket.
package thumbnail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"path"
	"strings"

	// Decoders for the formats image.Decode accepts besides PNG and JPEG.
	_ "image/gif"

	_ "golang.org/x/image/bmp"
	xdraw "golang.org/x/image/draw"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/image/webp"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/worker"
)

// Activity is the name the worker serves.
const Activity = "thumbnail"

// Input is one item: the object to make a thumbnail of.
type Input struct {
	Bucket string `json:"bucket"`
	// Name of the image object, e.g. "images/sunset.png".
	Name string `json:"name"`
	// Max is the largest width and height of the thumbnail in pixels.
	Max int `json:"max"`
}

// Output is one item's result: the thumbnail object written.
type Output struct {
	Name   string `json:"name"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Bytes  int    `json:"bytes"`
}

// ThumbPrefix is where thumbnails go in the bucket.
const ThumbPrefix = "thumbs/"

// ThumbName is the object name of the thumbnail of image object name:
// "images/a.jpeg" → "thumbs/a.jpg", "images/b.gif" → "thumbs/b.png".
func ThumbName(name, format string) string {
	base := strings.TrimSuffix(path.Base(name), path.Ext(name))
	if strings.EqualFold(format, "jpeg") {
		return ThumbPrefix + base + ".jpg"
	}
	return ThumbPrefix + base + ".png"
}

// Register adds the "thumbnail" activity to w; it opens buckets through js.
func Register(w *worker.Worker, js jetstream.JetStream) {
	worker.Handle(w, Activity, func(ctx context.Context, in Input) (Output, error) {
		return Make(ctx, js, in)
	})
}

// Make reads the image in.Name from in.Bucket, writes its thumbnail and
// describes it. Inputs that no retry can fix (a missing object, bytes that
// are not an image) are permanent errors; a failing store is not, and the
// item is retried. Running it twice writes the same object again, so a
// redelivered item does no harm.
func Make(ctx context.Context, js jetstream.JetStream, in Input) (Output, error) {
	if in.Bucket == "" || in.Name == "" {
		return Output{}, worker.Permanent(errors.New(`"bucket" and "name" are required`))
	}
	if in.Max < 1 || in.Max > 4096 {
		return Output{}, worker.Permanent(fmt.Errorf("max %d: must be 1 to 4096 pixels", in.Max))
	}
	store, err := js.ObjectStore(ctx, in.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return Output{}, worker.Permanent(fmt.Errorf("object store bucket %q does not exist", in.Bucket))
	}
	if err != nil {
		return Output{}, fmt.Errorf("open bucket %q: %w", in.Bucket, err)
	}
	data, err := store.GetBytes(ctx, in.Name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return Output{}, worker.Permanent(fmt.Errorf("%s: no such object in bucket %q", in.Name, in.Bucket))
	}
	if err != nil {
		return Output{}, fmt.Errorf("read %s: %w", in.Name, err)
	}
	thumb, format, err := Scale(data, in.Max)
	if err != nil {
		return Output{}, worker.Permanent(fmt.Errorf("%s: %w", in.Name, err))
	}
	encoded, err := Encode(thumb, format)
	if err != nil {
		return Output{}, worker.Permanent(fmt.Errorf("%s: encode thumbnail: %w", in.Name, err))
	}
	name := ThumbName(in.Name, format)
	if _, err := store.PutBytes(ctx, name, encoded); err != nil {
		return Output{}, fmt.Errorf("write %s: %w", name, err)
	}
	b := thumb.Bounds()
	return Output{Name: name, Width: b.Dx(), Height: b.Dy(), Bytes: len(encoded)}, nil
}

// Scale decodes an image and scales it down with Catmull-Rom to fit a
// box × box square, keeping its aspect ratio; an image that already fits is
// returned as it is (never enlarged). It returns the decoded format name.
func Scale(data []byte, box int) (image.Image, string, error) {
	src, format, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("not an image this worker can read (png, jpeg, gif, bmp, tiff, webp): %w", err)
	}
	w, h := Fit(src.Bounds().Dx(), src.Bounds().Dy(), box)
	if w == src.Bounds().Dx() && h == src.Bounds().Dy() {
		return src, format, nil
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	xdraw.CatmullRom.Scale(dst, dst.Bounds(), src, src.Bounds(), xdraw.Src, nil)
	return dst, format, nil
}

// Fit returns the size of a w × h image scaled down to fit box × box,
// keeping the aspect ratio (rounded, at least 1 pixel). Sizes that fit
// already are kept.
func Fit(w, h, box int) (int, int) {
	if w <= box && h <= box {
		return w, h
	}
	if w >= h {
		return box, clampDiv(h*box, w)
	}
	return clampDiv(w*box, h), box
}

// clampDiv is a / b rounded to the nearest integer, at least 1.
func clampDiv(a, b int) int {
	return max((a+b/2)/b, 1)
}

// Encode writes a thumbnail as JPEG when its source was JPEG, else as PNG.
func Encode(img image.Image, format string) ([]byte, error) {
	var buf bytes.Buffer
	var err error
	if strings.EqualFold(format, "jpeg") {
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85})
	} else {
		err = png.Encode(&buf, img)
	}
	return buf.Bytes(), err
}
