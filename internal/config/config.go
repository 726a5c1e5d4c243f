// Package config reads the settings every fanout binary shares (NATS
// connection, credentials, prefix, logging) from flags and environment
// variables. A flag given on the command line wins over its variable.
package config

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/topology"
)

// Connection is how to reach NATS. The variables are the ones the nats
// command-line tool reads.
type Connection struct {
	URL      string // NATS_URL
	Creds    string // NATS_CREDS: a .creds file (JWT and nkey seed)
	NKey     string // NATS_NKEY: a file holding an nkey seed
	User     string // NATS_USER
	Password string // NATS_PASSWORD
	Token    string // NATS_TOKEN
	TLSCert  string // NATS_CERT
	TLSKey   string // NATS_KEY
	TLSCA    string // NATS_CA
	// InboxPrefix replaces "_INBOX" in reply subjects, so that a role's
	// permissions can allow its own replies only (NATS_INBOX_PREFIX).
	InboxPrefix string
	// JSDomain reaches fanout's streams through the JetStream API prefix
	// "$JS.<domain>.API": for workers and clients in their own accounts
	// (NATS_JS_DOMAIN; see docs/security.md).
	JSDomain string
	Prefix   string // FANOUT_PREFIX
}

// Logging chooses the log output.
type Logging struct {
	Level  string // FANOUT_LOG_LEVEL: debug, info, warn, error
	Format string // FANOUT_LOG_FORMAT: json or text
}

// Env returns the variable's value, or def when it is unset or empty.
func Env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// FlagSet is what the standard library's flag.FlagSet and pflag's (cobra's)
// have in common.
type FlagSet interface {
	StringVar(p *string, name, value, usage string)
	IntVar(p *int, name string, value int, usage string)
	DurationVar(p *time.Duration, name string, value time.Duration, usage string)
	BoolVar(p *bool, name string, value bool, usage string)
}

// Flags registers flags on a FlagSet, taking defaults from variables and
// recording parse errors of those variables.
type Flags struct {
	FS   FlagSet
	errs []string
}

// NewFlags wraps fs.
func NewFlags(fs FlagSet) *Flags { return &Flags{FS: fs} }

// Err reports variables that could not be parsed.
func (f *Flags) Err() error {
	if len(f.errs) > 0 {
		return fmt.Errorf("%s", strings.Join(f.errs, "; "))
	}
	return nil
}

// String registers a string flag with an environment variable.
func (f *Flags) String(p *string, name, env, def, usage string) {
	f.FS.StringVar(p, name, Env(env, def), usage+" ($"+env+")")
}

// Int registers an int flag with an environment variable.
func (f *Flags) Int(p *int, name, env string, def int, usage string) {
	v := def
	if s := Env(env, ""); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			f.errs = append(f.errs, fmt.Sprintf("$%s=%q: not a whole number", env, s))
		} else {
			v = n
		}
	}
	f.FS.IntVar(p, name, v, usage+" ($"+env+")")
}

// Duration registers a duration flag with an environment variable.
func (f *Flags) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	v := def
	if s := Env(env, ""); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			f.errs = append(f.errs, fmt.Sprintf("$%s=%q: not a duration such as 30s", env, s))
		} else {
			v = d
		}
	}
	f.FS.DurationVar(p, name, v, usage+" ($"+env+")")
}

// Parse parses args with a standard library FlagSet and reports bad
// variables and stray arguments.
func (f *Flags) Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		f.errs = append(f.errs, fmt.Sprintf("unexpected arguments: %s", strings.Join(fs.Args(), " ")))
	}
	return f.Err()
}

