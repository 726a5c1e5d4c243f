package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
)

// redrivenItems are the items of a finished batch that a redrive runs
// again, in item order: those that did not succeed.
func redrivenItems(ctx context.Context, c *client.Client, batch string) []int {
	var items []int
	for r, err := range c.Results(ctx, batch) {
		if err != nil {
			break
		}
		if !r.OK {
			items = append(items, r.Item)
		}
	}
	return items
}

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

Prints which items of the old batch run again (on standard error), then the
new batch's id, or with --wait its progress and aggregate, as fanout submit
does; the aggregate's failures name their item in the old batch too. --id
makes the redrive idempotent.`,
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
			activity := ""
			if st, err := c.Status(ctx, r.BatchID); err == nil {
				activity = st.Activity
			}
			if !wf.json {
				fmt.Fprintf(g.errOut, "fanout: batch %s runs items %s of batch %s again, as its items 0 to %d\n",
					r.BatchID, itemList(redrivenItems(ctx, c, args[0]), 20), args[0], r.Total-1)
			}
			return g.submitted(ctx, c, r, activity, wait, wf, fmt.Sprintf("batch %s: %d %s items", r.BatchID, r.Total, activity))
		},
	}
	g.batchIDArg(cmd, false)
	cmd.Flags().StringVar(&newID, "id", "", "idempotency key of the new batch (its id)")
	cmd.Flags().BoolVarP(&wait, "wait", "w", false, "wait for the new batch to end, showing progress, and print its aggregate")
	wf.register(cmd)
	return cmd
}
