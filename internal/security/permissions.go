// Package security builds fanout's least-privilege NATS permission sets,
// one per role (coordinator, worker, client), from the subject prefix, and
// renders them as nats-server configuration, as server.Options users and
// as JWT user permissions. docs/security.md and the compose setup are
// generated from here, and the tests in this package prove the sets are
// both sufficient (a batch runs end to end) and tight (a worker cannot
// submit, publish work or read the batch state).
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

// Roles lists every role, in a stable order.
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

// Permissions returns the permission set of every role.
//
// Coordinator: administers the six streams (create, update, look up; never
// delete), reads and writes the batch state and the object store, publishes
// work, batch tokens, aggregates, progress and pokes, consumes batch tokens
// and results, serves submit / status / cancel / update / redrive in the
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
// (not submit), reads progress (core), the batch-state bucket (a watch),
// results (direct gets and short-lived consumers), aggregates, large
// results in the object store, the workers bucket, and the work stream's
// consumer list and info (queued work per activity). It publishes nothing
// else: no work, result, token or bucket write.
func Permissions(o Options) (map[Role]Permission, error) {
	n, err := o.names()
	if err != nil {
		return nil, err
	}
	if o.ResponseExpiry == 0 {
		o.ResponseExpiry = DefaultResponseExpiry
	}
	s := StreamsOf(n)
	p := n.Prefix
	queue := " " + n.CoordinatorQueue()

	var coord Permission
	coord.Publish = []string{
		n.WorkAll(), n.ControlAll(), n.ResultAll(), n.DoneAll(), p + ".progress.>", n.PokeAll(),
		"$KV." + n.BatchesBucket() + ".>", "$O." + n.BlobBucket() + ".>",
		streamPurge(s.Work), streamPurge(s.Blobs),
		// A batch's first driver removes results stored before the batch
		// was accepted, and a driver removes an aggregate that is not one.
		streamPurge(s.Results), api + "STREAM.MSG.DELETE." + s.Done,
		// Account info: creating a KV bucket checks JetStream is enabled.
		api + "INFO",
	}
	for _, st := range s.All() {
		coord.Publish = append(coord.Publish, streamInfo(st), streamCreate(st), streamUpdate(st), msgGet(st))
		coord.Publish = append(coord.Publish, directGet(st)...)
		coord.Publish = append(coord.Publish, consumerCreate(st)...)
		coord.Publish = append(coord.Publish, durableCreate(st), consumerInfo(st), consumerDel(st), msgNext(st), acks(st), flowControl(st))
	}
	for _, r := range requestSubjects(n) {
		coord.Subscribe = append(coord.Subscribe, r+queue)
	}
	coord.Subscribe = append(coord.Subscribe,
		n.PokeAll(),
		o.InboxPrefix(Coordinator)+".>",
	)
	coord.Responses = &Responses{MaxMsgs: 1, Expires: o.ResponseExpiry}

	var work Permission
	work.Publish = []string{n.ResultAll()}
	// topology.EnsureWorker looks up the work and results streams at start.
	work.Publish = append(work.Publish, streamInfo(s.Work), streamInfo(s.Results))
	work.Publish = append(work.Publish,
		// CONSUMER.CREATE.<work stream>.work-<activity>.<prefix>.work.<activity>.>:
		// the server checks the filter in the subject against the request.
		api+"CONSUMER.CREATE."+s.Work+".*."+p+".work.*.>",
		consumerInfo(s.Work), msgNext(s.Work), acks(s.Work),
	)
	// Heartbeats (worker/presence.go): the worker finds or creates the
	// workers bucket (creating a bucket reads the account info) and writes
	// and deletes its own key there.
	workers := "KV_" + n.WorkersBucket()
	work.Publish = append(work.Publish, "$KV."+n.WorkersBucket()+".>", streamInfo(workers), streamCreate(workers), api+"INFO")
	// Claim checks: read inputs the coordinator stored, store outputs too
	// large for a result message, in the blob object store.
	work.Publish = append(work.Publish, "$O."+n.BlobBucket()+".>", streamInfo(s.Blobs), msgGet(s.Blobs))
	work.Publish = append(work.Publish, directGet(s.Blobs)...)
	work.Publish = append(work.Publish, consumerCreate(s.Blobs)...)
	work.Publish = append(work.Publish, consumerInfo(s.Blobs), consumerDel(s.Blobs), msgNext(s.Blobs), flowControl(s.Blobs))
	work.Subscribe = []string{o.InboxPrefix(Worker) + ".>"}

	var cli Permission
	cli.Publish = append(requestSubjects(n),
		// The nats tool finds the stream of a subject with it (nats sub --last).
		api+"STREAM.NAMES",
	)
	// ... and lists the live workers from the workers bucket (fanout workers).
	for _, st := range []string{s.Results, s.Done, s.Blobs, workers} {
		cli.Publish = append(cli.Publish, streamInfo(st), msgGet(st))
		cli.Publish = append(cli.Publish, directGet(st)...)
		cli.Publish = append(cli.Publish, consumerCreate(st)...)
		// Ordered consumers delete their previous consumer on every reset
		// (each Fetch), object reads theirs when done. Consumer names are
		// random and the client may not list them, so it cannot find the
		// coordinator's consumers to delete them.
		cli.Publish = append(cli.Publish, consumerInfo(st), consumerDel(st), msgNext(st), flowControl(st))
	}
	cli.Subscribe = []string{
		o.InboxPrefix(Client) + ".>",
		p + ".progress.>", n.ResultAll(), n.DoneAll(), n.AggregateAll(),
	}

	var dash Permission
	dash.Publish = []string{n.Status(), n.Cancel(), n.Update(), n.Redrive()}
	for _, st := range []string{s.Batches, s.Results, s.Done, s.Blobs, workers} {
		dash.Publish = append(dash.Publish, streamInfo(st), msgGet(st))
		dash.Publish = append(dash.Publish, directGet(st)...)
		dash.Publish = append(dash.Publish, consumerCreate(st)...)
		dash.Publish = append(dash.Publish, consumerInfo(st), consumerDel(st), msgNext(st), flowControl(st))
	}
	dash.Publish = append(dash.Publish, streamInfo(s.Work), api+"CONSUMER.LIST."+s.Work, consumerInfo(s.Work))
	dash.Subscribe = []string{o.InboxPrefix(UI) + ".>", p + ".progress.>"}

	return map[Role]Permission{Coordinator: coord, Worker: work, Client: cli, UI: dash}, nil
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
}

