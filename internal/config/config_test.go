package config_test

import (
	"flag"
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
