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
