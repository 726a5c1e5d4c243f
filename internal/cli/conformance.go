package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/internal/conformance"
)

func newConformanceCmd(g *globals) *cobra.Command {
	var (
		activity string
		only     []string
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "conformance --activity NAME",
		Short: "Prove that a live worker, in any language, keeps the worker protocol",
		Long: `Drive a running worker through the worker protocol's cases and print a
pass/fail report: plain items, packed groups, an unpack request after a
lost group, retryable and permanent failures, attempts and idempotency
keys, heartbeats on a long item, inputs and outputs through the object
store (claim checks), a late duplicate result, a step, an unreadable
message.

The check acts as the coordinator of batches of its own: it publishes work
messages for --activity to the work stream and reads what the worker
stores. The worker under test must serve --activity with the conformance
handler (docs/protocol.md, "Proving a worker": workertest.Conformance in
Go), have registered it (its consumer exists), and be the activity's only
consumer of queued work: give the check an activity of its own. Run the
worker with a short ack wait (1s, say): the heartbeat case runs an item
for 2.5 ack waits. The check's NATS user needs the coordinator's
permissions (publish work, read results, use the object store).

Cases: ` + strings.Join(conformance.CaseNames(), ", ") + `.

Exit code 0 when every case passed, 1 when one failed, 2 when the check
could not start (no worker registered the activity, say), 3 when NATS
cannot be reached.`,
		Example: `  go run ./examples/rawworker --activity conformance --ack-wait 1s &
  fanout conformance --activity conformance
  fanout conformance --activity conformance --case unpack --case heartbeat`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if activity == "" {
				return usagef("--activity is required: the activity the worker under test serves with the conformance handler")
			}
			for _, c := range only {
				if !slices.Contains(conformance.CaseNames(), c) {
					return usagef("--case %q: no such case (cases: %s)", c, strings.Join(conformance.CaseNames(), ", "))
				}
			}
			log, err := g.logging.Logger(g.errOut)
			if err != nil {
				return usageError(err)
			}
			nc, err := g.conn.Connect("fanout conformance", log)
			if err != nil {
				return &ExitError{Code: ExitConnect, Err: err}
			}
			defer nc.Close()
			fmt.Fprintf(g.out, "conformance of the worker serving %q on %s\n", activity, g.conn.URL)
			rep, err := conformance.Run(cmd.Context(), conformance.Config{
				Conn: nc, Prefix: g.conn.Prefix, Activity: activity, CaseTimeout: timeout, Only: only, Progress: g.out,
			})
			if errors.Is(err, conformance.ErrSetup) {
				return usageError(err)
			}
			if err != nil {
				if cmd.Context().Err() != nil {
					return &interruptedError{msg: "interrupted"}
				}
				return &ExitError{Code: ExitConnect, Err: err}
			}
			fmt.Fprintf(g.out, "%d passed, %d failed\n", rep.Passed(), rep.Failed())
			if rep.Failed() > 0 {
				return &ExitError{Code: ExitItemsFailed, Err: fmt.Errorf("the worker serving %q failed %d of %d cases; see docs/protocol.md#writing-a-worker-in-any-language", activity, rep.Failed(), len(rep.Outcomes))}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&activity, "activity", "a", "", "activity the worker under test serves with the conformance handler (required)")
	cmd.Flags().StringSliceVar(&only, "case", nil, "run only this case (repeat for more)")
	cmd.Flags().DurationVar(&timeout, "case-timeout", 30*time.Second, "longest a case may take (the heartbeat case gets 3 ack waits more)")
	_ = cmd.RegisterFlagCompletionFunc("activity", g.completeActivities)
	_ = cmd.RegisterFlagCompletionFunc("case", fixedCompletion(conformance.CaseNames()...))
	return cmd
}
