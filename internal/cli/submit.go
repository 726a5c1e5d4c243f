package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
)

// optionFlags are a batch's options as flags; only those given are sent,
// so the coordinator's defaults apply to the rest.
type optionFlags struct {
	maxInFlight, itemsPerMessage, maxAttempts int
	backoff                                   string
	itemTimeout, timeout                      time.Duration
	failurePolicy                             string
	toleratedFailures                         int
	toleratedPercent                          float64
}

func (o *optionFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.IntVar(&o.maxInFlight, "max-in-flight", 0, "items of the batch out with workers at once (default: auto, 256, or 64 groups once the coordinator packs the batch)")
	fs.IntVar(&o.itemsPerMessage, "items-per-message", 0, "items packed into one work message (default: auto, packed by the coordinator once the items prove fast; 1 never packs)")
	fs.IntVar(&o.maxAttempts, "max-attempts", 0, "attempts per item, the first included (default 3)")
	fs.StringVar(&o.backoff, "backoff", "", "delays before the 2nd, 3rd, ... attempt, comma separated; the last repeats (default 1s,5s,30s)")
	fs.DurationVar(&o.itemTimeout, "item-timeout", 0, "longest run of one attempt (default 5m)")
	fs.DurationVar(&o.timeout, "timeout", 0, "deadline of the whole batch; it then ends timed_out (default: the coordinator's --default-timeout, by default its retention)")
	fs.StringVar(&o.failurePolicy, "failure-policy", "", "continue (failed items are results) or fail_fast (the first failure ends the batch) (default continue)")
	fs.IntVar(&o.toleratedFailures, "tolerated-failures", 0, "end the batch failed when more items than this fail")
	fs.Float64Var(&o.toleratedPercent, "tolerated-failure-percent", 0, "end the batch failed when more than this percent of its items fail")
	_ = cmd.RegisterFlagCompletionFunc("failure-policy", fixedCompletion(string(client.FailureContinue), string(client.FailureFast)))
}

func (o *optionFlags) options(cmd *cobra.Command) (client.Options, error) {
	fs := cmd.Flags()
	opts := client.Options{
		MaxInFlight: o.maxInFlight, ItemsPerMessage: o.itemsPerMessage, MaxAttempts: o.maxAttempts,
		ItemTimeout: client.Duration(o.itemTimeout), Timeout: client.Duration(o.timeout),
		FailurePolicy: client.FailurePolicy(o.failurePolicy),
	}
	if o.backoff != "" {
		for _, part := range strings.Split(o.backoff, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(part))
			if err != nil {
				return opts, usagef("--backoff %q: give durations such as 1s,5s,30s", o.backoff)
			}
			opts.Backoff = append(opts.Backoff, client.Duration(d))
		}
	}
	if fs.Changed("tolerated-failures") {
		n := o.toleratedFailures
		opts.ToleratedFailures = &n
	}
	if fs.Changed("tolerated-failure-percent") {
		p := o.toleratedPercent
		opts.ToleratedFailurePercent = &p
	}
	return opts, nil
}

