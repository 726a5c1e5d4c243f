package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
)

func newLsCmd(g *globals) *cobra.Command {
	var (
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List recent batches and their state, newest first",
		Long: `List recent batches, newest first: id, activity, status, items done out of
the total, failed items, and when each was created. Batches are kept for the
deployment's retention (7 days by default).

ls reads the batch-state KV bucket (FANOUT_BATCHES, or <PREFIX>_BATCHES)
directly rather than asking a coordinator, so its NATS user must be allowed
to read that bucket: the coordinator's user or an administrator's. The
least-privilege client role of docs/security.md may not, by design; with it
use fanout status for one batch.`,
		Example: `  fanout ls
  fanout ls --limit 100
  fanout ls --json | jq -r '.[] | select(.status == "running") | .batch_id'`,
		Aliases: []string{"list"},
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			batches, err := c.List(cmd.Context(), limit)
			if err != nil {
				return &ExitError{Code: ExitConnect, Err: fmt.Errorf("%w (fanout ls needs a NATS user that may read the batch-state bucket; see fanout ls --help)", err)}
			}
			if asJSON {
				if batches == nil {
					batches = []client.Progress{}
				}
				return writeJSON(g.out, batches)
			}
			if len(batches) == 0 {
				fmt.Fprintln(g.errOut, "no batches")
				return nil
			}
			t := newTable(g.out)
			t.row("ID", "ACTIVITY", "STATUS", "DONE/TOTAL", "FAILED", "CREATED")
			for _, b := range batches {
				t.row(b.BatchID, b.Activity, string(b.Status), fmt.Sprintf("%d/%d", b.Done, b.Total), strconv.Itoa(b.Failed), localTime(b.CreatedAt))
			}
			t.flush()
			return nil
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "show at most this many batches (0: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the batches' states as a JSON array")
	return cmd
}
