package security

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/topology"
)

// Accounts names the NATS accounts of the accounts layout: fanout's
// streams, buckets, coordinators and admins in one account; workers and
// clients in accounts of their own, which reach the first only through the
// services and streams it exports to them. In one account the server
// delivers a JetStream API reply, or a coordinator's, to whatever reply
// subject the request names, a stream's subject among them; a reply to a
// request from another account is delivered in that account, where no
// stream of fanout's listens.
type Accounts struct {
	// Fanout holds the streams, the buckets, the coordinators and the
	// admins (default "FANOUT").
	Fanout string
	// Workers holds the workers (default "WORKERS").
	Workers string
	// Clients are the client accounts, one per tenant (default
	// ["CLIENTS"]).
	Clients []string
	// UI holds the dashboards (fanout ui; default "UI").
	UI string
	// Domain names the JetStream API prefix under which workers and
	// clients import the fanout account's JetStream API, $JS.<Domain>.API
	// (their --js-domain). Default: the subject prefix.
	Domain string
}

func (a Accounts) withDefaults(o Options) (Accounts, error) {
	a.Fanout = cmp.Or(a.Fanout, "FANOUT")
	a.Workers = cmp.Or(a.Workers, "WORKERS")
	a.UI = cmp.Or(a.UI, "UI")
	if len(a.Clients) == 0 {
		a.Clients = []string{"CLIENTS"}
	}
	a.Domain = cmp.Or(a.Domain, prefixOf(o))
	if err := topology.CheckDomain(a.Domain); err != nil {
		return a, err
	}
	names := append([]string{a.Fanout, a.Workers, a.UI}, a.Clients...)
	for i, name := range names {
		if !messages.ValidToken(name) {
			return a, fmt.Errorf("account %q: must be 1-64 characters of A-Z a-z 0-9 _ -", name)
		}
		if slices.Contains(names[:i], name) {
			return a, fmt.Errorf("account %q: named twice", name)
		}
	}
	return a, nil
}

// accountsInbox is the inbox prefix of each role in the accounts layout:
// the coordinator keeps its own in the fanout account, which it shares with
// the admins; a worker, client or dashboard account holds that role alone,
// so its users keep the default "_INBOX" (and the nats tool needs no
// --inbox-prefix).
func (o Options) accountsInbox(r Role) string {
	if r == Coordinator {
		return o.InboxPrefix(r)
	}
	return "_INBOX"
}

// local is the subject under which a role's account reaches u.
func (u use) local(domain string) string {
	switch u.kind {
	case useAPI:
		return topology.APIPrefix(domain) + strings.TrimPrefix(u.subject, api)
	case useKV:
		return topology.APIPrefix(domain) + u.subject
	}
	return u.subject
}

// AccountPermissions returns the permission set of every role in the
// accounts layout: the coordinator's as in one account; a worker's or a
// client's is what its account imports, under the local subjects (the
// JetStream API under $JS.<domain>.API), and its own replies on "_INBOX".
func AccountPermissions(o Options, a Accounts) (map[Role]Permission, error) {
	n, err := o.names()
	if err != nil {
		return nil, err
	}
	if a, err = a.withDefaults(o); err != nil {
		return nil, err
	}
	out := map[Role]Permission{Coordinator: coordinatorPermission(o, n)}
	for _, r := range []Role{Worker, Client, UI} {
		p := Permission{Subscribe: []string{o.accountsInbox(r) + ".>"}}
		for _, u := range accountUses(n, r) {
			if u.kind == useStream {
				p.Subscribe = append(p.Subscribe, u.subject)
			} else {
				p.Publish = append(p.Publish, u.local(a.Domain))
			}
		}
		out[r] = p
	}
	return out, nil
}

// accountUses is what a role's account imports: roleUses less what is of
// no use across accounts.
func accountUses(n messages.Names, r Role) []use {
	var out []use
	for _, u := range roleUses(n, r) {
		if !u.oneAccount {
			out = append(out, u)
		}
	}
	return out
}

// export is one export of the fanout account, with the accounts that
// import it.
type export struct {
	use
	accounts []string
}

