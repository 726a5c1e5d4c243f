package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/embedded"
)

// startLocal runs what `fanout dev` runs (an embedded NATS server on a
// free port, a coordinator and two workers serving echo, sha256 and sleep)
// and connects to it. In production, connect to your NATS servers instead:
// nats.Connect(url, credentials...).
func startLocal() (nc *nats.Conn, stop func(), err error) {
	dir, err := os.MkdirTemp("", "fanout-example-")
	if err != nil {
		return nil, nil, err
	}
	stack, err := embedded.StartStack(context.Background(), embedded.StackConfig{DataDir: dir, Port: 0, Workers: 2, Logger: zerolog.Nop()})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	nc, err = nats.Connect(stack.URL)
	if err != nil {
		stack.Stop(context.Background())
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return nc, func() {
		nc.Close()
		stack.Stop(context.Background())
		os.RemoveAll(dir)
	}, nil
}

// Submit a batch, wait for its aggregate while progress events arrive,
// and read the per-item results in item order.
func Example() {
	nc, stop, err := startLocal()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := client.New(nc)
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := c.Submit(ctx, client.BatchRequest{
		Activity: "sha256",
		Items:    []json.RawMessage{[]byte(`{"data":"a"}`), []byte(`{"data":"b"}`), []byte(`{}`)},
		Options:  client.Options{MaxAttempts: 2},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("submitted", r.Total, "items")
	agg, err := c.Wait(ctx, r.BatchID, func(p client.Progress) { /* p.Percent, p.RatePerSec, p.ETAMS... */ })
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %d succeeded, %d failed\n", agg.Status, agg.Succeeded, agg.Failed)
	for _, res := range agg.Results {
		if res.OK {
			fmt.Println(res.Item, string(res.Output))
		} else {
			fmt.Println(res.Item, "failed:", res.Error)
		}
	}
	// Output:
	// submitted 3 items
	// completed: 2 succeeded, 1 failed
	// 0 {"sha256":"ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"}
	// 1 {"sha256":"3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"}
	// 2 failed: input: "data" (a string) is required
}

// Results iterates over a batch's results in item order, waiting for the
// batch to end first; a batch of any size is read in constant memory.
func ExampleClient_Results() {
	nc, stop, err := startLocal()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _ := client.New(nc)

	r, err := c.Submit(ctx, client.BatchRequest{
		ID:       "nightly-report", // an idempotency key: submitting it again returns this batch
		Activity: "sleep",
		Items:    []json.RawMessage{[]byte(`{"ms":30}`), []byte(`{"ms":10,"fail":"disk full"}`), []byte(`{"ms":20}`)},
		Options:  client.Options{MaxAttempts: 1},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for res, err := range c.Results(ctx, r.BatchID) {
		if err != nil {
			fmt.Println(err)
			return
		}
		if res.OK {
			fmt.Println(res.Item, "ok", string(res.Output))
		} else {
			fmt.Println(res.Item, "failed:", res.Error)
		}
	}

	// A batch that does not exist is an *client.Error with a code.
	for _, err := range c.Results(ctx, "no-such-batch") {
		var ce *client.Error
		fmt.Println(errors.As(err, &ce) && ce.Code == client.CodeNotFound)
	}
	// Output:
	// 0 ok {"slept_ms":30}
	// 1 failed: disk full
	// 2 ok {"slept_ms":20}
	// true
}

// Status reads a batch's progress; Update changes its window while it
// runs; Cancel ends it.
func ExampleClient_Cancel() {
	nc, stop, err := startLocal()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _ := client.New(nc)

	items := make([]json.RawMessage, 50)
	for i := range items {
		items[i] = json.RawMessage(`{"ms":100}`)
	}
	r, err := c.Submit(ctx, client.BatchRequest{Activity: "sleep", Items: items, Options: client.Options{MaxInFlight: 1}})
	if err != nil {
		fmt.Println(err)
		return
	}
	p, _ := c.Status(ctx, r.BatchID)
	fmt.Println(p.Status, p.Total)
	two := 2
	p, _ = c.Update(ctx, r.BatchID, client.OptionsUpdate{MaxInFlight: &two})
	fmt.Println("max_in_flight", p.Options.MaxInFlight)
	p, _ = c.Cancel(ctx, r.BatchID)
	fmt.Println(p.Status)
	agg, _ := c.Wait(ctx, r.BatchID, nil)
	fmt.Println(agg.Status, agg.Succeeded+agg.Failed+agg.NotRun == agg.Total)
	// Output:
	// running 50
	// max_in_flight 2
	// canceled
	// canceled true
}

// Workers lists the live workers, from the heartbeats they write.
func ExampleClient_Workers() {
	nc, stop, err := startLocal()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _ := client.New(nc)

	workers, err := c.Workers(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, w := range workers {
		fmt.Println(w.Name, w.Activities, w.Concurrency)
	}
	// Output:
	// dev-worker-1 [echo sha256 sleep] 16
	// dev-worker-2 [echo sha256 sleep] 16
}
