package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/objects"
)

// itemReader gives a batch's items in increasing index order: from the
// request, or streamed from a JSON Lines object so that memory does not
// grow with the batch.
type itemReader struct {
	inline []json.RawMessage

	open func() (io.ReadCloser, error)
	file string // the downloaded object, removed by Close
	rc   io.ReadCloser
	br   *bufio.Reader
	pos  int   // index of the next item br returns
	off  int64 // offset in the object of what br returns next
	// marks[k] is where item k×itemMarkEvery starts (or a blank line
	// before it), so that going back (unpacking a group) or reopening
	// after a read error reads from the closest mark, not the start.
	marks []int64
}

// itemMarkEvery is how many items apart the offsets kept for going back
// are: 1,000,000 items keep 977 of them.
const itemMarkEvery = 1024

func inlineItems(items []json.RawMessage) *itemReader { return &itemReader{inline: items} }

// objectItems reads the items of ref from the object store. The object is
// copied to a temporary file first, at the speed of the network: an object
// reader left waiting while the window is full can stall or fail, and the
// file keeps memory flat however large the batch.
func (c *Coordinator) objectItems(ref *messages.ObjectRef) *itemReader {
	r := &itemReader{}
	r.open = func() (io.ReadCloser, error) {
		if r.file == "" {
			path, err := c.downloadItems(ref)
			if err != nil {
				return nil, err
			}
			r.file = path
		}
		return os.Open(r.file)
	}
	return r
}

func (c *Coordinator) downloadItems(ref *messages.ObjectRef) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	src, _, err := objects.Open(ctx, c.js, c.bucketOf(ref), ref.Name)
	if err != nil {
		return "", fmt.Errorf("items_ref object %s in bucket %s: %w", ref.Name, c.bucketOf(ref), err)
	}
	defer src.Close()
	f, err := os.CreateTemp("", "fanout-items-*.jsonl")
	if err != nil {
		return "", fmt.Errorf("items_ref: a temporary file for the items: %w", err)
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("items_ref object %s: %w", ref.Name, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func (c *Coordinator) bucketOf(ref *messages.ObjectRef) string {
	if ref.Bucket != "" {
		return ref.Bucket
	}
	return c.names.BlobBucket()
}

// Item returns item i. Calls for increasing i read the object once; going
// back, or forward again over items read before, starts from the closest
// kept offset before i.
func (r *itemReader) Item(i int) (json.RawMessage, error) {
	if r.open == nil {
		if i < 0 || i >= len(r.inline) {
			return nil, fmt.Errorf("item %d out of range", i)
		}
		return r.inline[i], nil
	}
	for attempt := 0; ; attempt++ {
		b, err := r.seek(i)
		if err == nil || attempt == 3 || errors.Is(err, errItemsEnded) {
			return b, err
		}
		// Open it again and skip to where we were.
		r.closeReader()
	}
}

func (r *itemReader) seek(i int) (json.RawMessage, error) {
	if r.br == nil || i < r.pos || (i/itemMarkEvery > r.pos/itemMarkEvery && i/itemMarkEvery < len(r.marks)) {
		// Open it where the closest mark before i is: back, or forward
		// past items read before (back to the window after an unpack).
		r.closeReader()
		rc, err := r.open()
		if err != nil {
			return nil, err
		}
		pos, off := 0, int64(0)
		if k := min(i/itemMarkEvery, len(r.marks)-1); k > 0 {
			if s, ok := rc.(io.Seeker); ok {
				if _, err := s.Seek(r.marks[k], io.SeekStart); err != nil {
					rc.Close()
					return nil, err
				}
				pos, off = k*itemMarkEvery, r.marks[k]
			}
		}
		r.rc, r.br, r.pos, r.off = rc, bufio.NewReaderSize(rc, 64*1024), pos, off
	}
	for {
		if r.pos%itemMarkEvery == 0 && r.pos/itemMarkEvery == len(r.marks) {
			r.marks = append(r.marks, r.off)
		}
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

var errItemsEnded = errors.New("items object ended early")

// nextLine returns the next non-empty line, copied.
func (r *itemReader) nextLine() (json.RawMessage, error) {
	for {
		line, err := r.br.ReadBytes('\n')
		r.off += int64(len(line))
		b := bytes.TrimSpace(line)
		if len(b) > 0 {
			return append(json.RawMessage(nil), b...), nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w after %d items", errItemsEnded, r.pos)
			}
			return nil, err
		}
	}
}

// Close releases the reader and removes the downloaded object.
func (r *itemReader) Close() {
	if r == nil {
		return
	}
	r.closeReader()
	if r.file != "" {
		_ = os.Remove(r.file)
		r.file = ""
	}
}

func (r *itemReader) closeReader() {
	if r.rc != nil {
		_ = r.rc.Close()
		r.rc, r.br = nil, nil
	}
}

// countItems reads a JSON Lines items object once, checking every line,
// and returns how many items it holds.
func (c *Coordinator) countItems(ctx context.Context, ref *messages.ObjectRef) (int, *messages.Error) {
	// Another bucket is one the coordinator may not read: its request
	// would wait for a reply that never comes.
	if ref.Bucket != "" && ref.Bucket != c.names.BlobBucket() {
		return 0, messages.Errorf(messages.CodeInvalidRequest, "items_ref.bucket: %q is not this deployment's object store %s; upload the items there (or leave bucket out)", ref.Bucket, c.names.BlobBucket())
	}
	rc, _, err := objects.Open(ctx, c.js, c.bucketOf(ref), ref.Name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, messages.Errorf(messages.CodeInvalidRequest, "items_ref.bucket: no object store bucket %q", c.bucketOf(ref))
	} else if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, messages.Errorf(messages.CodeInvalidRequest, "items_ref.name: no object %q in bucket %s; upload the items (JSON Lines) first", ref.Name, c.bucketOf(ref))
	} else if err != nil {
		return 0, unavailable(err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64*1024)
	n := 0
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, unavailable(err) // b is a part of the line
		}
		if t := bytes.TrimSpace(b); len(t) > 0 {
			if !json.Valid(t) {
				return 0, messages.Errorf(messages.CodeInvalidRequest, "items_ref: line %d of %s is not JSON", line, ref.Name)
			}
			if d := messages.Depth(t); d > messages.MaxValueDepth {
				return 0, messages.Errorf(messages.CodeInvalidRequest, "items_ref: line %d of %s is nested %d levels deep; items may nest at most %d levels", line, ref.Name, d, messages.MaxValueDepth)
			}
			n++
			if n > c.cfg.MaxItems {
				return 0, messages.Errorf(messages.CodeTooLarge, "items_ref: more than this coordinator's limit of %d items", c.cfg.MaxItems)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	if n == 0 {
		return 0, messages.Errorf(messages.CodeInvalidRequest, "items_ref: object %s holds no items", ref.Name)
	}
	return n, nil
}
