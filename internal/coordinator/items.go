package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
)

// itemReader gives a batch's items in increasing index order: from the
// request, or streamed from a JSON Lines object so that memory does not
// grow with the batch.
type itemReader struct {
	inline []json.RawMessage

	open func() (io.ReadCloser, error)
	rc   io.ReadCloser
	br   *bufio.Reader
	pos  int // index of the next line br returns
	line int // line number, for errors
}

func inlineItems(items []json.RawMessage) *itemReader { return &itemReader{inline: items} }

// objectItems reads the items of ref from the object store.
func (c *Coordinator) objectItems(ref *messages.ObjectRef) *itemReader {
	return &itemReader{open: func() (io.ReadCloser, error) {
		ctx := context.Background()
		obs, err := c.js.ObjectStore(ctx, c.bucketOf(ref))
		if err != nil {
			return nil, fmt.Errorf("items_ref bucket %s: %w", c.bucketOf(ref), err)
		}
		r, err := obs.Get(ctx, ref.Name)
		if err != nil {
			return nil, fmt.Errorf("items_ref object %s: %w", ref.Name, err)
		}
		return r, nil
	}}
}

func (c *Coordinator) bucketOf(ref *messages.ObjectRef) string {
	if ref.Bucket != "" {
		return ref.Bucket
	}
	return c.names.BlobBucket()
}

// Item returns item i. Calls for increasing i read the object once.
func (r *itemReader) Item(i int) (json.RawMessage, error) {
	if r.open == nil {
		if i < 0 || i >= len(r.inline) {
			return nil, fmt.Errorf("item %d out of range", i)
		}
		return r.inline[i], nil
	}
	if r.br == nil || i < r.pos {
		r.Close()
		rc, err := r.open()
		if err != nil {
			return nil, err
		}
		r.rc, r.br, r.pos, r.line = rc, bufio.NewReaderSize(rc, 64*1024), 0, 0
	}
	for {
		b, err := r.nextLine()
		if err != nil {
			return nil, err
		}
		if r.pos == i {
			r.pos++
			return b, nil
		}
		r.pos++
	}
}

// nextLine returns the next non-empty line, copied.
func (r *itemReader) nextLine() (json.RawMessage, error) {
	for {
		line, err := r.br.ReadBytes('\n')
		r.line++
		b := bytes.TrimSpace(line)
		if len(b) > 0 {
			return append(json.RawMessage(nil), b...), nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("items object ended after %d items", r.pos)
			}
			return nil, err
		}
	}
}

// Close releases the object reader.
func (r *itemReader) Close() {
	if r != nil && r.rc != nil {
		_ = r.rc.Close()
		r.rc, r.br = nil, nil
	}
}

// countItems reads a JSON Lines items object once, checking every line,
// and returns how many items it holds.
func (c *Coordinator) countItems(ctx context.Context, ref *messages.ObjectRef) (int, *messages.Error) {
	obs, err := c.js.ObjectStore(ctx, c.bucketOf(ref))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, messages.Errorf(messages.CodeInvalidRequest, "items_ref.bucket: no object store bucket %q", c.bucketOf(ref))
	} else if err != nil {
		return 0, unavailable(err)
	}
	rc, err := obs.Get(ctx, ref.Name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, messages.Errorf(messages.CodeInvalidRequest, "items_ref.name: no object %q in bucket %s; upload the items (JSON Lines) first", ref.Name, c.bucketOf(ref))
	} else if err != nil {
		return 0, unavailable(err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64*1024)
	n := 0
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if t := bytes.TrimSpace(b); len(t) > 0 {
			if !json.Valid(t) {
				return 0, messages.Errorf(messages.CodeInvalidRequest, "items_ref: line %d of %s is not JSON", line, ref.Name)
			}
			n++
			if n > c.cfg.MaxItems {
				return 0, messages.Errorf(messages.CodeTooLarge, "items_ref: more than this coordinator's limit of %d items", c.cfg.MaxItems)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, unavailable(err)
		}
	}
	if n == 0 {
		return 0, messages.Errorf(messages.CodeInvalidRequest, "items_ref: object %s holds no items", ref.Name)
	}
	return n, nil
}
