// Command validation validates customer records with fanout batches and
// shows partial failure with a tolerated-failure threshold. Activity
// "validate" checks one record per item and fails invalid ones; both
// batches set tolerated_failure_percent 10. Run 1 has 3 bad records of 40
// (7.5%): the batch completes, and its invalid records are failed items,
// listed with what is wrong with them. Run 2 has 8 bad records of 40 (20%):
// the batch ends "failed" as soon as more than 10% have failed, and the
// records after that are not run.
//
//	go run ./cmd/fanout dev &      # NATS, a coordinator and workers
//	go run ./examples/validation
//
// It connects to $NATS_URL (default nats://127.0.0.1:4222), serves the
// activity with a worker of its own, and exits 0 when both runs end as
// described.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/examples/validation/validation"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "validation:", err)
		}
		os.Exit(1)
	}
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func run(ctx context.Context, args []string, out io.Writer) ([]*client.Aggregate, error) {
	fs := flag.NewFlagSet("validation", flag.ContinueOnError)
	server := fs.String("server", env("NATS_URL", nats.DefaultURL), "NATS server URL ($NATS_URL)")
	prefix := fs.String("prefix", env("FANOUT_PREFIX", "fanout"), "subject prefix of the fanout deployment ($FANOUT_PREFIX)")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	nc, err := nats.Connect(*server, nats.Name("fanout example: validation"))
	if err != nil {
		return nil, fmt.Errorf("connect to %s (is `go run ./cmd/fanout dev` running?): %w", *server, err)
	}
	defer nc.Close()

	batches := validation.Demo()
	aggs, err := validation.Run(ctx, nc, *prefix, batches)
	if err != nil {
		return aggs, err
	}
	for i, agg := range aggs {
		b := batches[i]
		fmt.Fprintf(out, "run %d, %s: %d records, %d invalid, tolerated_failure_percent %g", i+1, b.Title, len(b.Records), len(b.Bad), validation.TolerancePercent)
		if b.MaxInFlight > 0 {
			fmt.Fprintf(out, ", max_in_flight %d", b.MaxInFlight)
		}
		fmt.Fprintf(out, "\n  batch %s: %s", agg.BatchID, agg.Status)
		if agg.Reason != "" {
			fmt.Fprintf(out, " (%s)", agg.Reason)
		}
		fmt.Fprintf(out, "\n  %d valid, %d invalid (%.1f%% of %d)", agg.Succeeded, agg.Failed, float64(agg.Failed)*100/float64(agg.Total), agg.Total)
		if agg.NotRun > 0 {
			fmt.Fprintf(out, ", %d not run", agg.NotRun)
		}
		fmt.Fprintln(out)
		for _, r := range agg.Results {
			if !r.OK && !r.NotRun {
				fmt.Fprintf(out, "    item %2d: %s\n", r.Item, r.Error)
			}
		}
	}
	if err := expected(batches, aggs); err != nil {
		return aggs, err
	}
	fmt.Fprintln(out, "as expected: the few invalid records were tolerated; too many failed the batch")
	return aggs, nil
}

// expected checks the outcome the example is written to show.
func expected(batches []validation.Batch, aggs []*client.Aggregate) error {
	if len(aggs) != 2 {
		return fmt.Errorf("%d runs, want 2", len(aggs))
	}
	if a := aggs[0]; a.Status != client.StatusCompleted || a.Failed != len(batches[0].Bad) {
		return fmt.Errorf("run 1: %s with %d invalid, want completed with %d", a.Status, a.Failed, len(batches[0].Bad))
	}
	if a := aggs[1]; a.Status != client.StatusFailed || !strings.Contains(a.Reason, "tolerated_failure_percent") {
		return fmt.Errorf("run 2: %s (%s), want failed by tolerated_failure_percent", a.Status, a.Reason)
	}
	return nil
}
