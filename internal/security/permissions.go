// Package security builds fanout's least-privilege NATS permission sets,
// one per role (coordinator, worker, client), from the subject prefix, and
// renders them as nats-server configuration, as server.Options users and
// as JWT user permissions: every role in one account (ServerConfig), or
// the accounts layout (AccountsConfig), where fanout's streams and
// coordinators have an account of their own and workers and clients reach
// it only through what it exports to them. docs/security.md and the
// compose setup are generated from here, and the tests in this package
// prove the sets are both sufficient (a batch runs end to end) and tight
// (a worker cannot submit, publish work or read the batch state; in the
// accounts layout no reply a worker or a client aims reaches the streams).
package security

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Role is a kind of fanout process; each gets its own NATS user.
type Role string

// The roles.
const (
	Coordinator Role = "coordinator"
	Worker      Role = "worker"
	Client      Role = "client"
	UI          Role = "ui"
)

// Admin is an operator's user (nats stream ls, fanout ls): no limits, in
// the account of fanout's streams. It is not a process role: Roles leaves
// it out.
const Admin Role = "admin"

// Roles lists every role of a fanout process, in a stable order.
func Roles() []Role { return []Role{Coordinator, Worker, Client, UI} }

// DefaultResponseExpiry is how long the coordinator may take to answer a
// request (the server's allow_responses expiry). A cancel is answered once
// the batch ends, which takes up to 10s plus one coordinator lease; this
// leaves room for leases up to a few minutes.
const DefaultResponseExpiry = 5 * time.Minute

// Options choose the deployment the permissions are for.
type Options struct {
	// Prefix is the subject prefix (default "fanout").
	Prefix string
	// SharedInbox gives every role the default "_INBOX" reply prefix
	// instead of one of its own. Use it only with clients that cannot set
	// an inbox prefix: any user may then subscribe to "_INBOX.>" and read
	// every reply in the account, the coordinator's batch-state reads
	// among them, which defeats the point of separate roles.
	SharedInbox bool
	// ResponseExpiry bounds how long after a request the coordinator may
	// reply to it (default DefaultResponseExpiry).
	ResponseExpiry time.Duration
}

func (o Options) names() (messages.Names, error) { return messages.NewNames(o.Prefix) }

// InboxPrefix is the reply-subject prefix a role's connections must use
// (nats.CustomInboxPrefix; the nats tool's --inbox-prefix): "_INBOX_<prefix>_<role>",
// or "_INBOX" with SharedInbox.
func (o Options) InboxPrefix(role Role) string {
	if o.SharedInbox {
		return "_INBOX"
	}
	p := o.Prefix
	if p == "" {
		p = messages.DefaultPrefix
	}
	return "_INBOX_" + p + "_" + string(role)
}

// Permission is one role's permission set. Subjects are allow lists;
// everything else is denied. An entry "subject queue" allows only queue
// subscriptions in that queue group.
type Permission struct {
	Publish   []string
	Subscribe []string
	// Responses, when set, lets the role reply to requests it received
	// (allow_responses): one reply per request, within Expires.
	Responses *Responses
}

// Responses is an allow_responses setting.
type Responses struct {
	MaxMsgs int
	Expires time.Duration
}

// Streams are the JetStream stream names of a deployment.
type Streams struct {
	Work, Results, Done, Control string
	Batches                      string // the KV bucket's stream, KV_<bucket>
	Blobs                        string // the object store's stream, OBJ_<bucket>
}

// All lists every stream.
func (s Streams) All() []string {
	return []string{s.Work, s.Results, s.Done, s.Control, s.Batches, s.Blobs}
}

// StreamsOf returns the stream names for n.
func StreamsOf(n messages.Names) Streams {
	return Streams{
		Work: n.WorkStream(), Results: n.ResultsStream(), Done: n.DoneStream(), Control: n.ControlStream(),
		Batches: "KV_" + n.BatchesBucket(), Blobs: "OBJ_" + n.BlobBucket(),
	}
}

// JetStream API subjects, by stream (and consumer where it matters).
const api = "$JS.API."

