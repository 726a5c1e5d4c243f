package coordinator

import (
	"context"
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
// batch's start: the counts come from the checkpoint, and the messages up
// to it rebuild the results the aggregate carries. It is an ordered
// consumer, which the server feeds in stream order and the client restarts
// from where it was after a gap. Its creation is a round trip, made in the
// background while the batch's work goes out.
type resultsReader struct {
	// in yields the messages; it is closed, with err set, when the
	// consumer cannot be made.
	in      chan resultMsg
	err     error
	stopped chan struct{}
	stop    func() // safe to call twice
}

// readResults starts reading a batch's results stored after sequence
// after (0: all of them).
func (c *Coordinator) readResults(batch string, after uint64) *resultsReader {
	r := &resultsReader{in: make(chan resultMsg, 1024), stopped: make(chan struct{})}
	r.stop = sync.OnceFunc(func() { close(r.stopped) })
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{c.names.ResultBatchFilter(batch)}, InactiveThreshold: topology.ReaderIdle}
	if after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	go func() {
		if err := c.consumeResults(r, cfg); err != nil {
			r.err = fmt.Errorf("results consumer: %w", err)
			close(r.in) // nothing sends on it
		}
	}()
	return r
}

// consumeResults makes the reader's consumer and returns once it runs;
// the consumer is deleted when the reader stops.
func (c *Coordinator) consumeResults(r *resultsReader, cfg jetstream.OrderedConsumerConfig) error {
	ctx, cancel := context.WithTimeout(c.runCtx, 30*time.Second)
	defer cancel()
	cons, err := c.stores.Results.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		select {
		case r.in <- resultMsg{subject: m.Subject(), data: m.Data(), seq: meta.Sequence.Stream, pending: meta.NumPending}:
		case <-r.stopped:
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		c.log.Debug().Err(err).Strs("filter", cfg.FilterSubjects).Msg("results consumer")
	}))
	if err != nil {
		return err
	}
	go func() {
		<-r.stopped
		cc.Stop()
		// Deleted at once rather than left to its inactive threshold: a
		// stream holds 1,000 consumers at most by default, and one batch
		// after another would reach that.
		if info := cons.CachedInfo(); info != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = c.stores.Results.DeleteConsumer(ctx, info.Name)
		}
	}()
	return nil
}
