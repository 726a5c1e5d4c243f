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
{"item":0,"ok":true,"output":...,"attempts":1,"worker":"w-1","duration_ms":0.4}
or {"item":1,"ok":false,"error":"...",...} (items the batch ended without
running have "not_run":true, and no attempts, worker or duration).
attempts is the attempt that made the result, worker its worker's name,
duration_ms how long that attempt ran.

Results are read from the batch's aggregate, or streamed from the object
store for batches too large for one message; attempts, worker and duration
from the stored result messages (for batches of up to 100,000 items). A
batch still running is waited for.

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
			total := g.noteRunning(ctx, c, args[0])
			out := bufio.NewWriterSize(g.out, 64*1024)
			defer out.Flush()
			enc := json.NewEncoder(out)
			notOK := 0
			var details map[int]resultDetail
			first := true
			for r, err := range c.Results(ctx, args[0]) {
				if first && err == nil {
					// The batch has ended: its stored results are all there.
					first = false
					details = g.resultDetails(ctx, c, args[0], total)
				}
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
				line := resultLine{ItemResult: r}
				if d, ok := details[r.Item]; ok {
					line.Attempts, line.Worker, line.DurationMS = d.attempts, d.worker, &d.durationMS
				}
				if err := enc.Encode(&line); err != nil {
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
	g.batchIDArg(cmd, false)
	cmd.Flags().BoolVar(&failed, "failed", false, "only the items that did not succeed (failed or not run)")
	return cmd
}

// noteRunning tells on standard error that a running batch is waited for,
// and returns the batch's item count (-1 if unknown).
func (g *globals) noteRunning(ctx context.Context, c *client.Client, batchID string) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p, err := c.Status(ctx, batchID)
	if err != nil {
		return -1
	}
	if !p.Status.Final() {
		fmt.Fprintf(g.errOut, "fanout: batch %s is %s (%d/%d done); waiting for it to end\n", batchID, p.Status, p.Done, p.Total)
	}
	return p.Total
}

// resultLine is a line of fanout results: the item's result in the
// aggregate, and what its stored result message says of the attempt.
type resultLine struct {
	client.ItemResult
	Attempts   int      `json:"attempts,omitempty"`
	Worker     string   `json:"worker,omitempty"`
	DurationMS *float64 `json:"duration_ms,omitempty"`
}

type resultDetail struct {
	attempts   int
	worker     string
	durationMS float64
}

// maxDetailed is the largest batch whose results' details (attempts,
// worker, duration) fanout results reads: they come from the results
// stream in the order they were stored, so they are held until printed.
const maxDetailed = 100_000

// resultDetails reads the attempts, worker and duration of each stored
// result of a finished batch of total items. It returns nil, saying why on
// standard error, when the batch is too large or the results stream cannot
// be read (the NATS user's permissions).
func (g *globals) resultDetails(ctx context.Context, c *client.Client, batchID string, total int) map[int]resultDetail {
	if total < 0 || total > maxDetailed {
		fmt.Fprintf(g.errOut, "fanout: attempts, worker and duration are left out for batches over %d items\n", maxDetailed)
		return nil
	}
	out := make(map[int]resultDetail, total)
	q := client.ResultsQuery{Limit: 1000}
	for {
		page, err := c.ResultsPage(ctx, batchID, q)
		if err != nil {
			fmt.Fprintf(g.errOut, "fanout: attempts, worker and duration left out: %v\n", err)
			return nil
		}
		for _, r := range page.Results {
			out[r.Item] = resultDetail{attempts: r.Attempts, worker: r.Worker, durationMS: r.DurationMS}
		}
		if page.End || len(page.Results) == 0 && page.Scanned == 0 {
			return out
		}
		q.AfterSeq = page.NextSeq
	}
}
