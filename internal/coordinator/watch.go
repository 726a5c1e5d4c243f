package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
)

// A watched batch is a new one of at most watchMaxItems items (and without
// steps). Instead of a consumer per batch (a JetStream API
// call, consumer state and goroutines on the server: the largest cost of a
// small batch), its driver
//
//   - subscribes to the batch's result subjects with core NATS: the
//     messages workers publish, seen as the server routes them, are only
//     hints that results exist (they may be refused duplicates, or not
//     stored yet, or lost on the way), never counted;
//   - reads the stored results after last_seq with batch direct gets
//     ($JS.API.DIRECT.GET, next_by_subj), in stream order, and counts
//     those exactly as the consumer's.
//
// On a memory-stored results stream, a new batch's first read starts
// after its floor, not at the stream's start: the highest results-stream
// sequence the coordinator had seen stored before it published the
// batch's work. A memory store looks for a wildcard subject by scanning
// every message from the start (memStore.loadNextMsgLocked once it holds
// more than 256 subjects): with 100,000 results kept, a 10-item batch took
// 18 ms instead of 2 (see floorReads for file storage).
//
// It reads when the hints cover what is left of the batch (or a window's
// quarter of it), at once for a batch whose failure policy can end it, at
// each checkpoint tick if hints came, and every watchSafetyRead whatever
// the hints, since a lost hint must not stall a batch.

// watchMaxItems is the largest batch watched. Each result costs a watched
// batch a hint and a direct get, more than a consumer's delivery, so past a
// few hundred results the consumer's fixed cost is the smaller one (10,000
// items watched: half the throughput).
const watchMaxItems = 256

// watchSafetyRead is the longest a watched batch waits between reads.
const watchSafetyRead = time.Second

// floorDistrust is the number of reads in a row that find fewer results
// than hinted (about 0.2 s of them) after which a watched batch stops
// trusting its floor.
const floorDistrust = 10

// directBatch is how many results one direct get returns at most.
const directBatch = 256

// watchable reports whether the driver may watch its batch: it is new (all
// its results will be seen by this driver and kept in memory) and has no
// steps.
func (d *driver) watchable() bool {
	return d.results != nil && d.st.Total <= watchMaxItems && d.req.Source == nil && d.req.Reduce == nil
}

// watchResults subscribes to the result subjects of a batch of total
// items. When it is called before the batch's first work message is
// published on the same connection, the server has the subscription before
// any result exists. The subscription delivers into the driver's channel
// directly (no goroutine of its own); should the channel be full, nats.go
// drops the hint, which only delays a read (to the next checkpoint tick),
// as a lost hint always could.
func (c *Coordinator) watchResults(batch string, total int) *resultsReader {
	r := &resultsReader{ready: make(chan struct{}), hints: make(chan *nats.Msg, min(total, watchMaxItems)+16)}
	defer close(r.ready)
	sub, err := c.nc.ChanSubscribe(c.names.ResultBatchFilter(batch), r.hints)
	if err != nil {
		r.err = fmt.Errorf("results subscription: %w", err)
		r.stop = func() {}
		return r
	}
	r.stop = sync.OnceFunc(func() { _ = sub.Unsubscribe() })
	return r
}

// hint records a result published (subject m.Subject).
func (d *driver) hint(m *nats.Msg) {
	_, item, ok := d.c.names.ParseResultSubject(m.Subject)
	if !ok {
		item = -1 // an unpack request: read it at once
	}
	if d.c.dropHint != nil && d.c.dropHint(item) {
		return
	}
	d.sinceRead++
	if item < 0 {
		d.readDue = true
		return
	}
	if item < len(d.hinted) && !d.hinted[item] {
		d.hinted[item] = true
		d.nHinted++
	}
}

// readWanted reports whether the hints so far call for a read now.
func (d *driver) readWanted() bool {
	st := d.st
	if d.readDue {
		return true
	}
	o := st.Options
	if o.FailurePolicy == messages.FailureFast || o.ToleratedFailures != nil || o.ToleratedFailurePercent != nil {
		return true // a failure may end the batch
	}
	done := st.Succeeded + st.Failed
	waiting := d.nHinted - done // hinted, not yet counted
	left := st.Total - done
	return waiting > 0 && waiting >= min(left, max(st.Window()/4, 1))
}

