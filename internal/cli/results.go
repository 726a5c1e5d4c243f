package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
)

func newResultsCmd(g *globals) *cobra.Command {
	var failed bool
	cmd := &cobra.Command{
		Use:   "results BATCH",
		Short: "Print a batch's per-item results in item order, as JSON Lines",
		Long: `Print a batch's per-item results in item order, one JSON object per line:
{"item":0,"ok":true,"output":...} or {"item":1,"ok":false,"error":"..."}
(items the batch ended without running have "not_run":true).

Results are read from the batch's aggregate, or streamed from the object
store for batches too large for one message, so any size prints in constant
memory. A batch still running is waited for.

Exit code 0 when every item succeeded, 1 when some did not.`,
		Example: `  fanout results 6b0c2f6e-8a4b-4b55-9d3c-8f1d5c2e7a10 > results.jsonl
  fanout results "$id" --failed | jq -r '"\(.item): \(.error)"'
  fanout results "$id" | jq -c .output`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			ctx := cmd.Context()
			g.noteRunning(ctx, c, args[0])
			out := bufio.NewWriterSize(g.out, 64*1024)
			defer out.Flush()
			enc := json.NewEncoder(out)
			notOK := 0
			for r, err := range c.Results(ctx, args[0]) {
				if err != nil {
					_ = out.Flush()
					return exitError(err)
				}
				if r.OK {
					if failed {
						continue
					}
				} else {
					notOK++
				}
				if err := enc.Encode(&r); err != nil {
					return err
				}
			}
			if err := out.Flush(); err != nil {
				return err
			}
			if notOK > 0 {
				return &ExitError{Code: ExitItemsFailed, Err: fmt.Errorf("%d items of batch %s did not succeed", notOK, args[0])}
			}
			return nil
		},
	}
	batchIDArg(cmd)
	cmd.Flags().BoolVar(&failed, "failed", false, "only the items that did not succeed (failed or not run)")
	return cmd
}

// noteRunning tells on standard error that a running batch is waited for.
func (g *globals) noteRunning(ctx context.Context, c *client.Client, batchID string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if p, err := c.Status(ctx, batchID); err == nil && !p.Status.Final() {
		fmt.Fprintf(g.errOut, "fanout: batch %s is %s (%d/%d done); waiting for it to end\n", batchID, p.Status, p.Done, p.Total)
	}
}
