package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
)

func newWaitCmd(g *globals) *cobra.Command {
	var (
		asJSON  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait BATCH",
		Short: "Wait for a batch to end; the exit code tells how it ended",
		Long: `Wait, without showing progress, until a batch ends, then print its
aggregate (a table, or JSON with --json). For scripts: the exit code is 0
when every item succeeded, 1 when some failed, were not run, or the batch
ended otherwise than completed, 2 when there is no such batch, 3 when NATS
or the coordinators cannot be reached, 4 when --timeout passed first (the
batch goes on), 130 when interrupted.`,
		Example: `  id=$(fanout submit -a sha256 items.json)
  fanout wait "$id" >/dev/null && echo "all items succeeded"
  fanout wait "$id" --timeout 10m --json | jq .succeeded`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			if _, err := c.Status(ctx, args[0]); err != nil {
				return g.waitError(cmd.Context(), ctx, args[0], err)
			}
			agg, err := c.Wait(ctx, args[0], nil)
			if err != nil {
				return g.waitError(cmd.Context(), ctx, args[0], err)
			}
			if asJSON {
				if err := writeJSON(g.out, agg); err != nil {
					return err
				}
			} else {
				printAggregate(g.out, agg)
			}
			return outcome(agg)
		},
	}
	g.batchIDArg(cmd, true)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the aggregate as JSON (results included) instead of a table")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up waiting after this long, with exit code 4 (default: wait as long as the batch runs)")
	return cmd
}

// ExitStillRunning is fanout wait's exit code when its --timeout passed
// before the batch ended.
const ExitStillRunning = 4

// waitError is the exit status of a wait that did not see the batch end:
// interrupted (parent ended by a signal), timed out, or failed.
func (g *globals) waitError(parent, ctx context.Context, batch string, err error) error {
	switch {
	case parent.Err() != nil:
		return &interruptedError{msg: fmt.Sprintf("stopped waiting; batch %s goes on: fanout wait %s", batch, batch)}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &ExitError{Code: ExitStillRunning, Err: fmt.Errorf("batch %s is still running (--timeout passed)", batch)}
	}
	return exitError(err)
}

// newPauseCmd makes fanout pause (pause true) and fanout resume.
func newPauseCmd(g *globals, pause bool) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pause BATCH",
		Short: "Pause a running batch: no new work goes out until fanout resume",
		Long: `Pause a running batch: the coordinator publishes none of its items that
are not out yet. Items already published (at most its max_in_flight) run
to their end and are counted; the rest wait, however long, until fanout
resume. A paused batch still ends by cancel, by its failure policy or at
its timeout. The state after the pause is printed.`,
		Example: `  fanout pause 6b0c2f6e-8a4b-4b55-9d3c-8f1d5c2e7a10
  fanout resume 6b0c2f6e-8a4b-4b55-9d3c-8f1d5c2e7a10`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			var p *client.Progress
			if pause {
				p, err = c.Pause(cmd.Context(), args[0])
			} else {
				p, err = c.Resume(cmd.Context(), args[0])
			}
			if err != nil {
				return exitError(err)
			}
			if asJSON {
				return writeJSON(g.out, p)
			}
			printProgress(g.out, p)
			return nil
		},
	}
	if !pause {
		cmd.Use = "resume BATCH"
		cmd.Short = "Resume a paused batch: its work goes out again"
		cmd.Long = `Resume a batch paused with fanout pause: the coordinator publishes its
remaining items again, up to its max_in_flight. The state after the
resume is printed.`
		cmd.Example = `  fanout resume 6b0c2f6e-8a4b-4b55-9d3c-8f1d5c2e7a10`
	}
	g.batchIDArg(cmd, true)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the batch's state as JSON")
	return cmd
}

func newPingCmd(g *globals) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "ping",
		Short: "Check that a coordinator answers; with --wait, wait until one does",
		Long: `Check that NATS can be reached and a fanout coordinator answers requests.
With --wait, try again until one does or the time passes: a script can
start "fanout dev &" and then "fanout ping --wait 60s" before it submits.

Exit code 0 when a coordinator answered, 3 otherwise.`,
		Example: `  fanout ping
  fanout dev & fanout ping --wait 60s && fanout submit -a sha256 items.json --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			deadline := time.Now().Add(wait)
			for {
				err := g.ping(ctx)
				if err == nil {
					fmt.Fprintf(g.out, "a coordinator answers on %s\n", g.conn.URL)
					return nil
				}
				if ctx.Err() != nil {
					return &interruptedError{msg: "interrupted"}
				}
				if !time.Now().Before(deadline) {
					return err
				}
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "keep trying this long (e.g. 60s) before giving up")
	return cmd
}

// ping asks a coordinator for the status of a batch id: any answer, "not
// found" included, shows a coordinator is there.
func (g *globals) ping(ctx context.Context) error {
	c, closeConn, err := g.dial()
	if err != nil {
		return err
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = c.Status(ctx, "fanout-ping")
	var ce *client.Error
	if err == nil || errors.As(err, &ce) && ce.Code != client.CodeUnavailable {
		return nil
	}
	return exitError(err)
}