// ServerConfig renders the permission sets and users as a nats-server
// configuration fragment: one variable per role that has users
// (COORDINATOR, WORKER, CLIENT, UI) and an authorization block. Paste it into the server's
// configuration next to listen, jetstream and so on.
func ServerConfig(o Options, users []User) (string, error) {
	perms, err := Permissions(o)
	if err != nil {
		return "", err
	}
	used := map[Role]bool{}
	for _, u := range users {
		used[u.Role] = true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# fanout least-privilege permissions, prefix %q.\n", prefixOf(o))
	for _, r := range Roles() {
		if !used[r] {
			continue // the server refuses unused variables
		}
		p := perms[r]
		fmt.Fprintf(&b, "\n# %s: connections must use the inbox prefix %q.\n", r, o.InboxPrefix(r))
		fmt.Fprintf(&b, "%s = {\n", strings.ToUpper(string(r)))
		writeList(&b, "publish", p.Publish)
		writeList(&b, "subscribe", p.Subscribe)
		if p.Responses != nil {
			fmt.Fprintf(&b, "  allow_responses: { max: %d, expires: %q }\n", p.Responses.MaxMsgs, p.Responses.Expires.String())
		}
		b.WriteString("}\n")
	}
	b.WriteString("\nauthorization {\n  users = [\n")
	for _, u := range users {
		if _, ok := perms[u.Role]; !ok {
			return "", fmt.Errorf("user %q: unknown role %q", u.Name+u.NKey, u.Role)
		}
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
		fmt.Fprintf(&b, "    { %s, permissions: $%s }\n", id, strings.ToUpper(string(u.Role)))
	}
	b.WriteString("  ]\n}\n")
	return b.String(), nil
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
