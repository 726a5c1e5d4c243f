package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/embedded"
	"github.com/fanoutdev/fanout/worker"
)

type greetInput struct {
	Name string `json:"name"`
}

type greetOutput struct {
	Greeting string `json:"greeting"`
}

// A worker serving one typed activity; a client fans a batch out to it and
// reads the aggregate, results in item order. A permanent error fails its
// item at once; the batch still completes.
func Example() {
	// In production the NATS server and the coordinator run on their own
	// (cmd/coordinator); here both run in-process.
	dir, _ := os.MkdirTemp("", "fanout-example")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Options{StoreDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Stop()
	nc, err := srv.Connect()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	coord, _ := coordinator.New(coordinator.Config{Conn: nc})
	if err := coord.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer coord.Stop(ctx)

	w, _ := worker.New(nc)
	worker.Handle(w, "greet", func(ctx context.Context, in greetInput) (greetOutput, error) {
		if strings.TrimSpace(in.Name) == "" {
			return greetOutput{}, worker.Permanent(errors.New("name is required"))
		}
		return greetOutput{Greeting: "Hello, " + in.Name}, nil
	})
	if err := w.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer w.Stop(ctx)

	c, _ := client.New(nc)
	r, err := c.Submit(ctx, client.BatchRequest{
		Activity: "greet",
		Items:    []json.RawMessage{[]byte(`{"name":"Ada"}`), []byte(`{"name":""}`), []byte(`{"name":"Grace"}`)},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	agg, err := c.Wait(ctx, r.BatchID, nil)
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
	// completed: 2 succeeded, 1 failed
	// 0 {"greeting":"Hello, Ada"}
	// 1 failed: name is required
	// 2 {"greeting":"Hello, Grace"}
}