// readStored counts the batch's stored results after last_seq. A read that
// fails hands the batch to a consumer (it counts from last_seq, so nothing
// is lost or counted twice).
func (d *driver) readStored(ctx context.Context) {
	if d.hints == nil {
		return
	}
	d.readDue, d.sinceRead, d.lastRead = false, 0, time.Now()
	after := max(d.st.LastSeq, d.floor)
	if d.c.onRead != nil {
		d.c.onRead(d.batch, after)
	}
	if err := d.c.direct.read(ctx, d.c.names.ResultsStream(), d.c.names.ResultBatchFilter(d.batch), after, d.onResult); err != nil {
		if ctx.Err() != nil {
			return
		}
		d.log.Warn().Err(err).Msg("reading stored results; reading them with a consumer instead")
		d.leaveWatch(ctx)
		return
	}
	// Hinted results not found yet are being stored (the server routes a
	// message before its stream stores it): look again soon.
	if d.nHinted > d.st.Succeeded+d.st.Failed && !d.st.Status.Final() {
		d.rereads++
		if d.rereads == floorDistrust && d.floor > d.st.LastSeq {
			// Results hinted for this long and not found after the floor
			// can only be older than it: left by an earlier batch of the
			// same id, or in a results stream made anew under this
			// coordinator. Read from where the batch's count is.
			d.log.Warn().Uint64("floor", d.floor).Msg("hinted results not found after the batch's floor; reading from its start")
			d.floor = 0
			if _, err := d.c.resultsLastSeq(ctx); err != nil { // for the next batches' floors
				d.log.Debug().Err(err).Msg("results stream info")
			}
		}
		if d.rereads <= 2 {
			d.readDue = true
			d.readStored(ctx)
			return
		}
		wait := min(time.Duration(1<<min(d.rereads-3, 7))*time.Millisecond, 100*time.Millisecond)
		if d.readTimer == nil {
			d.readTimer = time.NewTimer(wait)
		} else {
			d.readTimer.Reset(wait)
		}
		d.readLater = d.readTimer.C
		return
	}
	d.rereads = 0
}

// leaveWatch goes on with a consumer from last_seq.
func (d *driver) leaveWatch(ctx context.Context) {
	d.stopResults()
	d.hints, d.hinted, d.readLater = nil, nil, nil
	r := d.c.readResults(d.batch, d.st.LastSeq)
	select {
	case <-r.ready:
	case <-ctx.Done():
		r.stop()
		return
	}
	if r.err != nil {
		// Not reading at all: the driver fails and its lease runs out.
		d.log.Error().Err(r.err).Msg("results consumer")
	}
	d.resultsIn, d.stopResults = r.in, r.stop
}

// directGets makes batch direct-get requests and collects their replies on
// one inbox subscription per coordinator.
type directGets struct {
	nc     *nats.Conn
	prefix string
	sub    *nats.Subscription
	next   atomic.Uint64
	mu     sync.Mutex
	calls  map[string]*directCall
}

type directCall struct {
	replies chan *nats.Msg
	done    chan struct{} // closed when the read returns
}

func newDirectGets(nc *nats.Conn) (*directGets, error) {
	g := &directGets{nc: nc, prefix: nc.NewInbox() + ".", calls: map[string]*directCall{}}
	sub, err := nc.Subscribe(g.prefix+"*", func(m *nats.Msg) {
		g.mu.Lock()
		call := g.calls[m.Subject[len(g.prefix):]]
		g.mu.Unlock()
		if call != nil {
			// Never dropped: a reply missing in the middle would be a
			// result never counted.
			select {
			case call.replies <- m:
			case <-call.done:
			}
		}
	})
	if err != nil {
		return nil, err
	}
	g.sub = sub
	return g, nil
}

// directTimeout bounds each direct get.
const directTimeout = 5 * time.Second

// read calls fn with each message of stream on subject filter after
// sequence after, in stream order, until none is left.
func (g *directGets) read(ctx context.Context, stream, filter string, after uint64, fn func(resultMsg)) error {
	id := strconv.FormatUint(g.next.Add(1), 36)
	call := &directCall{replies: make(chan *nats.Msg, directBatch+2), done: make(chan struct{})}
	g.mu.Lock()
	g.calls[id] = call
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.calls, id)
		g.mu.Unlock()
		close(call.done)
	}()
	timer := time.NewTimer(directTimeout)
	defer timer.Stop()
	subject := "$JS.API.DIRECT.GET." + stream
	for {
		req := fmt.Appendf(nil, `{"seq":%d,"next_by_subj":%q,"batch":%d}`, after+1, filter, directBatch)
		if err := g.nc.PublishRequest(subject, g.prefix+id, req); err != nil {
			return err
		}
		timer.Reset(directTimeout)
		for got := 0; ; {
			var m *nats.Msg
			select {
			case m = <-call.replies:
			case <-timer.C:
				return errors.New("direct get: no reply")
			case <-ctx.Done():
				return ctx.Err()
			}
			switch status := m.Header.Get("Status"); status {
			case "":
				seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
				if err != nil || seq <= after {
					return fmt.Errorf("direct get: reply with sequence %q after %d", m.Header.Get(jetstream.SequenceHeader), after)
				}
				fn(resultMsg{subject: m.Header.Get(jetstream.SubjectHeader), data: m.Data, seq: seq})
				after = seq
				got++
				continue
			case "404": // nothing after `after`
				return nil
			case "204": // end of this batch of replies; more if some are pending
				if np, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64); np == 0 || got == 0 {
					return nil
				}
			default:
				return fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
			}
			break
		}
	}
}

func (g *directGets) close() {
	if g != nil && g.sub != nil {
		_ = g.sub.Unsubscribe()
	}
}
