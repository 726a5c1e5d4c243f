package security_test

import (
	"os"
	"strings"
	"testing"

	"github.com/fanoutdev/fanout/internal/security"
)

// passwordVar is the variable holding a role's password in the
// configurations of docs/security.md and deploy/nats/auth.conf (the
// environment of the NATS container, in compose).
func passwordVar(r security.Role) string {
	return "FANOUT_" + strings.ToUpper(string(r)) + "_PASSWORD"
}

// docsUsers are the users of the configurations shown in docs/security.md.
var docsUsers = []security.User{
	{Role: security.Coordinator, Name: "coordinator", PasswordVar: passwordVar(security.Coordinator)},
	{Role: security.Worker, Name: "worker", PasswordVar: passwordVar(security.Worker)},
	{Role: security.Client, Name: "client", PasswordVar: passwordVar(security.Client)},
	{Role: security.UI, Name: "ui", PasswordVar: passwordVar(security.UI)},
}

// composeUsers are deploy/nats/auth.conf's: the roles of docs/security.md
// plus an admin (no limits, in the fanout account) for operators and the
// compose test.
var composeUsers = append(docsUsers[:len(docsUsers):len(docsUsers)],
	security.User{Role: security.Admin, Name: "admin", PasswordVar: passwordVar(security.Admin)})

// checkGenerated compares the generated text want with the block of path
// that starts with start (a fenced block when fenced, else the whole
// file), and rewrites it with FANOUT_UPDATE_DOCS=1.
func checkGenerated(t *testing.T, path, start, want, test string) {
	t.Helper()
	page, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(page), start)
	if i < 0 {
		t.Fatalf("%s has no generated block starting %q", path, start)
	}
	body := i + len("```\n")
	j := strings.Index(string(page[body:]), "```")
	if j < 0 {
		t.Fatalf("%s: unterminated block", path)
	}
	got := string(page[body : body+j])
	if strings.TrimSpace(got) == strings.TrimSpace(want) {
		return
	}
	if os.Getenv("FANOUT_UPDATE_DOCS") == "1" {
		out := string(page[:body]) + strings.TrimSpace(want) + "\n" + string(page[body+j:])
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s: the block starting %q differs from what internal/security makes; regenerate it with FANOUT_UPDATE_DOCS=1 go test -run %s ./internal/security/", path, start, test)
}

const securityDoc = "../../docs/security.md"

// The configurations shown in docs/security.md are what ServerConfig and
// AccountsConfig make: the page cannot drift from the permissions the
// tests prove. Run with FANOUT_UPDATE_DOCS=1 to rewrite the page's blocks.
func TestSecurityDocMatchesServerConfig(t *testing.T) {
	one, err := security.ServerConfig(security.Options{}, docsUsers)
	if err != nil {
		t.Fatal(err)
	}
	checkGenerated(t, securityDoc, "```\n# fanout least-privilege permissions", one, t.Name())
	accounts, err := security.AccountsConfig(security.Options{}, security.Accounts{}, composeUsers)
	if err != nil {
		t.Fatal(err)
	}
	checkGenerated(t, securityDoc, "```\n# fanout accounts layout", accounts, t.Name())
}

// authConfPath is the accounts layout the compose files run, included by
// deploy/nats/single.conf and cluster.conf.
const authConfPath = "../../deploy/nats/auth.conf"

// composeAuthConf is deploy/nats/auth.conf: the accounts layout of
// docs/security.md with composeUsers.
func composeAuthConf(t *testing.T) string {
	conf, err := security.AccountsConfig(security.Options{}, security.Accounts{}, composeUsers)
	if err != nil {
		t.Fatal(err)
	}
	return "# Generated from internal/security (TestComposeAuthConf): do not edit by hand.\n" +
		"# Included by single.conf and cluster.conf; the passwords come from the\n" +
		"# environment of the NATS container (see docker-compose.yml).\n" + conf
}

// deploy/nats/auth.conf is what internal/security makes; rewrite it with
// FANOUT_UPDATE_DOCS=1.
func TestComposeAuthConf(t *testing.T) {
	want := composeAuthConf(t)
	got, err := os.ReadFile(authConfPath)
	if err == nil && strings.TrimSpace(string(got)) == strings.TrimSpace(want) {
		return
	}
	if os.Getenv("FANOUT_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(authConfPath, []byte(strings.TrimSpace(want)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s differs from internal/security's accounts layout (%v); regenerate it with FANOUT_UPDATE_DOCS=1 go test -run TestComposeAuthConf ./internal/security/", authConfPath, err)
}