// AccountsConfig renders the accounts layout as a nats-server
// configuration fragment: the role permission variables and an accounts
// block. The fanout account has JetStream and holds the coordinator and
// admin users; it exports to the workers' and to each client account
// exactly what that role uses, and those accounts import it (JetStream
// API and bucket writes under $JS.<domain>.API, everything else under its
// own subject). Workers and clients connect with --js-domain <domain>.
func AccountsConfig(o Options, a Accounts, users []User) (string, error) {
	n, err := o.names()
	if err != nil {
		return "", err
	}
	if a, err = a.withDefaults(o); err != nil {
		return "", err
	}
	perms, err := AccountPermissions(o, a)
	if err != nil {
		return "", err
	}
	if o.ResponseExpiry == 0 {
		o.ResponseExpiry = DefaultResponseExpiry
	}
	members := map[string][]User{}
	for _, u := range users {
		account := a.Fanout
		switch {
		case u.Role == Client:
			account = cmp.Or(u.Account, a.Clients[0])
			if !slices.Contains(a.Clients, account) {
				return "", fmt.Errorf("user %q: %q is not a client account (%s)", u.Name+u.NKey+u.CertSubject, account, strings.Join(a.Clients, ", "))
			}
		case u.Account != "":
			return "", fmt.Errorf("user %q: only client users choose their account", u.Name+u.NKey+u.CertSubject)
		case u.Role == Worker:
			account = a.Workers
		case u.Role == UI:
			account = a.UI
		}
		members[account] = append(members[account], u)
	}

	// What each role account imports, and so what the fanout account
	// exports to whom (one export per subject, for every account that
	// imports it).
	imports := map[string][]use{a.Workers: accountUses(n, Worker), a.UI: accountUses(n, UI)}
	for _, c := range a.Clients {
		imports[c] = accountUses(n, Client)
	}
	roleAccounts := append(append([]string{a.Workers}, a.Clients...), a.UI)
	var exports []*export
	type key struct {
		subject string
		stream  bool
	}
	byKey := map[key]*export{}
	for _, account := range roleAccounts {
		for _, u := range imports[account] {
			k := key{u.subject, u.kind == useStream}
			e := byKey[k]
			if e == nil {
				e = &export{use: u}
				byKey[k] = e
				exports = append(exports, e)
			}
			e.accounts = append(e.accounts, account)
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# fanout accounts layout, prefix %q: streams, buckets, coordinators and\n", prefixOf(o))
	fmt.Fprintf(&b, "# admins in account %s; workers in %s, clients in %s and\n", a.Fanout, a.Workers, strings.Join(a.Clients, ", "))
	fmt.Fprintf(&b, "# dashboards in %s reach them only through imports, the JetStream API\n", a.UI)
	fmt.Fprintf(&b, "# under %q (connect them with --js-domain %s).\n", strings.TrimSuffix(topology.APIPrefix(a.Domain), "."), a.Domain)
	if err := writeRoleVars(&b, o.accountsInbox, perms, users); err != nil {
		return "", err
	}
	b.WriteString("\naccounts {\n")
	fmt.Fprintf(&b, "  %s {\n    jetstream: enabled\n", a.Fanout)
	if err := writeUsers(&b, members[a.Fanout]); err != nil {
		return "", err
	}
	b.WriteString("    exports = [\n")
	for _, e := range exports {
		quoted := make([]string, len(e.accounts))
		for i, acc := range e.accounts {
			quoted[i] = quote(acc)
		}
		kind := "service"
		if e.kind == useStream {
			kind = "stream"
		}
		fmt.Fprintf(&b, "      { %s: %s, accounts: [%s]", kind, quote(e.subject), strings.Join(quoted, ", "))
		if e.many {
			b.WriteString(", response_type: \"stream\"")
		}
		if e.request {
			// A cancel is answered when the batch has ended: as long as
			// the coordinator may take (allow_responses).
			fmt.Fprintf(&b, ", response_threshold: %q", o.ResponseExpiry.String())
		}
		b.WriteString(" }\n")
	}
	b.WriteString("    ]\n  }\n")
	for _, account := range roleAccounts {
		fmt.Fprintf(&b, "  %s {\n", account)
		if err := writeUsers(&b, members[account]); err != nil {
			return "", err
		}
		b.WriteString("    imports = [\n")
		for _, u := range imports[account] {
			if u.kind == useStream {
				fmt.Fprintf(&b, "      { stream: { account: %s, subject: %s } }\n", quote(a.Fanout), quote(u.subject))
				continue
			}
			fmt.Fprintf(&b, "      { service: { account: %s, subject: %s }", quote(a.Fanout), quote(u.subject))
			if to := u.local(a.Domain); to != u.subject {
				fmt.Fprintf(&b, ", to: %s", quote(to))
			}
			b.WriteString(" }\n")
		}
		b.WriteString("    ]\n  }\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}

func writeUsers(b *strings.Builder, users []User) error {
	b.WriteString("    users = [\n")
	for _, u := range users {
		entry, err := userEntry(u)
		if err != nil {
			return err
		}
		fmt.Fprintf(b, "      %s\n", entry)
	}
	b.WriteString("    ]\n")
	return nil
}
