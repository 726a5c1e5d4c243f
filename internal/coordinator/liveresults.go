package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
)

// liveHeldMax bounds the results a live writer holds for an earlier item
// that is late (retried, or slow); past it the writer gives up and the
// results are read back from the stream at the end, as without it.
const liveHeldMax = 50_000

// errLiveTooFar stops a live writer that would hold too much.
var errLiveTooFar = errors.New("results too far out of item order")

// liveResults writes a big batch's results to its results object while
// they are counted, so that the aggregate does not have to read every
// result again from the stream when the batch ends. Only a driver that
// counts a batch from its first result has one (a driver that takes a
// batch over reads the results back at the end). A coordinator that
// crashes leaves the object's chunks unfinished; the bucket's TTL removes
// them.
type liveResults struct {
	pw   *io.PipeWriter
	ow   *aggregate.OrderedWriter
	done chan struct{} // closed when the Put returns
	info *jetstream.ObjectInfo
	err  error // of the Put, once done is closed
	name string
}

// startLiveResults starts the object's Put, which reads what the driver
// writes.
func (d *driver) startLiveResults(ctx context.Context) *liveResults {
	pr, pw := io.Pipe()
	l := &liveResults{pw: pw, ow: aggregate.NewOrderedWriter(pw, d.st.Total), done: make(chan struct{}), name: "results/" + d.batch + ".jsonl"}
	go func() {
		defer close(l.done)
		l.info, l.err = d.c.blobs.Put(ctx, jetstream.ObjectMeta{Name: l.name}, pr)
		_ = pr.CloseWithError(l.err) // unblocks the driver if the Put gave up
	}()
	return l
}

// add writes one counted result; false means the writer gave up (and the
// driver should drop it).
func (l *liveResults) add(item int, res *messages.ResultMessage) bool {
	err := l.ow.Add(item, res)
	if err == nil && l.ow.Held() > liveHeldMax {
		err = errLiveTooFar
	}
	if err != nil {
		l.abort(err)
		return false
	}
	return true
}

// abort drops the object being written.
func (l *liveResults) abort(err error) {
	_ = l.pw.CloseWithError(err)
	<-l.done
}

// finish writes the items without a result as not run and completes the
// object.
func (l *liveResults) finish(bucket, notRun string) (*messages.ObjectRef, error) {
	if err := l.ow.Close(notRun); err != nil {
		l.abort(err)
		return nil, err
	}
	_ = l.pw.Close()
	<-l.done
	if l.err != nil {
		return nil, fmt.Errorf("store results: %w", l.err)
	}
	return &messages.ObjectRef{Bucket: bucket, Name: l.name, Size: l.info.Size}, nil
}
