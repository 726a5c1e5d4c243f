package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/topology"
)

// resultMsg is a message read from the results stream: its subject, body,
// stream sequence, and how many of the batch's messages were stored after
// it when it was read.
type resultMsg struct {
	subject string
	data    []byte
	seq     uint64
	pending uint64
}

// resultsReader yields a batch's messages in the results stream (item
// results, step results, unpack requests) in stream order, from the
// stream's start: counts come from the checkpoint, and the messages up to
// it rebuild the results the aggregate carries. It is an ordered consumer,
// which the server feeds in stream order and the client restarts from
// where it was after a gap.
type resultsReader struct {
	// in yields the messages; it is closed, with err set, when the
	// consumer cannot be made.
	in   chan resultMsg
	err  error
	stop func() // safe to call twice
}

// readResults starts reading a batch's results. The consumer's creation
// is a round trip, done in the background: the caller publishes the
// batch's work meanwhile.
func (c *Coordinator) readResults(batch string) *resultsReader {
	r := &resultsReader{in: make(chan resultMsg, 1024)}
	stopped := make(chan struct{})
	var mu sync.Mutex
	var cc jetstream.ConsumeContext
	r.stop = sync.OnceFunc(func() {
		close(stopped)
		mu.Lock()
		defer mu.Unlock()
		if cc != nil {
			cc.Stop()
		}
	})
	go func() {
		ctx, cancel := context.WithTimeout(c.runCtx, 30*time.Second)
		defer cancel()
		cons, err := c.stores.Results.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects:    []string{c.names.ResultBatchFilter(batch)},
			InactiveThreshold: topology.ReaderIdle,
		})
		if err != nil {
			r.fail(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		select {
		case <-stopped:
			r.fail(errors.New("results reader stopped"))
			return
		default:
		}
		cc, err = cons.Consume(func(m jetstream.Msg) {
			meta, err := m.Metadata()
			if err != nil {
				return
			}
			select {
			case r.in <- resultMsg{subject: m.Subject(), data: m.Data(), seq: meta.Sequence.Stream, pending: meta.NumPending}:
			case <-stopped:
			}
		}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Debug().Err(err).Str("batch_id", batch).Msg("results consumer")
		}))
		if err != nil {
			r.fail(err)
		}
	}()
	return r
}

// fail ends a reader whose consumer never ran (nothing sends on in).
func (r *resultsReader) fail(err error) {
	r.err = fmt.Errorf("results consumer: %w", err)
	close(r.in)
}
