package config_test

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/fanoutdev/fanout/internal/config"
)

// --js-domain and NATS_JS_DOMAIN set the JetStream domain, the flag over
// the variable; a domain that is not one subject token is refused before
// connecting.
func TestJetStreamDomain(t *testing.T) {
	parse := func(args ...string) (config.Connection, error) {
		var c config.Connection
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		f := config.NewFlags(fs)
		c.Register(f)
		if err := f.Parse(fs, args); err != nil {
			return c, err
		}
		return c, c.Validate()
	}
	t.Setenv("NATS_JS_DOMAIN", "from_env")
	if c, err := parse(); err != nil || c.JSDomain != "from_env" {
		t.Fatalf("from the variable: %q, %v", c.JSDomain, err)
	}
	if c, err := parse("--js-domain", "fanout"); err != nil || c.JSDomain != "fanout" {
		t.Fatalf("from the flag: %q, %v", c.JSDomain, err)
	}
	for _, bad := range []string{"a.b", "a b", "*", ">"} {
		if _, err := parse("--js-domain", bad); err == nil {
			t.Errorf("domain %q accepted", bad)
		}
	}
}

// Text logs carry no colour codes when they do not go to a terminal (a
// file, a pipe, a buffer).
func TestTextLogsWithoutTerminalHaveNoColour(t *testing.T) {
	var buf bytes.Buffer
	l := config.Logging{Level: "info", Format: "text"}
	log, err := l.Logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Warn().Str("batch_id", "b").Msg("hello")
	if strings.Contains(buf.String(), "\x1b[") || !strings.Contains(buf.String(), "batch_id=b") {
		t.Errorf("text log to a buffer: %q", buf.String())
	}
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if log, err = l.Logger(f); err != nil {
		t.Fatal(err)
	}
	log.Error().Msg("to a file")
	b, _ := os.ReadFile(f.Name())
	if strings.Contains(string(b), "\x1b[") || !strings.Contains(string(b), "to a file") {
		t.Errorf("text log to a file: %q", b)
	}
}