func streamInfo(s string) string   { return api + "STREAM.INFO." + s }
func streamCreate(s string) string { return api + "STREAM.CREATE." + s }
func streamUpdate(s string) string { return api + "STREAM.UPDATE." + s }
func streamPurge(s string) string  { return api + "STREAM.PURGE." + s }
func msgGet(s string) string       { return api + "STREAM.MSG.GET." + s }

// directGet covers both direct-get forms: by sequence (DIRECT.GET.<s>) and
// last by subject (DIRECT.GET.<s>.<subject>).
func directGet(s string) []string {
	return []string{api + "DIRECT.GET." + s, api + "DIRECT.GET." + s + ".>"}
}

// consumerCreate covers CONSUMER.CREATE.<s> (unnamed, legacy),
// CONSUMER.CREATE.<s>.<name> and CONSUMER.CREATE.<s>.<name>.<filter>.
func consumerCreate(s string) []string {
	return []string{api + "CONSUMER.CREATE." + s, api + "CONSUMER.CREATE." + s + ".>"}
}
func durableCreate(s string) string { return api + "CONSUMER.DURABLE.CREATE." + s + ".*" }
func consumerInfo(s string) string  { return api + "CONSUMER.INFO." + s + ".*" }
func consumerDel(s string) string   { return api + "CONSUMER.DELETE." + s + ".*" }
func msgNext(s string) string       { return api + "CONSUMER.MSG.NEXT." + s + ".*" }
func acks(s string) string          { return "$JS.ACK." + s + ".>" }
func flowControl(s string) string   { return "$JS.FC." + s + ".>" }

// Permissions returns the permission set of every role, for the layout
// with every role in one account.
//
// Coordinator: administers the six streams (create, update, look up; never
// delete), reads and writes the batch state and the object store, publishes
// work, batch tokens, aggregates, progress and pokes, consumes batch tokens
// and results, reads the workers bucket (live workers, for its metrics),
// serves submit / status / cancel / update / redrive in the
// coordinators' queue group, and replies to requests.
//
// Worker: looks the work and results streams up at start, creates or
// updates the durable consumer of each of its activities on the work
// stream, pulls and acks work there, publishes results, and writes its
// heartbeat in the workers bucket (creating the bucket if missing).
// Nothing else: no request subject, no work subject, nothing of the
// batch-state bucket, no other inbox.
//
// Client: sends submit / status / cancel / update / redrive, reads
// progress (core), results and aggregates (core, or ordered consumers on
// the results and done streams), reads large results from the object
// store, and reads the workers bucket (fanout workers). It cannot read the
// batch-state bucket: fanout ls needs the coordinator's credentials or an
// admin's.
//
// UI (fanout ui, the dashboard): sends status / cancel / update / redrive
// (not submit), reads progress (core), the batch-state bucket, results
// (direct gets and short-lived consumers), aggregates, large results in
// the object store, the workers bucket, and the work stream's consumer
// list and info (queued work per activity). It publishes nothing else: no
// work, result, token or bucket write.
func Permissions(o Options) (map[Role]Permission, error) {
	n, err := o.names()
	if err != nil {
		return nil, err
	}
	out := map[Role]Permission{Coordinator: coordinatorPermission(o, n)}
	for _, r := range []Role{Worker, Client, UI} {
		var p Permission
		for _, u := range roleUses(n, r) {
			if u.kind == useStream {
				p.Subscribe = append(p.Subscribe, u.subject)
			} else {
				p.Publish = append(p.Publish, u.subject)
			}
		}
		p.Subscribe = append([]string{o.InboxPrefix(r) + ".>"}, p.Subscribe...)
		out[r] = p
	}
	return out, nil
}

