package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/config"
	"github.com/fanoutdev/fanout/internal/embedded"
	"github.com/fanoutdev/fanout/internal/ui"
)

type devFlags struct {
	dataDir     string
	host        string
	port        int
	workers     int
	concurrency int
	ui          uiFlags
	flags       *config.Flags // for the errors of its variables
}

// register adds the flags; env is the prefix of the variables of --data
// and --port (FANOUT_DEV_DATA, FANOUT_DEV_PORT), or "" for none.
func (d *devFlags) register(cmd *cobra.Command, defaultDir string, defaultPort int, defaultUI, env string) {
	d.ui.register(cmd, "ui", defaultUI, "address the web dashboard listens on (off: none)")
	const dataUsage, portUsage = "JetStream data directory (kept between runs)", "port the embedded NATS server listens on (0: any free port)"
	d.flags = config.NewFlags(cmd.Flags())
	if env != "" {
		d.flags.String(&d.dataDir, "data", env+"DATA", defaultDir, dataUsage)
		d.flags.Int(&d.port, "port", env+"PORT", defaultPort, portUsage)
	} else {
		cmd.Flags().StringVar(&d.dataDir, "data", defaultDir, dataUsage)
		cmd.Flags().IntVar(&d.port, "port", defaultPort, portUsage)
	}
	cmd.Flags().StringVar(&d.host, "host", "127.0.0.1", "address the embedded NATS server listens on")
	cmd.Flags().IntVar(&d.workers, "workers", 4, "workers to run")
	cmd.Flags().IntVar(&d.concurrency, "concurrency", 16, "items each worker runs at once")
}

func (g *globals) startStack(ctx context.Context, d *devFlags) (*embedded.Stack, error) {
	log, err := g.logging.Logger(g.errOut)
	if err != nil {
		return nil, &ExitError{Code: ExitUsage, Err: err}
	}
	if err := os.MkdirAll(d.dataDir, 0o755); err != nil {
		return nil, &ExitError{Code: ExitUsage, Err: err}
	}
	stack, err := embedded.StartStack(ctx, embedded.StackConfig{
		DataDir: d.dataDir, Host: d.host, Port: d.port,
		Workers: d.workers, Concurrency: d.concurrency,
		Prefix: g.conn.Prefix, Logger: log, TracerProvider: g.tracing.Provider(),
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, &interruptedError{msg: "interrupted while starting"}
		}
		return nil, &ExitError{Code: ExitConnect, Err: err}
	}
	return stack, nil
}

// startStackUI serves the dashboard for a stack; nil when it is off.
func (g *globals) startStackUI(ctx context.Context, stack *embedded.Stack, d *devFlags) (*ui.Server, func(), error) {
	if d.ui.listen == "off" {
		return nil, func() {}, nil
	}
	nc, err := nats.Connect(stack.URL, nats.Name("fanout ui"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, nil, &ExitError{Code: ExitConnect, Err: err}
	}
	c, err := client.New(nc, client.WithPrefix(g.conn.Prefix))
	if err == nil {
		var s *ui.Server
		if s, err = g.startUI(ctx, c, &d.ui); err == nil {
			return s, func() { stopUI(s); nc.Close() }, nil
		}
	}
	nc.Close()
	return nil, nil, err
}

func newDevCmd(g *globals) *cobra.Command {
	var d devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run NATS, a coordinator and workers in this process",
		Long: `Run an embedded NATS server (JetStream on --data), a coordinator and
--workers workers in one process, until interrupted. Other clients can
connect to it: the nats tool, the fanout CLI, your own programs.

It prints "fanout dev: ready at nats://..." once batches can be submitted
("fanout ping --wait 60s" waits for that from another shell). A port
already taken fails at once: pick another with --port.`,
		Example: `  fanout dev
  nats req fanout.submit '{"activity":"sha256","items":[{"data":"a"},{"data":"b"}]}'
  fanout dev --port 4333 --workers 8 --data /tmp/fanout`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := d.flags.Err(); err != nil {
				return usageError(err)
			}
			stack, err := g.startStack(cmd.Context(), &d)
			if err != nil {
				return err
			}
			defer stack.Stop(context.Background())
			dash, stopDash, err := g.startStackUI(cmd.Context(), stack, &d)
			if err != nil {
				return err
			}
			defer stopDash()
			fmt.Fprintf(g.out, "fanout dev: NATS with JetStream at %s (data in %s), 1 coordinator, %d workers serving echo, sha256, sleep\n", stack.URL, d.dataDir, d.workers)
			if dash != nil {
				fmt.Fprintf(g.out, "dashboard: %s\n", dash.URL())
			}
			fmt.Fprintf(g.out, "try: nats --server %s req %s.submit '{\"activity\":\"sha256\",\"items\":[{\"data\":\"hello\"}]}'\n", stack.URL, g.conn.Prefix)
			fmt.Fprintf(g.out, "fanout dev: ready at %s; press Ctrl-C to stop\n", stack.URL)
			<-cmd.Context().Done()
			return nil
		},
	}
	d.register(cmd, "fanout-data", 4222, ui.DefaultListen, "FANOUT_DEV_")
	return cmd
}

