package cli

import (
	"github.com/spf13/cobra"
)

func newCancelCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "cancel BATCH",
		Short: "Cancel a running batch",
		Long: `Cancel a running batch: its queued work is removed, items running finish
but are not waited for, and the batch ends canceled with the items it did
not count marked not run. Cancel answers once the batch has ended; a batch
that already ended is left as it is and its state printed.

Run fanout redrive on it later to run the items that did not succeed.`,
		Example: `  fanout cancel 6b0c2f6e-8a4b-4b55-9d3c-8f1d5c2e7a10
  fanout cancel "$id" --json | jq .status`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			p, err := c.Cancel(cmd.Context(), args[0])
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
	g.batchIDArg(cmd, true)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the state after the cancel as JSON")
	return cmd
}
