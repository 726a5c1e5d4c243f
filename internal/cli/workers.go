package cli

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/worker"
)

func newWorkersCmd(g *globals) *cobra.Command {
	var (
		activity string
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "workers",
		Short: "List live workers and the activities they serve",
		Long: fmt.Sprintf(`List the live workers: name, host, the activities each serves, items
running out of its concurrency, how long it has run, and its last heartbeat.

Every worker writes a heartbeat to the KV bucket FANOUT_WORKERS (or
<PREFIX>_WORKERS) every %s; a heartbeat expires %s after it was written,
so a worker that crashed drops off the list within %s, and one that
stopped cleanly at once.`, worker.PresenceInterval, worker.PresenceTTL, worker.PresenceTTL),
		Example: `  fanout workers
  fanout workers --activity sha256
  fanout workers --json | jq -r '.[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			ws, err := c.Workers(cmd.Context())
			if err != nil {
				return exitError(err)
			}
			if activity != "" {
				ws = slices.DeleteFunc(ws, func(w client.WorkerPresence) bool { return !slices.Contains(w.Activities, activity) })
			}
			if asJSON {
				if ws == nil {
					ws = []client.WorkerPresence{}
				}
				return writeJSON(g.out, ws)
			}
			if len(ws) == 0 {
				fmt.Fprintln(g.errOut, "no live workers")
				return nil
			}
			now := time.Now()
			t := newTable(g.out)
			t.row("NAME", "HOST", "ACTIVITIES", "IN USE", "UP", "LAST HEARTBEAT")
			for _, w := range ws {
				name := w.Name
				if w.Draining {
					name += " (draining)"
				}
				up := "-"
				if !w.StartedAt.IsZero() {
					up = now.Sub(w.StartedAt).Round(time.Second).String()
				}
				t.row(name, w.Host, strings.Join(w.Activities, ","), fmt.Sprintf("%d/%d", w.InUse, w.Concurrency), up, ago(now, w.UpdatedAt))
			}
			t.flush()
			return nil
		},
	}
	cmd.Flags().StringVarP(&activity, "activity", "a", "", "only workers serving this activity")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the workers' heartbeats as a JSON array")
	_ = cmd.RegisterFlagCompletionFunc("activity", g.completeActivities)
	return cmd
}