func newDemoCmd(g *globals) *cobra.Command {
	var (
		d     devFlags
		items int
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a demo batch on an all-in-one local deployment",
		Long: `Start what "fanout dev" starts (on a free port, with a fresh data
directory), submit a batch of sha256 items, show its progress, check every
output and print the aggregate.`,
		Example: `  fanout demo
  fanout demo --items 100000 --workers 8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if items < 1 {
				return &ExitError{Code: ExitUsage, Err: fmt.Errorf("--items %d: must be at least 1", items)}
			}
			if d.dataDir == "" {
				dir, err := os.MkdirTemp("", "fanout-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				d.dataDir = dir
			}
			ctx := cmd.Context()
			stack, err := g.startStack(ctx, &d)
			if err != nil {
				return err
			}
			defer stack.Stop(context.Background())
			dash, stopDash, err := g.startStackUI(ctx, stack, &d)
			if err != nil {
				return err
			}
			defer stopDash()
			fmt.Fprintf(g.out, "fanout demo: NATS at %s, 1 coordinator, %d workers\n", stack.URL, d.workers)
			if dash != nil {
				fmt.Fprintf(g.out, "dashboard: %s (while the demo runs)\n", dash.URL())
			}
			return g.runDemo(ctx, stack.URL, items)
		},
	}
	d.register(cmd, "", 0, "127.0.0.1:0", "")
	cmd.Flags().IntVar(&items, "items", 1000, "sha256 items in the demo batch")
	return cmd
}

func (g *globals) runDemo(ctx context.Context, url string, n int) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return &ExitError{Code: ExitConnect, Err: err}
	}
	defer nc.Close()
	c, err := client.New(nc, client.WithPrefix(g.conn.Prefix))
	if err != nil {
		return err
	}
	inputs := make([]json.RawMessage, n)
	for i := range inputs {
		inputs[i], _ = json.Marshal(map[string]string{"data": fmt.Sprintf("demo item %d", i)})
	}
	r, err := c.Submit(ctx, client.BatchRequest{Activity: "sha256", Items: inputs})
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	fmt.Fprintf(g.out, "submitted batch %s: %d sha256 items\n", r.BatchID, r.Total)
	view := newProgressView(g.out, r.Total, "sha256", isTerminal(g.out))
	agg, err := c.Wait(ctx, r.BatchID, view.update)
	if err != nil {
		return &ExitError{Code: ExitConnect, Err: err}
	}
	view.finish(agg)
	printSummary(g.out, agg)
	wrong := 0
	for i, res := range agg.Results {
		var out struct{ SHA256 string }
		sum := sha256.Sum256([]byte(fmt.Sprintf("demo item %d", i)))
		if json.Unmarshal(res.Output, &out) != nil || out.SHA256 != hex.EncodeToString(sum[:]) {
			wrong++
		}
	}
	if wrong > 0 || agg.Status != client.StatusCompleted {
		return &ExitError{Code: ExitItemsFailed, Err: fmt.Errorf("%d of %d outputs wrong or missing", wrong, n)}
	}
	fmt.Fprintf(g.out, "checked    all %d outputs equal the sha256 of their input, in item order\n", n)
	return nil
}
