// Package objects reads Object Store objects with memory bounded by one
// chunk, whatever the object's size.
//
// nats.go's ObjectStore.Get has the server push every chunk through an
// ordered push consumer as fast as it can send them; a reader slower than
// the network (one that validates or writes each line) lets them pile up in
// the client's buffer. Measured at 1,000,000 items (96 MiB), that was 12.7
// MiB of the coordinator's heap. Here the chunks are pulled one at a time.
// Pulling also works from another account through the JetStream API
// imports alone: a push consumer would need its delivery subject exported
// to the reader's account as well.
package objects

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/topology"
)

// fetchWait bounds the wait for one chunk.
const fetchWait = 30 * time.Second

// Open returns the object's info and a reader of its bytes. The reader
// checks the object's size and SHA-256 digest at its end: a mismatch is an
// error from Read instead of io.EOF. A link is followed once. ctx bounds
// the whole read, not just Open.
func Open(ctx context.Context, js jetstream.JetStream, bucket, name string) (io.ReadCloser, *jetstream.ObjectInfo, error) {
	for hops := 0; ; hops++ {
		obs, err := js.ObjectStore(ctx, bucket)
		if err != nil {
			return nil, nil, err
		}
		info, err := obs.GetInfo(ctx, name)
		if err != nil {
			return nil, nil, err
		}
		link := info.Opts
		if link == nil || link.Link == nil {
			return read(ctx, js, info)
		}
		if link.Link.Name == "" || hops > 0 {
			return nil, nil, fmt.Errorf("object %s: a link to a bucket or to another link is not followed", name)
		}
		bucket, name = link.Link.Bucket, link.Link.Name
	}
}

func read(ctx context.Context, js jetstream.JetStream, info *jetstream.ObjectInfo) (io.ReadCloser, *jetstream.ObjectInfo, error) {
	r := &reader{ctx: ctx, info: info, digest: sha256.New()}
	if info.Size == 0 {
		return r, info, nil
	}
	stream, err := js.Stream(ctx, "OBJ_"+info.Bucket)
	if err != nil {
		return nil, nil, err
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{"$O." + info.Bucket + ".C." + info.NUID},
		InactiveThreshold: topology.ReaderIdle, // an abandoned read's reader goes soon
	})
	if err != nil {
		return nil, nil, err
	}
	r.cons = cons
	return r, info, nil
}

type reader struct {
	ctx    context.Context
	info   *jetstream.ObjectInfo
	cons   jetstream.Consumer
	digest hash.Hash
	chunk  []byte // the rest of the current chunk
	chunks uint32 // chunks read
	size   uint64 // bytes read
	err    error  // sticky
}

func (r *reader) Read(p []byte) (int, error) {
	for len(r.chunk) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.chunk)
	r.chunk = r.chunk[n:]
	return n, nil
}

// next reads the next chunk, or checks the object at its end.
func (r *reader) next() error {
	if r.chunks == r.info.Chunks {
		return r.check()
	}
	if err := r.ctx.Err(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.ctx, fetchWait)
	msg, err := r.cons.Next(jetstream.FetchContext(ctx))
	cancel()
	if err != nil {
		return fmt.Errorf("object %s: chunk %d of %d: %w", r.info.Name, r.chunks+1, r.info.Chunks, err)
	}
	r.chunks++
	r.chunk = msg.Data()
	r.size += uint64(len(r.chunk))
	r.digest.Write(r.chunk)
	if r.size > r.info.Size {
		return fmt.Errorf("object %s: more than its %d bytes", r.info.Name, r.info.Size)
	}
	return nil
}

func (r *reader) check() error {
	if r.size != r.info.Size {
		return fmt.Errorf("object %s: %d bytes read, %d expected", r.info.Name, r.size, r.info.Size)
	}
	if r.info.Digest != "" {
		if got := jetstream.GetObjectDigestValue(r.digest); got != r.info.Digest {
			return fmt.Errorf("object %s: digest %s, expected %s", r.info.Name, got, r.info.Digest)
		}
	}
	return io.EOF
}

// Close ends the read. The server removes the chunk reader once idle.
func (r *reader) Close() error {
	if r.err == nil {
		r.err = errors.New("object reader closed")
	}
	r.chunk = nil
	return nil
}

// OpenRef is Open of the object ref names, which must still be the one
// ref records: its size and, when recorded, its digest. Anybody who may
// write to the bucket can replace an object under the same name.
func OpenRef(ctx context.Context, js jetstream.JetStream, ref *messages.ObjectRef) (io.ReadCloser, error) {
	rc, info, err := Open(ctx, js, ref.Bucket, ref.Name)
	if err != nil {
		return nil, err
	}
	if err := matches(ref, info.Size, info.Digest); err != nil {
		rc.Close()
		return nil, err
	}
	return rc, nil
}

// ReadRef returns the bytes of the object ref names, checked like
// OpenRef's: still the object ref records, its bytes its size and digest.
func ReadRef(ctx context.Context, js jetstream.JetStream, ref *messages.ObjectRef) ([]byte, error) {
	rc, err := OpenRef(ctx, js, ref)
	if err != nil {
		return nil, fmt.Errorf("object %s in %s: %w", ref.Name, ref.Bucket, err)
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func matches(ref *messages.ObjectRef, size uint64, digest string) error {
	if ref.Digest != "" && (size != ref.Size || digest != ref.Digest) {
		return fmt.Errorf("object %s is not the one referred to: %d bytes with digest %s, not %d bytes with digest %s", ref.Name, size, digest, ref.Size, ref.Digest)
	}
	return nil
}

// Results calls fn with each result of an aggregate in item order: the
// results it carries, or the lines of its results object, read as they
// are needed. The object must be the one the aggregate records, and hold
// one result per item in item order. fn's error ends the iteration and is
// returned.
func Results(ctx context.Context, js jetstream.JetStream, agg *messages.Aggregate, fn func(messages.ItemResult) error) error {
	if agg.ResultsRef == nil {
		for _, r := range agg.Results {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	ref := agg.ResultsRef
	rc, err := OpenRef(ctx, js, ref)
	if err != nil {
		return fmt.Errorf("results object %s: %w", ref.Name, err)
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64*1024), 64*1024*1024)
	next := 0
	for ; sc.Scan(); next++ {
		var r messages.ItemResult
		if err := messages.Decode(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("results object %s: line %d: %w", ref.Name, next+1, err)
		}
		if r.Item != next || next >= agg.Total {
			return fmt.Errorf("results object %s: line %d holds item %d of %d; want item %d", ref.Name, next+1, r.Item, agg.Total, next)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("results object %s: %w", ref.Name, err)
	}
	if next != agg.Total {
		return fmt.Errorf("results object %s: %d results, want %d", ref.Name, next, agg.Total)
	}
	return nil
}
