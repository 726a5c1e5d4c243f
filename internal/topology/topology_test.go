package topology_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/internal/topology"
)

// A coordinator and workers started together on a new server all create
// the streams at once, the coordinator with its descriptions, the workers
// without; none may fail ("stream name already in use" was seen when a
// worker's create lost the race to the coordinator's).
func TestCoordinatorAndWorkersCreateStreamsTogether(t *testing.T) {
	env := testenv.Server(t)
	js, err := jetstream.New(env.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for round := range 15 {
		n := messages.MustNames(fmt.Sprintf("race%d", round))
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		wg.Go(func() {
			if _, err := topology.Ensure(ctx, js, n, topology.Config{Update: true}); err != nil {
				errs <- fmt.Errorf("coordinator: %w", err)
			}
		})
		for range 4 {
			wg.Go(func() {
				if _, err := topology.EnsureWorker(ctx, js, n, topology.Config{}); err != nil {
					errs <- fmt.Errorf("worker: %w", err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// The results stream holds a consumer per running batch: more than the
// server's default limit of 1,000 consumers per stream.
func TestResultsStreamHoldsAReaderPerBatch(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	js, err := jetstream.New(env.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := messages.MustNames("")
	stores, err := topology.Ensure(ctx, js, n, topology.Config{Update: true})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1_100)
	for g := range 10 {
		wg.Go(func() {
			for i := g; i < 1_100; i += 10 {
				if _, err := stores.Results.CreateConsumer(ctx, jetstream.ConsumerConfig{FilterSubject: n.ResultBatchFilter(fmt.Sprintf("b%d", i))}); err != nil {
					errs <- fmt.Errorf("consumer %d: %w", i+1, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