func coordinatorPermission(o Options, n messages.Names) Permission {
	if o.ResponseExpiry == 0 {
		o.ResponseExpiry = DefaultResponseExpiry
	}
	s := StreamsOf(n)
	var coord Permission
	coord.Publish = []string{
		n.WorkAll(), n.ControlAll(), n.ResultAll(), n.DoneAll(), n.Prefix + ".progress.>", n.PokeAll(),
		"$KV." + n.BatchesBucket() + ".>", "$O." + n.BlobBucket() + ".>",
		streamPurge(s.Work), streamPurge(s.Blobs),
		// A batch's first driver removes results stored before the batch
		// was accepted, and a driver removes an aggregate that is not one.
		streamPurge(s.Results), api + "STREAM.MSG.DELETE." + s.Done,
		// Account info: creating a KV bucket checks JetStream is enabled.
		api + "INFO",
	}
	// The live workers per activity, for the metrics (coordinator/stats.go).
	for _, u := range readerUses("KV_" + n.WorkersBucket()) {
		coord.Publish = append(coord.Publish, u.subject)
	}
	for _, st := range s.All() {
		coord.Publish = append(coord.Publish, streamInfo(st), streamCreate(st), streamUpdate(st), msgGet(st))
		coord.Publish = append(coord.Publish, directGet(st)...)
		coord.Publish = append(coord.Publish, consumerCreate(st)...)
		coord.Publish = append(coord.Publish, durableCreate(st), consumerInfo(st), consumerDel(st), msgNext(st), acks(st), flowControl(st))
	}
	queue := " " + n.CoordinatorQueue()
	for _, r := range requestSubjects(n) {
		coord.Subscribe = append(coord.Subscribe, r+queue)
	}
	coord.Subscribe = append(coord.Subscribe,
		n.PokeAll(),
		o.InboxPrefix(Coordinator)+".>",
	)
	coord.Responses = &Responses{MaxMsgs: 1, Expires: o.ResponseExpiry}
	return coord
}

// use is one subject of the fanout account that a worker, a client or
// the dashboard uses. In one account it is a permission; in the accounts layout, an
// export of the fanout account and an import of the role's account.
type use struct {
	subject string // in the fanout account
	kind    useKind
	// many: the server answers one request with several messages (a
	// pull), the response type "stream" of a service export.
	many bool
	// request: a request a coordinator answers (allow_responses).
	request bool
	// oneAccount: of no use across accounts, left out of the accounts
	// layout.
	oneAccount bool
}

type useKind int

const (
	// useAPI is a JetStream API request, $JS.API.<rest>: imported as
	// $JS.<domain>.API.<rest>.
	useAPI useKind = iota
	// useKV is a write to a KV bucket, $KV.<bucket>.>: nats.go sends it
	// under the API prefix too, $JS.<domain>.API.$KV.<bucket>.>.
	useKV
	// useService is a publish the fanout account answers or stores under
	// its own subject: requests, results, acks, object chunks.
	useService
	// useStream is what the fanout account publishes and the role
	// subscribes to.
	useStream
)

func apiUses(subjects ...string) []use {
	out := make([]use, len(subjects))
	for i, s := range subjects {
		out[i] = use{subject: s, kind: useAPI, many: strings.HasPrefix(s, api+"CONSUMER.MSG.NEXT.")}
	}
	return out
}

// readerUses are what reading a stream with direct gets, message gets and
// ordered pull consumers takes (ordered consumers delete their previous
// consumer at every reset, object reads theirs when done).
func readerUses(st string) []use {
	subjects := []string{streamInfo(st), msgGet(st)}
	subjects = append(subjects, directGet(st)...)
	subjects = append(subjects, consumerCreate(st)...)
	return apiUses(append(subjects, consumerInfo(st), consumerDel(st), msgNext(st))...)
}

