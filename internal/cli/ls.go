package cli

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
)

func newLsCmd(g *globals) *cobra.Command {
	var (
		limit    int
		asJSON   bool
		status   string
		activity string
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List recent batches and their state, newest first",
		Long: `List recent batches, newest first: id, activity, status, items done out of
the total, failed items, when each was created and how long it ran (so
far, for a running batch). --status and --activity keep only the batches
that match. Batches are kept for the deployment's retention (7 days by
default).

ls reads the batch-state KV bucket (FANOUT_BATCHES, or <PREFIX>_BATCHES)
directly rather than asking a coordinator, so its NATS user must be allowed
to read that bucket: the coordinator's user or an administrator's. The
least-privilege client role of docs/security.md may not, by design; with it
use fanout status for one batch.`,
		Example: `  fanout ls
  fanout ls --limit 100
  fanout ls --status failed --activity fetch
  fanout ls --json | jq -r '.[] | select(.status == "running") | .batch_id'`,
		Aliases: []string{"list"},
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			q := client.ListQuery{Limit: limit, Status: client.Status(status), Activity: activity}
			if limit == 0 {
				q.Limit = math.MaxInt32
			}
			page, err := c.ListPage(cmd.Context(), q)
			var ce *client.Error
			if errors.As(err, &ce) && ce.Code == client.CodeInvalidRequest {
				return usagef("--status %q: use running, completed, failed, canceled or timed_out", status)
			}
			if err != nil {
				return &ExitError{Code: ExitConnect, Err: fmt.Errorf("%w (fanout ls needs a NATS user that may read the batch-state bucket; see fanout ls --help)", err)}
			}
			batches := page.Batches
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
			now := time.Now()
			t := newTable(g.out)
			t.row("ID", "ACTIVITY", "STATUS", "DONE/TOTAL", "FAILED", "CREATED", "DURATION")
			for _, b := range batches {
				st := string(b.Status)
				if b.Paused {
					st += " (paused)"
				}
				t.row(b.BatchID, b.Activity, st, fmt.Sprintf("%d/%d", b.Done, b.Total), strconv.Itoa(b.Failed), localTime(b.CreatedAt), batchDuration(now, &b))
			}
			t.flush()
			return nil
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "show at most this many batches (0: all)")
	cmd.Flags().StringVar(&status, "status", "", "only batches with this status: running, completed, failed, canceled or timed_out")
	cmd.Flags().StringVarP(&activity, "activity", "a", "", "only batches of this activity")
	_ = cmd.RegisterFlagCompletionFunc("status", fixedCompletion("running", "completed", "failed", "canceled", "timed_out"))
	_ = cmd.RegisterFlagCompletionFunc("activity", g.completeActivities)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the batches' states as a JSON array")
	return cmd
}

// batchDuration is how long a batch ran: to its end, or to now while it
// runs.
func batchDuration(now time.Time, b *client.Progress) string {
	if b.CreatedAt.IsZero() {
		return "-"
	}
	end := now
	if !b.FinishedAt.IsZero() {
		end = b.FinishedAt
	}
	d := end.Sub(b.CreatedAt)
	if d >= time.Second {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Millisecond).String()
}
