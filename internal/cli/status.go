package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
)

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status BATCH",
		Short: "Show a batch's state: counts, percent, rate, ETA and options",
		Long: `Show a batch's state as its coordinator has it: status, items done out of
the total, succeeded, failed, in flight, rate, ETA, and the options in force.

A running batch whose activity has work queued and no live worker says
so: the batch waits until a worker serving the activity starts.

Exit code 0 when the batch completed with every item succeeded; 1 while it
runs, and when it ended with failed or not-run items or otherwise than
completed; 2 when there is no such batch. To wait for a batch in a script,
use fanout wait, whose exit code tells how the batch ended.`,
		Example: `  fanout status 6b0c2f6e-8a4b-4b55-9d3c-8f1d5c2e7a10
  fanout status nightly-2024-06-01 --json | jq .percent
  fanout wait "$id" && echo "every item succeeded"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			p, err := c.Status(cmd.Context(), args[0])
			if err != nil {
				return exitError(err)
			}
			note := ""
			if !p.Status.Final() {
				note = unservedNote(cmd.Context(), c, p.Activity)
			}
			if asJSON {
				if err := writeJSON(g.out, p); err != nil {
					return err
				}
				if note != "" {
					fmt.Fprintln(g.errOut, "fanout: "+note)
				}
			} else {
				printProgress(g.out, p)
				if note != "" {
					fmt.Fprintln(g.out, "warning    "+note)
				}
			}
			return progressOutcome(p)
		},
	}
	g.batchIDArg(cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the state as JSON")
	return cmd
}

// progressOutcome is the exit status of a batch's state: nil only when it
// completed with every item succeeded.
func progressOutcome(p *client.Progress) error {
	if p.Status == client.StatusCompleted && p.Failed == 0 && p.Done == p.Total {
		return nil
	}
	return &ExitError{Code: ExitItemsFailed, Err: errBatchNotSucceeded{p}}
}

type errBatchNotSucceeded struct{ p *client.Progress }

func (e errBatchNotSucceeded) Error() string {
	if !e.p.Status.Final() {
		return "batch " + e.p.BatchID + " is " + string(e.p.Status)
	}
	return "batch " + e.p.BatchID + " " + string(e.p.Status) + " without every item succeeding"
}