// roleUses lists what a worker, a client or the dashboard uses, in a
// stable order.
func roleUses(n messages.Names, r Role) []use {
	s := StreamsOf(n)
	workers := "KV_" + n.WorkersBucket()
	var u []use
	switch r {
	case Worker:
		u = append(u, use{subject: n.ResultAll(), kind: useService})
		// topology.EnsureWorker looks up the work and results streams at start.
		u = append(u, apiUses(streamInfo(s.Work), streamInfo(s.Results),
			// CONSUMER.CREATE.<work stream>.work-<activity>.<prefix>.work.<activity>.>:
			// the server checks the filter in the subject against the request.
			api+"CONSUMER.CREATE."+s.Work+".*."+n.Prefix+".work.*.>",
			consumerInfo(s.Work), msgNext(s.Work))...)
		u = append(u, use{subject: acks(s.Work), kind: useService})
		// Heartbeats (worker/presence.go): the worker finds or creates the
		// workers bucket (creating a bucket reads the account info) and
		// writes and deletes its own key there.
		u = append(u, use{subject: "$KV." + n.WorkersBucket() + ".>", kind: useKV})
		u = append(u, apiUses(streamInfo(workers), streamCreate(workers), api+"INFO")...)
		// Claim checks: read inputs the coordinator stored, store outputs
		// too large for a result message, in the blob object store.
		// (nats.go publishes object chunks under $O without the API
		// prefix.)
		u = append(u, use{subject: "$O." + n.BlobBucket() + ".>", kind: useService})
		u = append(u, readerUses(s.Blobs)...)
	case Client:
		for _, r := range requestSubjects(n) {
			u = append(u, use{subject: r, kind: useService, request: true})
		}
		// The nats tool finds the stream of a subject with it (nats sub --last).
		u = append(u, apiUses(api+"STREAM.NAMES")...)
		// ... and lists the live workers from the workers bucket (fanout
		// workers). Consumer names are random and the client may not list
		// them, so it cannot find the coordinator's consumers to delete them.
		for _, st := range []string{s.Results, s.Done, s.Blobs, workers} {
			u = append(u, readerUses(st)...)
		}
		for _, st := range []string{n.Prefix + ".progress.>", n.ResultAll(), n.DoneAll(), n.AggregateAll()} {
			// Results come from workers; in the accounts layout through a
			// service import, and the server passes no message that came
			// through one on to a stream export: a client account reads
			// results from the results stream.
			u = append(u, use{subject: st, kind: useStream, oneAccount: st == n.ResultAll()})
		}
	case UI:
		for _, r := range requestSubjects(n)[1:] { // not submit
			u = append(u, use{subject: r, kind: useService, request: true})
		}
		for _, st := range []string{s.Batches, s.Results, s.Done, s.Blobs, workers} {
			u = append(u, readerUses(st)...)
		}
		u = append(u, apiUses(streamInfo(s.Work), api+"CONSUMER.LIST."+s.Work, consumerInfo(s.Work))...)
		u = append(u, use{subject: n.Prefix + ".progress.>", kind: useStream})
	}
	return u
}

// requestSubjects are the request/reply subjects the coordinators serve.
func requestSubjects(n messages.Names) []string {
	return []string{n.Submit(), n.Status(), n.Cancel(), n.Update(), n.Redrive()}
}

// Server converts p for server.Options users.
func (p Permission) Server() *server.Permissions {
	sp := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: slices.Clone(p.Publish)},
		Subscribe: &server.SubjectPermission{Allow: slices.Clone(p.Subscribe)},
	}
	if p.Responses != nil {
		sp.Response = &server.ResponsePermission{MaxMsgs: p.Responses.MaxMsgs, Expires: p.Responses.Expires}
	}
	return sp
}

// JWT sets p as the permissions of a user JWT (operator mode, .creds files).
func (p Permission) JWT(uc *jwt.UserClaims) {
	uc.Pub = jwt.Permission{Allow: slices.Clone(p.Publish)}
	uc.Sub = jwt.Permission{Allow: slices.Clone(p.Subscribe)}
	uc.Resp = nil
	if p.Responses != nil {
		uc.Resp = &jwt.ResponsePermission{MaxMsgs: p.Responses.MaxMsgs, Expires: p.Responses.Expires}
	}
}

// User is one NATS user of a role in a generated configuration.
type User struct {
	Role Role
	// Name and Password authenticate with user and password. Password is
	// written quoted (plain, or a bcrypt hash from `nats server passwd`);
	// PasswordVar instead names a variable of the configuration or an
	// environment variable the server substitutes ($NAME).
	Name, Password, PasswordVar string
	// NKey authenticates with an nkey instead: the user's public key (U...).
	NKey string
	// CertSubject authenticates with a TLS client certificate instead, on
	// a server with tls { verify_and_map: true }: the certificate's
	// subject ("CN=worker,O=example") or one of its SAN e-mails or DNS names.
	CertSubject string
	// Account is the client account of a client user in the accounts
	// layout (AccountsConfig): one of Accounts.Clients, the first when
	// empty. Other roles have one account each and leave it empty.
	Account string
}

