package cli

import (
	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
)

func newUpdateCmd(g *globals) *cobra.Command {
	var (
		asJSON bool
		opts   optionFlags
	)
	cmd := &cobra.Command{
		Use:   "update BATCH [--max-in-flight N] [--failure-policy P] [--tolerated-failures N] [--tolerated-failure-percent P]",
		Short: "Change the window and failure thresholds of a running batch",
		Long: `Change options of a running batch: its window (--max-in-flight) and its
failure policy and thresholds. Options not given stay as they are. The
options now in force are printed.`,
		Example: `  fanout update 6b0c2f6e-8a4b-4b55-9d3c-8f1d5c2e7a10 --max-in-flight 32
  fanout update "$id" --failure-policy fail_fast
  fanout update "$id" --tolerated-failure-percent 10 --json | jq .options`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var u client.OptionsUpdate
			fs := cmd.Flags()
			if fs.Changed("max-in-flight") {
				u.MaxInFlight = &opts.maxInFlight
			}
			if fs.Changed("failure-policy") {
				p := client.FailurePolicy(opts.failurePolicy)
				u.FailurePolicy = &p
			}
			if fs.Changed("tolerated-failures") {
				u.ToleratedFailures = &opts.toleratedFailures
			}
			if fs.Changed("tolerated-failure-percent") {
				u.ToleratedFailurePercent = &opts.toleratedPercent
			}
			if u == (client.OptionsUpdate{}) {
				return usagef("nothing to change: give --max-in-flight, --failure-policy, --tolerated-failures or --tolerated-failure-percent")
			}
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			p, err := c.Update(cmd.Context(), args[0], u)
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
	fs := cmd.Flags()
	fs.IntVar(&opts.maxInFlight, "max-in-flight", 0, "items of the batch out with workers at once")
	fs.StringVar(&opts.failurePolicy, "failure-policy", "", "continue or fail_fast")
	fs.IntVar(&opts.toleratedFailures, "tolerated-failures", 0, "end the batch failed when more items than this fail")
	fs.Float64Var(&opts.toleratedPercent, "tolerated-failure-percent", 0, "end the batch failed when more than this percent of its items fail")
	_ = cmd.RegisterFlagCompletionFunc("failure-policy", fixedCompletion(string(client.FailureContinue), string(client.FailureFast)))
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the batch's state as JSON")
	return cmd
}
