package security_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/builtin"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/security"
	"github.com/fanoutdev/fanout/internal/topology"
	"github.com/fanoutdev/fanout/worker"
)

func secret(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// deployment is a nats-server with authentication on and one user per
// role: in one account, configured from security.ServerConfig, or in the
// accounts layout the compose files ship (deploy/nats/auth.conf).
type deployment struct {
	t     *testing.T
	srv   *server.Server
	url   string
	opts  security.Options
	names messages.Names
	pass  map[security.Role]string
	// domain is the workers' and clients' JetStream domain: set in the
	// accounts layout, empty in one account.
	domain string
}

// maxPayload is small enough that an aggregate of a few thousand items is
// stored in the object store, and big enough for its 128 KiB chunks.
const maxPayload = 192 * 1024

func newDeployment(t *testing.T, opts security.Options) *deployment {
	t.Helper()
	d := &deployment{t: t, opts: opts, names: messages.MustNames(opts.Prefix), pass: map[security.Role]string{}}
	var users []security.User
	for _, r := range security.Roles() {
		d.pass[r] = secret(t)
		users = append(users, security.User{Role: r, Name: string(r), Password: d.pass[r]})
	}
	conf, err := security.ServerConfig(opts, users)
	if err != nil {
		t.Fatal(err)
	}
	d.srv = startServer(t, fmt.Sprintf("max_payload: %d\n%s", maxPayload, conf))
	d.url = d.srv.ClientURL()
	return d
}

// newAccountsDeployment runs the shipped accounts layout: the text of
// deploy/nats/auth.conf (TestComposeAuthConf keeps it what
// security.AccountsConfig makes), its password variables defined in the
// configuration rather than the environment.
func newAccountsDeployment(t *testing.T) *deployment {
	t.Helper()
	shipped, err := os.ReadFile(authConfPath)
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{t: t, names: messages.MustNames(""), pass: map[security.Role]string{}, domain: messages.DefaultPrefix}
	var vars strings.Builder
	for _, r := range append(security.Roles(), security.Admin) {
		d.pass[r] = secret(t)
		fmt.Fprintf(&vars, "%s: %q\n", passwordVar(r), d.pass[r])
	}
	d.srv = startServer(t, fmt.Sprintf("max_payload: %d\n%s%s", maxPayload, vars.String(), shipped))
	d.url = d.srv.ClientURL()
	return d
}

// inbox is the inbox prefix a role's connections use.
func (d *deployment) inbox(r security.Role) string {
	if d.domain != "" && r != security.Coordinator {
		return "_INBOX"
	}
	return d.opts.InboxPrefix(r)
}

// api is the subject under which a worker or a client sends the JetStream
// API request subject ("$JS.API.<rest>").
func (d *deployment) api(subject string) string {
	return topology.APIPrefix(d.domain) + strings.TrimPrefix(subject, "$JS.API.")
}

// js is the JetStream context of a worker's or client's connection.
func (d *deployment) js(nc *nats.Conn) jetstream.JetStream {
	d.t.Helper()
	js, err := topology.JetStream(nc, d.domain)
	if err != nil {
		d.t.Fatal(err)
	}
	return js
}

// options are the connect options of a role: its user, its inbox prefix,
// and rec for asynchronous errors.
func (d *deployment) options(r security.Role, rec *recorder) []nats.Option {
	return []nats.Option{
		nats.Name("test " + string(r)),
		nats.UserInfo(string(r), d.pass[r]),
		nats.CustomInboxPrefix(d.inbox(r)),
		rec.option(),
	}
}

func (d *deployment) connect(r security.Role, rec *recorder) *nats.Conn {
	d.t.Helper()
	nc, err := nats.Connect(d.url, d.options(r, rec)...)
	if err != nil {
		d.t.Fatalf("connect as %s: %v", r, err)
	}
	d.t.Cleanup(nc.Close)
	return nc
}

func (d *deployment) startCoordinator(rec *recorder) *coordinator.Coordinator {
	t := d.t
	t.Helper()
	c, err := coordinator.New(coordinator.Config{
		URL: d.url, ConnectOptions: d.options(security.Coordinator, rec),
		Prefix: d.opts.Prefix, Lease: 2 * time.Second, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("coordinator with least privilege: %v (violations %q)", err, rec.violations())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
	})
	return c
}

func (d *deployment) startWorker(nc *nats.Conn, rec *recorder, opts ...worker.Option) {
	t := d.t
	t.Helper()
	opts = append(opts, worker.WithLogger(testLogger(t)))
	if d.opts.Prefix != "" {
		opts = append(opts, worker.WithPrefix(d.opts.Prefix))
	}
	if d.domain != "" {
		opts = append(opts, worker.WithJetStreamDomain(d.domain))
	}
	w, err := worker.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	builtin.Register(w)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatalf("worker with least privilege: %v (violations %q)", err, rec.violations())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
}

// newClient is a fanout client on a client's connection.
func (d *deployment) newClient(nc *nats.Conn) *client.Client {
	d.t.Helper()
	var opts []client.Option
	if d.opts.Prefix != "" {
		opts = append(opts, client.WithPrefix(d.opts.Prefix))
	}
	if d.domain != "" {
		opts = append(opts, client.WithJetStreamDomain(d.domain))
	}
	c, err := client.New(nc, opts...)
	if err != nil {
		d.t.Fatal(err)
	}
	return c
}

func echoItems(n, size int) []json.RawMessage {
	items := make([]json.RawMessage, n)
	pad := strings.Repeat("x", size)
	for i := range items {
		items[i] = json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
	}
	return items
}

func checkEcho(t *testing.T, agg *client.Aggregate, items []json.RawMessage) {
	t.Helper()
	if agg.Status != client.StatusCompleted || agg.Total != len(items) || agg.Succeeded != len(items) || agg.Failed != 0 {
		t.Fatalf("aggregate: status %s total %d succeeded %d failed %d, want completed %d/%d",
			agg.Status, agg.Total, agg.Succeeded, agg.Failed, len(items), len(items))
	}
	if len(agg.Results) != len(items) {
		t.Fatalf("%d results, want %d", len(agg.Results), len(items))
	}
	for i, r := range agg.Results {
		if r.Item != i || !r.OK || string(r.Output) != string(items[i]) {
			t.Fatalf("result %d: %+v, want item %d ok output %s", i, r, i, items[i])
		}
	}
}

// roles is a running deployment: a coordinator, a worker and a client, each
// on its own least-privilege user, with their connections' error recorders.
type roles struct {
	workerNC, clientNC             *nats.Conn
	client                         *client.Client
	coord                          *coordinator.Coordinator
	coordRec, workerRec, clientRec *recorder
}

func (d *deployment) start(workerOpts ...worker.Option) *roles {
	d.t.Helper()
	r := &roles{coordRec: newRecorder(), workerRec: newRecorder(), clientRec: newRecorder()}
	r.coord = d.startCoordinator(r.coordRec)
	r.workerNC = d.connect(security.Worker, r.workerRec)
	d.startWorker(r.workerNC, r.workerRec, workerOpts...)
	r.clientNC = d.connect(security.Client, r.clientRec)
	r.client = d.newClient(r.clientNC)
	return r
}

// run submits a batch of echo items as the client, asks its status, waits
// for its aggregate with progress events and checks every result.
func (r *roles) run(ctx context.Context, t *testing.T, items []json.RawMessage) *client.Aggregate {
	t.Helper()
	sub, err := r.client.Submit(ctx, client.BatchRequest{Activity: "echo", Items: items})
	if err != nil {
		t.Fatalf("submit as client: %v (violations %q)", err, r.clientRec.violations())
	}
	if sub.Status != client.StatusRunning || sub.Total != len(items) {
		t.Fatalf("submit reply %+v", sub)
	}
	st, err := r.client.Status(ctx, sub.BatchID)
	if err != nil || st.BatchID != sub.BatchID {
		t.Fatalf("status as client: %+v, %v", st, err)
	}
	agg, err := r.client.Wait(ctx, sub.BatchID, func(client.Progress) {})
	if err != nil {
		t.Fatalf("wait as client: %v (violations %q)", err, r.clientRec.violations())
	}
	checkEcho(t, agg, items)
	return agg
}

// noViolations fails the test if any role tripped a permission violation.
func (r *roles) noViolations(t *testing.T) {
	t.Helper()
	for _, x := range []struct {
		role security.Role
		rec  *recorder
	}{{security.Coordinator, r.coordRec}, {security.Worker, r.workerRec}, {security.Client, r.clientRec}} {
		if v := x.rec.violations(); len(v) > 0 {
			t.Errorf("%s: permission violations while running batches: %q", x.role, v)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// A coordinator, a worker and a client, each with its own least-privilege
// user and inbox prefix, run batches end to end: one whose aggregate is a
// message, one whose results go through the object store, one updated and
// canceled while it runs and then redriven. None of them
// trips a single permission violation doing so. Then the worker's and the
// client's credentials are shown to be refused everything outside their
// role, and a connection without credentials is refused.
func TestLeastPrivilege(t *testing.T) {
	t.Parallel()
	eachLayout(t, testLeastPrivilege)
}

// layouts are the two ways of placing the roles: every role in one
// account (ServerConfig), or the shipped accounts layout (AccountsConfig).
var layouts = []struct {
	name string
	new  func(*testing.T) *deployment
}{
	{"one account", func(t *testing.T) *deployment { return newDeployment(t, security.Options{}) }},
	{"accounts", newAccountsDeployment},
}

// eachLayout runs test in each layout, in parallel.
func eachLayout(t *testing.T, test func(*testing.T, *deployment)) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			test(t, l.new(t))
		})
	}
}