func newSubmitCmd(g *globals) *cobra.Command {
	var (
		req         client.BatchRequest
		opts        optionFlags
		wf          waitFlags
		wait        bool
		format      string
		source      string
		sourceInput string
		reduce      string
		reduceInput string
	)
	cmd := &cobra.Command{
		Use:   "submit --activity NAME [ITEMS_FILE | -]",
		Short: "Submit a batch: one activity run per item",
		Long: `Submit a batch of items; the activity runs once per item on the workers.

Items are any JSON values, read from ITEMS_FILE, or from standard input when
it is "-": a JSON array of items, or JSON Lines (one item per line; blank
lines are skipped). The format is guessed from the first character; set it
with --format when a JSON Lines file holds one array per line.

Without --wait, submit prints the batch id (the reply as JSON with --json)
and exits once the batch is stored: it runs whether or not anyone waits.
With --wait, it shows the batch's progress (a bar on a terminal, plain lines
otherwise, on standard error), then prints the aggregate as a table, or as
JSON with --json, and its exit code tells how the batch ended: 0 every item
succeeded, 1 some failed or the batch did not complete.

Options left out take the coordinator's defaults. --id makes the submit
idempotent: the same id again returns the batch already submitted.`,
		Example: `  # a JSON array of items
  echo '[{"data":"a"},{"data":"b"}]' > items.json
  fanout submit --activity sha256 items.json --wait

  # JSON Lines from another program; the batch id goes to a variable
  id=$(jq -c '.[]' items.json | fanout submit -a sha256 -)
  fanout watch "$id"

  # retry policy, a failure threshold and an idempotency key
  fanout submit -a fetch urls.jsonl --max-attempts 5 --backoff 2s,10s,1m \
    --item-timeout 30s --tolerated-failure-percent 5 --id nightly-2024-06-01

  # the items come from a source activity; a reduce activity combines the results
  fanout submit -a fetch --source list_urls --source-input '{"site":"example.org"}' \
    --reduce combine --wait --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Activity == "" {
				return usagef("--activity is required: the activity to run on each item")
			}
			var err error
			switch {
			case source != "" && len(args) > 0:
				return usagef("give items (%s) or --source, not both", args[0])
			case source != "":
				if req.Source, err = stepSpec("source", source, sourceInput); err != nil {
					return err
				}
			case len(args) == 0:
				return usagef("give a file of items (a JSON array, or JSON Lines), or - to read them from standard input")
			default:
				if req.Items, err = g.readItemsArg(args[0], format); err != nil {
					return usageError(err)
				}
			}
			if reduce != "" {
				if req.Reduce, err = stepSpec("reduce", reduce, reduceInput); err != nil {
					return err
				}
			} else if reduceInput != "" {
				return usagef("--reduce-input needs --reduce")
			}
			if req.Options, err = opts.options(cmd); err != nil {
				return err
			}

			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			ctx := cmd.Context()
			r, err := c.Submit(ctx, req)
			if err != nil {
				return exitError(err)
			}
			if r.Existing {
				fmt.Fprintf(g.errOut, "fanout: batch %s already existed (same --id); this is that batch, %s\n", r.BatchID, r.Status)
			}
			return g.submitted(ctx, c, r, req.Activity, wait, wf, fmt.Sprintf("batch %s: %d %s items", r.BatchID, r.Total, req.Activity))
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&req.Activity, "activity", "a", "", "activity to run on each item (required)")
	fs.StringVar(&req.ID, "id", "", "idempotency key, becomes the batch id: submitting it again returns the same batch")
	fs.StringVar(&format, "format", "auto", "format of the items: auto, json (an array) or jsonl (JSON Lines)")
	fs.StringVar(&source, "source", "", "activity run once first, whose output (a JSON array) is the item list, instead of items")
	fs.StringVar(&sourceInput, "source-input", "", "JSON input of the --source activity")
	fs.StringVar(&reduce, "reduce", "", "activity run once at the end on the aggregate; its output becomes the aggregate's output")
	fs.StringVar(&reduceInput, "reduce-input", "", "JSON input of the --reduce activity, besides the aggregate")
	fs.BoolVarP(&wait, "wait", "w", false, "wait for the batch to end, showing progress, and print its aggregate")
	opts.register(cmd)
	wf.register(cmd)
	_ = cmd.RegisterFlagCompletionFunc("activity", g.completeActivities)
	_ = cmd.RegisterFlagCompletionFunc("source", g.completeActivities)
	_ = cmd.RegisterFlagCompletionFunc("reduce", g.completeActivities)
	_ = cmd.RegisterFlagCompletionFunc("format", fixedCompletion("auto", "json", "jsonl"))
	return cmd
}

func stepSpec(flag, activity, input string) (*client.StepSpec, error) {
	s := &client.StepSpec{Activity: activity}
	if input != "" {
		if !json.Valid([]byte(input)) {
			return nil, usagef("--%s-input: not valid JSON: %s", flag, truncate(input, 80))
		}
		s.Input = json.RawMessage(input)
	}
	return s, nil
}

// readItemsArg reads the items of a file name, or of standard input for "-".
func (g *globals) readItemsArg(name, format string) ([]json.RawMessage, error) {
	var r io.Reader = g.in
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	items, err := readItems(r, format)
	if err != nil && name != "-" {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return items, err
}

// readItems reads a JSON array of items, or JSON Lines: one item per
// non-blank line. format is auto, json or jsonl.
func readItems(r io.Reader, format string) ([]json.RawMessage, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, errors.New("no items: the input is empty")
	}
	switch format {
	case "json":
		return readArray(data)
	case "jsonl":
		return readLines(data)
	case "auto":
		if data[0] == '[' {
			items, err := readArray(data)
			if err == nil {
				return items, nil
			}
			if first, rest, found := bytes.Cut(data, []byte("\n")); !found || !json.Valid(bytes.TrimSpace(first)) || len(bytes.TrimSpace(rest)) == 0 {
				return nil, err // not JSON Lines of arrays either
			}
		}
		return readLines(data)
	}
	return nil, fmt.Errorf("--format %q: use auto, json or jsonl", format)
}

func readArray(data []byte) ([]json.RawMessage, error) {
	var items []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&items); err != nil {
		return nil, fmt.Errorf("not a JSON array of items: %w", err)
	}
	if dec.InputOffset() != int64(len(data)) {
		return nil, errors.New("not a JSON array of items: there is more after the array")
	}
	if len(items) == 0 {
		return nil, errors.New("no items: the array is empty")
	}
	return items, nil
}

func readLines(data []byte) ([]json.RawMessage, error) {
	var items []json.RawMessage
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), len(data)+1)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) {
			return nil, fmt.Errorf("line %d: not a JSON value (JSON Lines: one item per line): %s", n, truncate(string(line), 80))
		}
		items = append(items, json.RawMessage(bytes.Clone(line)))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, errors.New("no items")
	}
	return items, nil
}
