package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/config"
	"github.com/fanoutdev/fanout/internal/ui"
)

// uiFlags are the dashboard's settings, shared by fanout ui, dev and demo.
type uiFlags struct {
	listen   string
	token    string
	readOnly bool
}

func (u *uiFlags) register(cmd *cobra.Command, listenFlag, defaultListen, listenUsage string) {
	f := config.NewFlags(cmd.Flags())
	f.String(&u.listen, listenFlag, "FANOUT_UI_LISTEN", defaultListen, listenUsage)
	f.String(&u.token, "ui-token", "FANOUT_UI_TOKEN", "", "token the dashboard asks its visitors for (required, unless --read-only, to listen on an address other than loopback)")
	cmd.Flags().BoolVar(&u.readOnly, "read-only", config.Env("FANOUT_UI_READ_ONLY", "") == "1", "serve the dashboard without its actions (cancel, redrive, update) ($FANOUT_UI_READ_ONLY=1)")
}

// startUI serves the dashboard for c; it returns the server, or nil when
// the listen address is "off".
func (g *globals) startUI(ctx context.Context, c *client.Client, u *uiFlags) (*ui.Server, error) {
	if u.listen == "off" {
		return nil, nil
	}
	log, err := g.logging.Logger(g.errOut)
	if err != nil {
		return nil, usageError(err)
	}
	s, err := ui.New(ui.Config{Client: c, Listen: u.listen, Token: u.token, ReadOnly: u.readOnly, Logger: log})
	if err != nil {
		return nil, usageError(err)
	}
	if err := s.Start(ctx); err != nil {
		return nil, usageError(err)
	}
	return s, nil
}

func stopUI(s *ui.Server) {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Stop(ctx)
}

func newUICmd(g *globals) *cobra.Command {
	var u uiFlags
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the web dashboard",
		Long: `Serve the web dashboard: batches with their live progress, throughput and
item durations, failed items with their errors, workers and the work queued
per activity; cancel, redrive and change max_in_flight with a click.

It listens on loopback (` + ui.DefaultListen + `) unless told otherwise; any other
address needs --ui-token (visitors log in with it) or --read-only. Its NATS
user needs the ui role of docs/security.md: it reads the batch-state
bucket, the results and done streams, worker presence and the work stream's
consumers, and sends status, cancel, update and redrive requests.`,
		Example: `  fanout ui
  fanout ui --server nats://nats:4222 --user ui --password ... --listen 0.0.0.0:8480 --ui-token "$(openssl rand -hex 16)"
  fanout ui --listen 0.0.0.0:8480 --read-only`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if u.listen == "off" {
				return usagef("--listen off: fanout ui has nothing else to do; give an address such as %s", ui.DefaultListen)
			}
			c, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			s, err := g.startUI(cmd.Context(), c, &u)
			if err != nil {
				return err
			}
			defer stopUI(s)
			fmt.Fprintf(g.out, "fanout ui: dashboard at %s (NATS %s)\n", s.URL(), g.conn.URL)
			<-cmd.Context().Done()
			return nil
		},
	}
	u.register(cmd, "listen", ui.DefaultListen, "address the dashboard listens on")
	return cmd
}
