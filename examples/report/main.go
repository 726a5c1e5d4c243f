// Command report generates a report with a fanout batch: "sections in
// parallel, then combine". Each region's section (statistics over generated
// sales data) is one item of activity "section"; the batch's reduce step,
// activity "combine", is given the aggregate and assembles the sections in
// item order into one Markdown report, which becomes the batch's output.
//
//	go run ./cmd/fanout dev &    # NATS, a coordinator and workers
//	go run ./examples/report     # prints the report
//
// It connects to $NATS_URL (default nats://127.0.0.1:4222), serves both
// activities with a worker of its own, submits, waits, prints the report
// and exits 0 when every section made it in.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fanoutdev/fanout/examples/report/report"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "report:", err)
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

func run(ctx context.Context, args []string, out io.Writer) (*report.Result, error) {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	server := fs.String("server", env("NATS_URL", nats.DefaultURL), "NATS server URL ($NATS_URL)")
	prefix := fs.String("prefix", env("FANOUT_PREFIX", "fanout"), "subject prefix of the fanout deployment ($FANOUT_PREFIX)")
	days := fs.Int("days", 90, "days of sales data per region")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	nc, err := nats.Connect(*server, nats.Name("fanout example: report"))
	if err != nil {
		return nil, fmt.Errorf("connect to %s (is `go run ./cmd/fanout dev` running?): %w", *server, err)
	}
	defer nc.Close()

	regions := report.Regions(*days)
	res, err := report.Run(ctx, nc, *prefix, regions)
	if err != nil {
		return res, err
	}
	agg := res.Aggregate
	fmt.Fprintf(out, "batch %s: %s, %d sections rendered (%d failed), combined by the reduce step, in %.0fms\n\n",
		agg.BatchID, agg.Status, agg.Succeeded, agg.Failed, agg.DurationMS)
	fmt.Fprint(out, res.Report.Markdown)
	if len(res.Report.Missing) > 0 {
		return res, fmt.Errorf("%d of %d sections missing", len(res.Report.Missing), len(regions))
	}
	return res, nil
}