func testLeastPrivilege(t *testing.T, d *deployment) {
	n := d.names
	s := security.StreamsOf(n)
	r := d.start()
	workerNC, clientNC, c := r.workerNC, r.clientNC, r.client
	workerRec, clientRec, coordRec := r.workerRec, r.clientRec, r.coordRec

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	small := echoItems(200, 10)
	agg := r.run(ctx, t, small)
	if agg.ResultsRef != nil {
		t.Fatalf("small batch's results went to the object store: %+v", agg.ResultsRef)
	}
	batch := agg.BatchID
	if agg := r.run(ctx, t, echoItems(2500, 40)); agg.ResultsRef == nil {
		t.Fatal("big batch's results were not stored in the object store; the test does not cover object store reads")
	}

	// Live control: update and cancel a running batch (the coordinator
	// watches its state until it ends), then redrive what did not run.
	slow := make([]json.RawMessage, 20)
	for i := range slow {
		slow[i] = json.RawMessage(`{"ms":100}`)
	}
	running, err := c.Submit(ctx, client.BatchRequest{Activity: "sleep", Items: slow, Options: client.Options{MaxInFlight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	two := 2
	if p, err := c.Update(ctx, running.BatchID, client.OptionsUpdate{MaxInFlight: &two}); err != nil || p.Options == nil || p.Options.MaxInFlight != 2 {
		t.Fatalf("update as client: %+v, %v", p, err)
	}
	if p, err := c.Cancel(ctx, running.BatchID); err != nil || p.Status != client.StatusCanceled {
		t.Fatalf("cancel as client: %+v, %v", p, err)
	}
	if agg, err := c.Wait(ctx, running.BatchID, nil); err != nil || agg.Status != client.StatusCanceled {
		t.Fatalf("canceled batch: %+v, %v", agg, err)
	}
	redriven, err := c.Redrive(ctx, running.BatchID, "")
	if err != nil {
		t.Fatalf("redrive as client: %v", err)
	}
	if agg, err := c.Wait(ctx, redriven.BatchID, nil); err != nil || agg.Status != client.StatusCompleted || agg.Failed != 0 {
		t.Fatalf("redriven batch: %+v, %v", agg, err)
	}
	// Cancel of a finished batch answers at once.
	if p, err := c.Cancel(ctx, batch); err != nil || p.Status != client.StatusCompleted {
		t.Fatalf("cancel as client: %+v, %v", p, err)
	}

	// The client reads a batch's results from the results stream with an
	// ordered consumer.
	js := d.js(clientNC)
	cons, err := js.OrderedConsumer(ctx, s.Results, jetstream.OrderedConsumerConfig{FilterSubjects: []string{n.ResultBatchFilter(batch)}})
	if err != nil {
		t.Fatalf("client ordered consumer on %s: %v", s.Results, err)
	}
	msgs, err := cons.Fetch(len(small), jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range msgs.Messages() {
		got++
	}
	if got != len(small) {
		t.Fatalf("client read %d results of batch %s, want %d (%v)", got, batch, len(small), msgs.Error())
	}
	r.noViolations(t)

	workBefore := streamLastSeq(t, d.srv, s.Work)
	resultsBefore := streamLastSeq(t, d.srv, s.Results)
	batchesBefore := streamLastSeq(t, d.srv, s.Batches)
	controlBefore := streamLastSeq(t, d.srv, s.Control)

	t.Run("worker cannot submit a batch", func(t *testing.T) {
		wc, err := client.New(workerNC)
		if err != nil {
			t.Fatal(err)
		}
		err = denied(t, workerRec, n.Submit(), func(ctx context.Context) error {
			_, err := wc.Submit(ctx, client.BatchRequest{Activity: "echo", Items: small[:1]})
			return err
		})
		if err == nil {
			t.Fatal("submit with worker credentials succeeded")
		}
		denied(t, workerRec, n.Status(), func(ctx context.Context) error {
			_, err := wc.Status(ctx, batch)
			return err
		})
		denied(t, workerRec, n.Cancel(), func(ctx context.Context) error {
			_, err := wc.Cancel(ctx, batch)
			return err
		})
		// Nor pose as a coordinator to take requests.
		if _, err := workerNC.QueueSubscribe(n.Submit(), n.CoordinatorQueue(), func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		workerRec.await(t, n.Submit()+`"`)
	})

	t.Run("worker cannot publish work", func(t *testing.T) {
		work := n.Work("echo", "forged")
		if err := workerNC.Publish(work, []byte(`{"batch_id":"forged","item":0}`)); err != nil {
			t.Fatal(err)
		}
		workerRec.await(t, work)
		wjs := d.js(workerNC)
		if err := denied(t, workerRec, n.Work("echo", "forged2"), func(ctx context.Context) error {
			_, err := wjs.Publish(ctx, n.Work("echo", "forged2"), []byte(`{}`))
			return err
		}); err == nil {
			t.Fatal("JetStream publish of work with worker credentials succeeded")
		}
		// Nor batch tokens, aggregates, progress, or work via a stream of its own.
		for _, subj := range []string{n.Token("forged"), n.Done("forged"), n.Progress("forged"), n.Poke("forged")} {
			if err := workerNC.Publish(subj, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			workerRec.await(t, subj)
		}
		denied(t, workerRec, d.api("$JS.API.STREAM.CREATE.FORGED"), func(ctx context.Context) error {
			_, err := wjs.CreateStream(ctx, jetstream.StreamConfig{Name: "FORGED", Subjects: []string{"forged.>"}})
			return err
		})
		denied(t, workerRec, d.api("$JS.API.STREAM.PURGE."+s.Work), func(ctx context.Context) error {
			st, err := wjs.Stream(ctx, s.Work)
			if err != nil {
				return err
			}
			return st.Purge(ctx)
		})
		denied(t, workerRec, d.api("$JS.API.STREAM.UPDATE."+s.Work), func(ctx context.Context) error {
			_, err := wjs.UpdateStream(ctx, jetstream.StreamConfig{Name: s.Work, Subjects: []string{n.WorkAll()}, Retention: jetstream.WorkQueuePolicy})
			return err
		})
		if got := streamLastSeq(t, d.srv, s.Work); got != workBefore {
			t.Fatalf("work stream moved from sequence %d to %d", workBefore, got)
		}
	})

	t.Run("worker cannot read FANOUT_BATCHES", func(t *testing.T) {
		wjs := d.js(workerNC)
		// Not even the bucket's stream info: a worker needs only the work
		// and results streams.
		denied(t, workerRec, d.api("$JS.API.STREAM.INFO."+s.Batches), func(ctx context.Context) error {
			_, err := wjs.KeyValue(ctx, n.BatchesBucket())
			return err
		})
		denied(t, workerRec, d.api("$JS.API.DIRECT.GET."+s.Batches), func(ctx context.Context) error {
			_, err := workerNC.RequestWithContext(ctx, d.api("$JS.API.DIRECT.GET."+s.Batches+".$KV."+n.BatchesBucket()+"."+batch), nil)
			return err
		})
		denied(t, workerRec, d.api("$JS.API.STREAM.MSG.GET."+s.Batches), func(ctx context.Context) error {
			_, err := workerNC.RequestWithContext(ctx, d.api("$JS.API.STREAM.MSG.GET."+s.Batches),
				[]byte(`{"last_by_subj":"$KV.`+n.BatchesBucket()+`.`+batch+`"}`))
			return err
		})
		denied(t, workerRec, d.api("$JS.API.CONSUMER.CREATE."+s.Batches), func(ctx context.Context) error {
			_, err := wjs.OrderedConsumer(ctx, s.Batches, jetstream.OrderedConsumerConfig{})
			return err
		})
		// Nor see the values go by: not the bucket's subjects, not the
		// coordinator's or the client's inbox (where the coordinator's
		// reads and the client's replies arrive), not every inbox (in the
		// accounts layout "_INBOX.>" is the worker's own: its account
		// holds workers only).
		subjects := []string{
			"$KV." + n.BatchesBucket() + ".>",
			d.opts.InboxPrefix(security.Coordinator) + ".>",
			d.opts.InboxPrefix(security.Client) + ".>",
			">",
		}
		if d.domain == "" {
			subjects = append(subjects, "_INBOX.>")
		}
		for _, subj := range subjects {
			if _, err := workerNC.Subscribe(subj, func(*nats.Msg) {}); err != nil {
				t.Fatal(err)
			}
			workerRec.await(t, subj+`"`)
		}
		// Nor write them.
		if err := workerNC.Publish("$KV."+n.BatchesBucket()+"."+batch, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		workerRec.await(t, "$KV."+n.BatchesBucket()+"."+batch)
		if got := streamLastSeq(t, d.srv, s.Batches); got != batchesBefore {
			t.Fatalf("batches bucket moved from sequence %d to %d", batchesBefore, got)
		}
	})

	t.Run("client cannot publish work or results", func(t *testing.T) {
		for _, subj := range []string{n.Work("echo", "forged"), n.Result(batch, 0), n.Result("forged", 0), n.Token("forged"), n.Done("forged"), "$KV." + n.BatchesBucket() + "." + batch} {
			if err := clientNC.Publish(subj, []byte(`{"batch_id":"forged","item":0,"ok":true}`)); err != nil {
				t.Fatal(err)
			}
			clientRec.await(t, subj)
		}
		// Nor pull work (and so ack it away).
		denied(t, clientRec, d.api("$JS.API.CONSUMER.MSG.NEXT."+s.Work), func(ctx context.Context) error {
			_, err := clientNC.RequestWithContext(ctx, d.api("$JS.API.CONSUMER.MSG.NEXT."+s.Work+"."+n.WorkConsumer("echo")), []byte(`{"batch":1}`))
			return err
		})
		// Nor read the batch state: status goes through the coordinator.
		denied(t, clientRec, d.api("$JS.API.STREAM.INFO."+s.Batches), func(ctx context.Context) error {
			_, err := js.KeyValue(ctx, n.BatchesBucket())
			return err
		})
		// Nor list the consumers of the results stream (the coordinator's
		// among them).
		denied(t, clientRec, d.api("$JS.API.CONSUMER.NAMES."+s.Results), func(ctx context.Context) error {
			st, err := js.Stream(ctx, s.Results)
			if err != nil {
				return err
			}
			names := st.ConsumerNames(ctx)
			for range names.Name() {
			}
			return names.Err()
		})
		for _, subj := range []string{n.WorkAll(), d.opts.InboxPrefix(security.Coordinator) + ".>", n.Submit()} {
			if _, err := clientNC.Subscribe(subj, func(*nats.Msg) {}); err != nil {
				t.Fatal(err)
			}
			clientRec.await(t, subj+`"`)
		}
		if got := streamLastSeq(t, d.srv, s.Work); got != workBefore {
			t.Fatalf("work stream moved from sequence %d to %d", workBefore, got)
		}
		if got := streamLastSeq(t, d.srv, s.Results); got != resultsBefore {
			t.Fatalf("results stream moved from sequence %d to %d", resultsBefore, got)
		}
		if got := streamLastSeq(t, d.srv, s.Control); got != controlBefore {
			t.Fatalf("control stream moved from sequence %d to %d", controlBefore, got)
		}
	})

	t.Run("unauthenticated connection is refused", func(t *testing.T) {
		for name, opts := range map[string][]nats.Option{
			"no credentials": nil,
			"wrong password": {nats.UserInfo(string(security.Worker), "wrong")},
			"unknown user":   {nats.UserInfo("admin", d.pass[security.Coordinator])},
		} {
			nc, err := nats.Connect(d.url, opts...)
			if err == nil {
				nc.Close()
				t.Fatalf("%s: connected", name)
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("%s: %v, want an authorization violation", name, err)
			}
		}
	})

	if v := coordRec.violations(); len(v) > 0 {
		t.Errorf("coordinator: permission violations: %q", v)
	}
}

// The permission sets follow the prefix: a deployment with its own prefix
// runs on them just the same. SharedInbox is the mode for binaries that
// cannot set an inbox prefix (every role on "_INBOX").
func TestLeastPrivilegeCustomPrefixSharedInbox(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, security.Options{Prefix: "acme_prod", SharedInbox: true})
	r := d.start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r.run(ctx, t, echoItems(100, 10))
	r.noViolations(t)

	// The default deployment's subjects are not this one's.
	def := messages.MustNames("")
	if err := r.workerNC.Publish(def.Result("b", 0), nil); err != nil {
		t.Fatal(err)
	}
	r.workerRec.await(t, def.Result("b", 0))
	if err := r.clientNC.Publish(def.Submit(), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	r.clientRec.await(t, def.Submit())
}

// The coordinator may publish to the work, result, token and aggregate
// subjects and to the batch-state bucket, and it answers requests on
// whatever reply subject they carry (allow_responses). A client that puts
// one of those subjects as the reply of a status request has the
// coordinator write its reply there: a forged result, work item, token,
// aggregate or batch state. The coordinator must only answer on inboxes.
func TestCoordinatorAnswersOnlyInboxes(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, security.Options{})
	n := d.names
	r := d.start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	agg := r.run(ctx, t, echoItems(3, 5))

	// The client may subscribe to results and aggregates, so it sees
	// whether the coordinator writes there. The coordinator's messages
	// reach the client in the order it sent them, so once the honest
	// status reply is in, a forged reply would be too.
	var subs []*nats.Subscription
	for _, subj := range []string{n.Result("victim", 0), n.Done("victim")} {
		sub, err := r.clientNC.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
		if err := r.clientNC.PublishRequest(n.Status(), subj, []byte(`{"batch_id":"`+agg.BatchID+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.client.Status(ctx, agg.BatchID); err != nil {
		t.Fatal(err)
	}
	for _, sub := range subs {
		if m, err := sub.NextMsg(0); err == nil {
			t.Errorf("the coordinator answered a status request on %s: %s", m.Subject, m.Data)
		}
	}
}

func TestServerConfigRefusesBadUsers(t *testing.T) {
	t.Parallel()
	for name, u := range map[string]security.User{
		"no identity":           {Role: security.Worker},
		"name without password": {Role: security.Worker, Name: "w"},
		"name and nkey":         {Role: security.Worker, Name: "w", Password: "p", NKey: "UABC"},
		"nkey with password":    {Role: security.Worker, NKey: "UABC", Password: "p"},
		"password and variable": {Role: security.Worker, Name: "w", Password: "p", PasswordVar: "P"},
		"unknown role":          {Role: "root", Name: "w", Password: "p"},
	} {
		if _, err := security.ServerConfig(security.Options{}, []security.User{u}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := security.Permissions(security.Options{Prefix: "bad prefix"}); err == nil {
		t.Error("a prefix with a space was accepted")
	}
}
