// Package cli is the fanout command-line tool.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel"

	"github.com/fanoutdev/fanout/internal/config"
	"github.com/fanoutdev/fanout/internal/tracing/export"
)

// Exit codes scripts can rely on.
const (
	ExitOK          = 0 // every item succeeded
	ExitItemsFailed = 1 // some items failed, or the batch did not complete
	ExitUsage       = 2 // bad arguments or a refused request
	ExitConnect     = 3 // NATS or the coordinators could not be reached
	// ExitInterrupted: the command stopped at Ctrl-C (SIGINT), 128 + 2 as
	// shells report it; SIGTERM gives 143.
	ExitInterrupted = 130
)

// ExitError carries an exit code out of a command.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

type globals struct {
	conn    config.Connection
	logging config.Logging
	in      io.Reader
	out     io.Writer
	errOut  io.Writer
	// tracing exports spans when the OTEL_* variables ask for it (nil:
	// off): the client's and, in dev and demo, the coordinator's and the
	// workers'.
	tracing *export.Tracing
}

// Execute runs the CLI with args and returns the process exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return execute(ctx, args, os.Stdin, stdout, stderr)
}

// execute is Execute reading standard input from stdin.
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{in: stdin, out: stdout, errOut: stderr}
	root := &cobra.Command{
		Use:   "fanout",
		Short: "Fan-out/fan-in batches on NATS JetStream",
		Long: `fanout runs one activity per item of a batch on a pool of workers and
publishes one exact aggregate when the batch ends.

Try it with nothing installed but Go:
  fanout demo            run a demo batch on an all-in-one local deployment
  fanout dev             run that deployment and keep it up for your own batches

Then, against it or any deployment (--server, or $NATS_URL):
  fanout submit --activity sha256 items.json --wait
  fanout ls
  fanout workers
  fanout ui              the web dashboard

Exit codes: 0 every item succeeded; 1 some items failed or the batch did not
complete; 2 bad arguments or input, or a request the coordinator refused;
3 NATS or a coordinator could not be reached; 130 interrupted (Ctrl-C; the
batch goes on: fanout watch or fanout wait picks it up again).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetContext(ctx)
	flags := config.NewFlags(root.PersistentFlags())
	g.conn.Register(flags)
	g.logging.Register(flags, "warn", "text")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if err := flags.Err(); err != nil {
			return &ExitError{Code: ExitUsage, Err: err}
		}
		if err := g.conn.Validate(); err != nil {
			return &ExitError{Code: ExitUsage, Err: err}
		}
		log, err := g.logging.Logger(g.errOut)
		if err != nil {
			return &ExitError{Code: ExitUsage, Err: err}
		}
		if g.tracing, err = export.Setup(ctx, "fanout", log); err != nil {
			return &ExitError{Code: ExitUsage, Err: err}
		}
		if tp := g.tracing.Provider(); tp != nil {
			otel.SetTracerProvider(tp) // the client's spans
		}
		return nil
	}
	root.AddCommand(newDevCmd(g), newDemoCmd(g), newBenchCmd(g))
	root.AddCommand(newSubmitCmd(g), newWatchCmd(g), newWaitCmd(g), newStatusCmd(g), newResultsCmd(g),
		newCancelCmd(g), newUpdateCmd(g), newPauseCmd(g, true), newPauseCmd(g, false), newRedriveCmd(g),
		newLsCmd(g), newWorkersCmd(g), newUICmd(g), newPingCmd(g), newConformanceCmd(g))
	root.SetFlagErrorFunc(suggestFlag)
	err := root.Execute()
	flushCtx, cancel := context.WithTimeout(context.Background(), export.ShutdownTimeout)
	_ = g.tracing.Shutdown(flushCtx)
	cancel()
	if err == nil {
		return ExitOK
	}
	var ie *interruptedError
	if errors.As(err, &ie) || (ctx.Err() != nil && errors.Is(err, context.Canceled)) {
		fmt.Fprintln(stderr, "fanout:", err)
		return interruptCode(ctx)
	}
	fmt.Fprintln(stderr, "fanout:", err)
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return ExitUsage
}

// Main is the whole of cmd/fanout.
func Main() {
	ctx, stop := signalContext()
	code := Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