// Register adds the connection flags.
func (c *Connection) Register(f *Flags) {
	f.String(&c.URL, "server", "NATS_URL", nats.DefaultURL, "NATS server URL(s), comma separated")
	f.String(&c.Creds, "creds", "NATS_CREDS", "", "NATS credentials file")
	f.String(&c.NKey, "nkey", "NATS_NKEY", "", "file holding an nkey seed")
	f.String(&c.User, "user", "NATS_USER", "", "user name")
	f.String(&c.Password, "password", "NATS_PASSWORD", "", "password")
	f.String(&c.Token, "token", "NATS_TOKEN", "", "authentication token")
	f.String(&c.TLSCert, "tlscert", "NATS_CERT", "", "TLS client certificate file")
	f.String(&c.TLSKey, "tlskey", "NATS_KEY", "", "TLS client key file")
	f.String(&c.TLSCA, "tlsca", "NATS_CA", "", "TLS CA certificate file to verify the server")
	f.String(&c.InboxPrefix, "inbox-prefix", "NATS_INBOX_PREFIX", "", "prefix of this process's reply subjects instead of _INBOX (see docs/security.md)")
	f.String(&c.JSDomain, "js-domain", "NATS_JS_DOMAIN", "", "reach fanout's JetStream through the API prefix $JS.<domain>.API, as the accounts layout of docs/security.md has workers and clients do (default: the account's own JetStream)")
	f.String(&c.Prefix, "prefix", "FANOUT_PREFIX", messages.DefaultPrefix, "subject prefix of the fanout deployment")
}

// Validate checks what can be checked before connecting.
func (c *Connection) Validate() error {
	if _, err := messages.NewNames(c.Prefix); err != nil {
		return err
	}
	if c.JSDomain != "" {
		if err := topology.CheckDomain(c.JSDomain); err != nil {
			return err
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("TLS: give both a client certificate and its key, or neither")
	}
	return nil
}

// Options turns the connection settings into nats options.
func (c *Connection) Options(name string) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("nkey seed %s: %w", c.NKey, err)
		}
		opts = append(opts, o)
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	return opts, nil
}

// Connect connects with the settings.
func (c *Connection) Connect(name string, log zerolog.Logger) (*nats.Conn, error) {
	opts, err := c.LoggedOptions(name, log)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", c.URL, err)
	}
	return nc, nil
}

// LoggedOptions is Options plus handlers that log disconnects, reconnects
// and asynchronous errors (permission violations among them).
func (c *Connection) LoggedOptions(name string, log zerolog.Logger) ([]nats.Option, error) {
	opts, err := c.Options(name)
	if err != nil {
		return nil, err
	}
	return append(opts,
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: a close we asked for
				log.Warn().Err(err).Msg("disconnected from NATS; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS error")
		}),
	), nil
}

// Register adds the logging flags.
func (l *Logging) Register(f *Flags, level, format string) {
	f.String(&l.Level, "log-level", "FANOUT_LOG_LEVEL", level, "log level: debug, info, warn, error")
	f.String(&l.Format, "log-format", "FANOUT_LOG_FORMAT", format, "log format: json or text")
}

// Logger builds the logger, writing to w.
func (l *Logging) Logger(w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(strings.ToLower(l.Level))
	if err != nil || l.Level == "" {
		return zerolog.Nop(), fmt.Errorf("log level %q: use debug, info, warn or error", l.Level)
	}
	switch l.Format {
	case "json":
	case "text":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: !colour(w)}
	default:
		return zerolog.Nop(), fmt.Errorf("log format %q: use json or text", l.Format)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// colour reports whether text logs to w may have colour codes: only on a
// terminal, and not when NO_COLOR is set (no-color.org). A file or a pipe
// gets plain text.
func colour(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && os.Getenv("NO_COLOR") == ""
}

// Storage parses a storage name: it reports whether it means memory.
func Storage(s string) (memory bool, err error) {
	switch s {
	case "file":
		return false, nil
	case "memory":
		return true, nil
	}
	return false, fmt.Errorf("storage %q: use file or memory", s)
}

// ParseLimits parses "activity=n,activity=n".
func ParseLimits(s string) (map[string]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(val)
		if !ok || err != nil || n < 1 || !messages.ValidToken(name) {
			return nil, fmt.Errorf("limits %q: write activity=n pairs separated by commas, n at least 1", part)
		}
		out[name] = n
	}
	return out, nil
}