// ServerConfig renders the permission sets and users as a nats-server
// configuration fragment for the layout with every role in one account:
// one variable per role that has users (COORDINATOR, WORKER, CLIENT, UI)
// and an authorization block. Admin users get no limits. Paste it into the
// server's configuration next to listen, jetstream and so on.
func ServerConfig(o Options, users []User) (string, error) {
	perms, err := Permissions(o)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# fanout least-privilege permissions, prefix %q.\n", prefixOf(o))
	if err := writeRoleVars(&b, o.InboxPrefix, perms, users); err != nil {
		return "", err
	}
	b.WriteString("\nauthorization {\n  users = [\n")
	for _, u := range users {
		entry, err := userEntry(u)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "    %s\n", entry)
	}
	b.WriteString("  ]\n}\n")
	return b.String(), nil
}

// writeRoleVars writes one permission variable per role that has users
// (the server refuses unused variables), after checking every user's role.
func writeRoleVars(b *strings.Builder, inbox func(Role) string, perms map[Role]Permission, users []User) error {
	used := map[Role]bool{}
	for _, u := range users {
		if _, ok := perms[u.Role]; !ok && u.Role != Admin {
			return fmt.Errorf("user %q: unknown role %q", u.Name+u.NKey+u.CertSubject, u.Role)
		}
		used[u.Role] = true
	}
	for _, r := range Roles() {
		if !used[r] {
			continue
		}
		p := perms[r]
		fmt.Fprintf(b, "\n# %s: connections must use the inbox prefix %q.\n", r, inbox(r))
		fmt.Fprintf(b, "%s = {\n", strings.ToUpper(string(r)))
		writeList(b, "publish", p.Publish)
		writeList(b, "subscribe", p.Subscribe)
		if p.Responses != nil {
			fmt.Fprintf(b, "  allow_responses: { max: %d, expires: %q }\n", p.Responses.MaxMsgs, p.Responses.Expires.String())
		}
		b.WriteString("}\n")
	}
	return nil
}

// userEntry renders one user of a users list.
func userEntry(u User) (string, error) {
	var id string
	kinds := 0
	for _, v := range []string{u.Name, u.NKey, u.CertSubject} {
		if v != "" {
			kinds++
		}
	}
	switch {
	case kinds != 1:
		return "", fmt.Errorf("user %q: give exactly one of a name, an nkey or a certificate subject", u.Name+u.NKey+u.CertSubject)
	case u.NKey != "" && u.Password == "" && u.PasswordVar == "":
		id = "nkey: " + quote(u.NKey)
	case u.CertSubject != "" && u.Password == "" && u.PasswordVar == "":
		id = "user: " + quote(u.CertSubject)
	case u.Name != "" && u.PasswordVar != "" && u.Password == "":
		id = "user: " + quote(u.Name) + ", password: $" + u.PasswordVar
	case u.Name != "" && u.Password != "" && u.PasswordVar == "":
		id = "user: " + quote(u.Name) + ", password: " + quote(u.Password)
	default:
		return "", fmt.Errorf("user %q: a named user needs a password or a password variable (and nkey or certificate users neither)", u.Name+u.NKey+u.CertSubject)
	}
	if u.Role == Admin {
		return "{ " + id + " }", nil
	}
	return fmt.Sprintf("{ %s, permissions: $%s }", id, strings.ToUpper(string(u.Role))), nil
}

func prefixOf(o Options) string {
	if o.Prefix == "" {
		return messages.DefaultPrefix
	}
	return o.Prefix
}

func writeList(b *strings.Builder, key string, subjects []string) {
	fmt.Fprintf(b, "  %s: { allow: [\n", key)
	for _, s := range subjects {
		fmt.Fprintf(b, "    %s\n", quote(s))
	}
	b.WriteString("  ] }\n")
}

// quote writes a double-quoted configuration string (no variable
// substitution happens inside quotes).
func quote(s string) string { return strconv.Quote(s) }
