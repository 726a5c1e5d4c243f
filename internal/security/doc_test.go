package security_test

import (
	"os"
	"strings"
	"testing"

	"github.com/fanoutdev/fanout/internal/security"
)

// docsUsers are the users of the configuration shown in docs/security.md.
var docsUsers = []security.User{
	{Role: security.Coordinator, Name: "coordinator", PasswordVar: "FANOUT_COORDINATOR_PASSWORD"},
	{Role: security.Worker, Name: "worker", PasswordVar: "FANOUT_WORKER_PASSWORD"},
	{Role: security.Client, Name: "client", PasswordVar: "FANOUT_CLIENT_PASSWORD"},
	{Role: security.UI, Name: "ui", PasswordVar: "FANOUT_UI_PASSWORD"},
}

// The configuration pasted in docs/security.md is what ServerConfig makes:
// the page cannot drift from the permissions the tests prove. Run with
// FANOUT_UPDATE_DOCS=1 to rewrite the page's block.
func TestSecurityDocMatchesServerConfig(t *testing.T) {
	want, err := security.ServerConfig(security.Options{}, docsUsers)
	if err != nil {
		t.Fatal(err)
	}
	const path = "../../docs/security.md"
	page, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const start = "```\n# fanout least-privilege permissions"
	i := strings.Index(string(page), start)
	if i < 0 {
		t.Fatalf("%s has no generated configuration block", path)
	}
	body := i + len("```\n")
	j := strings.Index(string(page[body:]), "```")
	if j < 0 {
		t.Fatalf("%s: unterminated configuration block", path)
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
	t.Errorf("%s: the configuration block differs from security.ServerConfig; regenerate it with FANOUT_UPDATE_DOCS=1 go test -run TestSecurityDocMatchesServerConfig ./internal/security/", path)
}

// composeAuthConf is deploy/nats/auth.conf: the roles of docs/security.md
// plus an admin user (all permissions) for operators and the compose test.
func composeAuthConf(t *testing.T) string {
	conf, err := security.ServerConfig(security.Options{}, docsUsers)
	if err != nil {
		t.Fatal(err)
	}
	const end = "\n  ]\n}"
	if !strings.HasSuffix(strings.TrimSpace(conf), strings.TrimSpace(end)) {
		t.Fatalf("ServerConfig's output does not end with its users list:\n%s", conf)
	}
	i := strings.LastIndex(conf, end)
	return "# Generated from internal/security (TestComposeAuthConf): do not edit by hand.\n" +
		"# Included by single.conf and cluster.conf; the passwords come from the\n" +
		"# environment of the NATS container (see docker-compose.yml).\n" +
		conf[:i] + "\n    { user: \"admin\", password: $FANOUT_ADMIN_PASSWORD }" + conf[i:]
}

// deploy/nats/auth.conf is what internal/security makes; rewrite it with
// FANOUT_UPDATE_DOCS=1.
func TestComposeAuthConf(t *testing.T) {
	want := composeAuthConf(t)
	const path = "../../deploy/nats/auth.conf"
	got, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(got)) == strings.TrimSpace(want) {
		return
	}
	if os.Getenv("FANOUT_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(strings.TrimSpace(want)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s differs from internal/security's permissions (%v); regenerate it with FANOUT_UPDATE_DOCS=1 go test -run TestComposeAuthConf ./internal/security/", path, err)
}
