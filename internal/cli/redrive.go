package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newRedriveCmd(g *globals) *cobra.Command {
	var (
		wf    waitFlags
		wait  bool
		newID string
	)
	cmd := &cobra.Command{
		Use:   "redrive BATCH",
		Short: "Run the failed and not-run items of a finished batch again, as a new batch",
		Long: `Run the items of a finished batch that failed or were not run again, as a
new batch with the same activity and options. Item i of the new batch is
item redrive_of.items[i] of the old one (see its aggregate).

Prints the new batch's id, or with --wait its progress and aggregate, as
fanout submit does. --id makes the redrive idempotent.`,
		Example: `  fanout redrive 6b0c2f6e-8a4b-4b55-9d3c-8f1d5c2e7a10
  fanout redrive "$id" --id "$id-retry-1" --wait`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			ctx := cmd.Context()
			r, err := c.Redrive(ctx, args[0], newID)
			if err != nil {
				return exitError(err)
			}
			return g.submitted(ctx, c, r, "", wait, wf, fmt.Sprintf("batch %s: %d items of %s again", r.BatchID, r.Total, args[0]))
		},
	}
	batchIDArg(cmd)
	cmd.Flags().StringVar(&newID, "id", "", "idempotency key of the new batch (its id)")
	cmd.Flags().BoolVarP(&wait, "wait", "w", false, "wait for the new batch to end, showing progress, and print its aggregate")
	wf.register(cmd)
	return cmd
}
