package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
)

// dial connects with the global connection flags and returns a client and
// the function that closes its connection.
func (g *globals) dial() (*client.Client, func(), error) {
	log, err := g.logging.Logger(g.errOut)
	if err != nil {
		return nil, nil, usageError(err)
	}
	nc, err := g.conn.Connect("fanout cli", log)
	if err != nil {
		return nil, nil, &ExitError{Code: ExitConnect, Err: err}
	}
	opts := []client.Option{client.WithPrefix(g.conn.Prefix), client.WithLogger(log)}
	if g.conn.JSDomain != "" {
		opts = append(opts, client.WithJetStreamDomain(g.conn.JSDomain))
	}
	c, err := client.New(nc, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, usageError(err)
	}
	return c, nc.Close, nil
}

func usageError(err error) error { return &ExitError{Code: ExitUsage, Err: err} }

func usagef(format string, args ...any) error { return usageError(fmt.Errorf(format, args...)) }

// exitError gives err the exit code scripts expect: 2 for a request the
// coordinator refused (except "unavailable", which is 3) and for input too
// large to send, 3 when no coordinator answers or NATS / JetStream cannot
// be reached, 1 when the command was interrupted.
func exitError(err error) error {
	if err == nil {
		return nil
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return err
	}
	var ce *client.Error
	switch {
	case errors.As(err, &ce):
		if ce.Code == client.CodeUnavailable {
			return &ExitError{Code: ExitConnect, Err: err}
		}
		return &ExitError{Code: ExitUsage, Err: err}
	case errors.Is(err, client.ErrNoCoordinator):
		return &ExitError{Code: ExitConnect, Err: err}
	case errors.Is(err, nats.ErrMaxPayload):
		return &ExitError{Code: ExitUsage, Err: fmt.Errorf("%w: the request is larger than the server's max_payload; split the batch, or pass large items by reference", err)}
	case errors.Is(err, context.Canceled):
		return &interruptedError{msg: "interrupted"}
	default:
		return &ExitError{Code: ExitConnect, Err: err}
	}
}

// interruptedError ends a command stopped by a signal (Ctrl-C): its exit
// code is the shell's for that signal (130 for SIGINT), and its message
// says how to go on.
type interruptedError struct{ msg string }

func (e *interruptedError) Error() string { return e.msg }

// batchIDArg is the Args check and completion of commands taking one batch
// id; running: complete only running batches' ids.
func (g *globals) batchIDArg(cmd *cobra.Command, running bool) {
	cmd.Args = func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usagef("give one batch id (see fanout ls)")
		}
		return nil
	}
	cmd.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return g.completeBatches(running), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeBatches offers the ids of recent batches (running ones only, if
// running), newest first, each with its activity and status. A user who
// may not read the batch-state bucket gets none.
func (g *globals) completeBatches(running bool) []string {
	c, closeConn, err := g.dial()
	if err != nil {
		return nil
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	q := client.ListQuery{Limit: 50}
	if running {
		q.Status = client.StatusRunning
	}
	page, err := c.ListPage(ctx, q)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(page.Batches))
	for _, b := range page.Batches {
		out = append(out, b.BatchID+"\t"+b.Activity+", "+string(b.Status))
	}
	return out
}

// outcome is the exit status of a finished batch: nil when every item
// succeeded, exit code 1 otherwise.
func outcome(agg *client.Aggregate) error {
	if agg.Status == client.StatusCompleted && agg.Failed == 0 && agg.NotRun == 0 {
		return nil
	}
	msg := fmt.Sprintf("batch %s %s: %d of %d items failed", agg.BatchID, agg.Status, agg.Failed, agg.Total)
	if agg.NotRun > 0 {
		msg += fmt.Sprintf(", %d not run", agg.NotRun)
	}
	if agg.Reason != "" {
		msg += " (" + agg.Reason + ")"
	}
	return &ExitError{Code: ExitItemsFailed, Err: errors.New(msg)}
}

// completeActivities offers the activities live workers serve.
func (g *globals) completeActivities(_ *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	c, closeConn, err := g.dial()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ws, err := c.Workers(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	seen := map[string]bool{}
	var out []string
	for _, w := range ws {
		for _, a := range w.Activities {
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func fixedCompletion(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}
