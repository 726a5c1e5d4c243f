package security_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/security"
	"github.com/fanoutdev/fanout/worker"
)

// connectAdmin connects as the admin of the accounts layout: no limits,
// in the fanout account, where the streams, the coordinators and every
// message that counts are.
func (d *deployment) connectAdmin() *nats.Conn {
	d.t.Helper()
	nc, err := nats.Connect(d.url, nats.UserInfo(string(security.Admin), d.pass[security.Admin]))
	if err != nil {
		d.t.Fatalf("connect as admin: %v", err)
	}
	d.t.Cleanup(nc.Close)
	return nc
}

// tap keeps every message of one core subscription.
type tap struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func subscribeTap(t *testing.T, nc *nats.Conn, subject string) *tap {
	t.Helper()
	tp := &tap{}
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		tp.msgs = append(tp.msgs, m)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return tp
}

func (tp *tap) all() []*nats.Msg {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]*nats.Msg(nil), tp.msgs...)
}

// attack is a request a worker or a client is allowed to send, whose reply
// subject it points at one of a running batch's subjects.
type attack struct {
	what    string
	subject string
	body    string
}

// In one account, the server delivers a JetStream API reply (and a
// coordinator's) to whatever reply subject the request names, streams'
// subjects among them: a client or a worker could so write an aggregate,
// a result, the batch state or work of any running batch. In the shipped
// accounts layout a worker and a client aim every reply they can get at a
// running batch's aggregate, result, batch-state and work subjects (and at
// the request subjects, for the client): nothing of it reaches the fanout
// account, the batch counts each item once and publishes one aggregate.
// Only subscribers in the attacker's own account can see what it aimed
// there (a client's, in the client account: see docs/security.md, Known
// limits); Client.Wait there still returns the stored aggregate.
func TestAccountsReplyAttacks(t *testing.T) {
	t.Parallel()
	for _, attacker := range []security.Role{security.Worker, security.Client} {
		t.Run(string(attacker), func(t *testing.T) {
			t.Parallel()
			testReplyAttacks(t, attacker)
		})
	}
}

func testReplyAttacks(t *testing.T, attacker security.Role) {
	d := newAccountsDeployment(t)
	n := d.names
	// A short ack wait: a work message the attacking worker pulls (to aim
	// it somewhere) goes back to the real worker after it.
	r := d.start(worker.WithAckWait(2 * time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	other := r.run(ctx, t, echoItems(3, 5)) // a finished batch, whose stored messages are real ones to aim
	admin := d.connectAdmin()

	const items = 8
	batch := "victim-" + string(attacker)
	done := subscribeTap(t, admin, n.Done(batch))
	aggregates := subscribeTap(t, admin, n.Aggregate(batch))
	results := subscribeTap(t, admin, n.ResultBatchFilter(batch))
	states := subscribeTap(t, admin, "$KV."+n.BatchesBucket()+"."+batch)
	work := subscribeTap(t, admin, n.Work("sleep", batch))
	clientDone := subscribeTap(t, r.clientNC, n.Done(batch)) // in the client account

	req := client.BatchRequest{ID: batch, Activity: "sleep", Options: client.Options{MaxInFlight: 2}}
	for range items {
		req.Items = append(req.Items, json.RawMessage(`{"ms":300}`))
	}
	sub, err := r.client.Submit(ctx, req)
	if err != nil || sub.BatchID != batch {
		t.Fatalf("submit: %+v, %v", sub, err)
	}

	targets := []string{
		n.Done(batch), n.Aggregate(batch), n.Result(batch, 0), n.Result(batch, items-1),
		"$KV." + n.BatchesBucket() + "." + batch, n.Work("sleep", batch),
	}
	var attacks []attack
	rec := newRecorder()
	atk := d.connect(attacker, rec)
	switch attacker {
	case security.Worker:
		attacks = []attack{
			{"work stream info", d.api("$JS.API.STREAM.INFO." + n.WorkStream()), ""},
			{"work consumer info", d.api("$JS.API.CONSUMER.INFO." + n.WorkStream() + "." + n.WorkConsumer("sleep")), ""},
			{"account info", d.api("$JS.API.INFO"), ""},
			// A work message of the batch itself, with its ack subject.
			{"pulled work", d.api("$JS.API.CONSUMER.MSG.NEXT." + n.WorkStream() + "." + n.WorkConsumer("sleep")), `{"batch":1,"no_wait":true}`},
		}
	case security.Client:
		targets = append(targets, n.Submit(), n.Update())
		attacks = []attack{
			{"done stream info", d.api("$JS.API.STREAM.INFO." + n.DoneStream()), ""},
			// Real aggregates and results, of another batch.
			{"another batch's aggregate", d.api("$JS.API.DIRECT.GET." + n.DoneStream()), `{"last_by_subj":"` + n.Done(other.BatchID) + `"}`},
			{"another batch's result", d.api("$JS.API.DIRECT.GET." + n.ResultsStream()), `{"last_by_subj":"` + n.Result(other.BatchID, 0) + `"}`},
			// The coordinator's own answer about the batch.
			{"the batch's status", n.Status(), `{"batch_id":"` + batch + `"}`},
		}
	}
	for _, a := range attacks {
		for _, target := range targets {
			if err := atk.PublishRequest(a.subject, target, []byte(a.body)); err != nil {
				t.Fatalf("%s aimed at %s: %v", a.what, target, err)
			}
		}
		// The same request with a real inbox is answered: the attacker
		// could make each of the requests above.
		if _, err := atk.RequestWithContext(ctx, a.subject, []byte(a.body)); err != nil {
			t.Fatalf("%s as %s: %v (violations %q)", a.what, attacker, err, rec.violations())
		}
	}
	if v := rec.violations(); len(v) > 0 {
		t.Fatalf("the %s's requests were refused by its permissions, so the test proves nothing: %q", attacker, v)
	}

	agg, err := r.client.Wait(ctx, batch, nil)
	if err != nil {
		t.Fatalf("wait in the client account: %v", err)
	}
	checkSlept(t, agg, batch, items)
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := r.clientNC.Flush(); err != nil {
		t.Fatal(err)
	}

	// In the fanout account: one aggregate, one result per item, and only
	// the coordinator's own batch states and work messages.
	got := done.all()
	if len(got) != 1 {
		t.Fatalf("%d messages on %s in the fanout account, want the one aggregate: %s", len(got), n.Done(batch), dump(got))
	}
	var published messages.Aggregate
	if err := messages.Decode(got[0].Data, &published); err != nil {
		t.Fatalf("the message on %s: %v: %s", n.Done(batch), err, got[0].Data)
	}
	checkSlept(t, &published, batch, items)
	if got := aggregates.all(); len(got) != 1 || got[0].Header.Get(jetstream.StreamHeader) != n.DoneStream() {
		t.Fatalf("%d messages on %s, want the done stream's republish of the aggregate: %s", len(got), n.Aggregate(batch), dump(got))
	}
	got = results.all()
	if len(got) != items {
		t.Fatalf("%d messages on %s, want one per item, %d: %s", len(got), n.ResultBatchFilter(batch), items, dump(got))
	}
	seen := map[int]bool{}
	for _, m := range got {
		var res messages.ResultMessage
		b, item, ok := n.ParseResultSubject(m.Subject)
		if err := messages.Decode(m.Data, &res); err != nil || !ok || b != batch || res.BatchID != batch || res.Item != item || !res.OK || seen[item] {
			t.Fatalf("result on %s is not a worker's result of that item (%v): %s", m.Subject, err, m.Data)
		}
		seen[item] = true
	}
	for _, m := range states.all() {
		var st messages.BatchState
		if err := json.Unmarshal(m.Data, &st); err != nil || st.BatchID != batch {
			t.Fatalf("a message on %s is not the coordinator's batch state (%v): %s", m.Subject, err, m.Data)
		}
	}
	for _, m := range work.all() {
		var wm messages.WorkMessage
		if err := messages.Decode(m.Data, &wm); err != nil || wm.BatchID != batch {
			t.Fatalf("a message on %s is not the coordinator's work (%v): %s", m.Subject, err, m.Data)
		}
	}
	// What the streams keep agrees.
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		stream, filter string
		want           uint64
	}{{n.DoneStream(), n.Done(batch), 1}, {n.ResultsStream(), n.ResultBatchFilter(batch), items}} {
		st, err := js.Stream(ctx, c.stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(c.filter))
		if err != nil {
			t.Fatal(err)
		}
		var total uint64
		for _, k := range info.State.Subjects {
			total += k
		}
		if total != c.want {
			t.Fatalf("stream %s holds %d messages on %s, want %d", c.stream, total, c.filter, c.want)
		}
	}

	// In the client account: a worker's replies never come here; a
	// client's own land here, next to the one aggregate.
	genuine := 0
	for _, m := range clientDone.all() {
		var a messages.Aggregate
		if messages.Decode(m.Data, &a) == nil && a.BatchID == batch && a.Status == messages.StatusCompleted && len(a.Results) == items {
			genuine++
		}
	}
	forged := len(clientDone.all()) - genuine
	switch {
	case genuine != 1:
		t.Fatalf("%d aggregates of the batch on %s in the client account, want 1: %s", genuine, n.Done(batch), dump(clientDone.all()))
	case attacker == security.Worker && forged != 0:
		t.Fatalf("a worker's replies reached %s in the client account: %s", n.Done(batch), dump(clientDone.all()))
	case attacker == security.Client && forged == 0:
		// docs/security.md says they do; if the server stops delivering
		// them, the docs' known limit shrinks.
		t.Fatalf("a client's replies aimed at %s did not reach its own account, as docs/security.md says they do", n.Done(batch))
	}
	t.Logf("%s aimed %d replies at %d subjects; %d reached its own account's subscriber of %s, none the fanout account", attacker, len(attacks)*len(targets), len(targets), forged, n.Done(batch))
	r.noViolations(t)
}

// checkSlept checks the aggregate of a batch of sleep items that all ran.
func checkSlept(t *testing.T, agg *messages.Aggregate, batch string, items int) {
	t.Helper()
	if agg.BatchID != batch || agg.Status != messages.StatusCompleted || agg.Total != items || agg.Succeeded != items || agg.Failed != 0 || len(agg.Results) != items {
		t.Fatalf("aggregate: batch %s status %s total %d succeeded %d failed %d results %d, want %s completed %d/%d",
			agg.BatchID, agg.Status, agg.Total, agg.Succeeded, agg.Failed, len(agg.Results), batch, items, items)
	}
	for i, r := range agg.Results {
		if r.Item != i || !r.OK {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
}

func dump(msgs []*nats.Msg) string {
	var b strings.Builder
	for _, m := range msgs {
		data := string(m.Data)
		if len(data) > 200 {
			data = data[:200] + "..."
		}
		fmt.Fprintf(&b, "\n  %s %s", m.Subject, data)
	}
	return b.String()
}

// A second client account is a tenant: another tenant's client cannot
// reach it with replies either (its subscribers see only the aggregate).
// What a tenant does not get: the fanout account exports the same
// progress, results and aggregates to every client account, and the
// coordinators answer any client about any batch, so a tenant sees the
// other's batches and may query, update or cancel them by id.
func TestAccountsTenants(t *testing.T) {
	t.Parallel()
	o := security.Options{}
	pass := map[string]string{}
	users := []security.User{}
	for _, u := range []struct {
		name    string
		role    security.Role
		account string
	}{
		{"coordinator", security.Coordinator, ""},
		{"worker", security.Worker, ""},
		{"client", security.Client, ""},
		{"tenant", security.Client, "TENANT"},
	} {
		pass[u.name] = secret(t)
		users = append(users, security.User{Role: u.role, Name: u.name, Password: pass[u.name], Account: u.account})
	}
	conf, err := security.AccountsConfig(o, security.Accounts{Clients: []string{"CLIENTS", "TENANT"}}, users)
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{t: t, names: messages.MustNames(""), domain: messages.DefaultPrefix, pass: map[security.Role]string{
		security.Coordinator: pass["coordinator"], security.Worker: pass["worker"], security.Client: pass["client"],
	}}
	d.srv = startServer(t, conf)
	d.url = d.srv.ClientURL()
	r := d.start()
	n := d.names
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	rec := newRecorder()
	tenantNC, err := nats.Connect(d.url, nats.UserInfo("tenant", pass["tenant"]), rec.option())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tenantNC.Close)
	tenant := d.newClient(tenantNC)

	items := make([]json.RawMessage, 6)
	for i := range items {
		items[i] = json.RawMessage(`{"ms":` + strconv.Itoa(100+i) + `}`)
	}
	sub, err := tenant.Submit(ctx, client.BatchRequest{Activity: "sleep", Items: items, Options: client.Options{MaxInFlight: 1}})
	if err != nil {
		t.Fatalf("submit as tenant: %v (violations %q)", err, rec.violations())
	}
	tenantDone := subscribeTap(t, tenantNC, n.Done(sub.BatchID))
	// The other client account's client aims replies at the tenant's
	// batch: the coordinator's answer about it, and the done stream's info.
	for _, subject := range []string{n.Status(), d.api("$JS.API.STREAM.INFO." + n.DoneStream())} {
		if err := r.clientNC.PublishRequest(subject, n.Done(sub.BatchID), []byte(`{"batch_id":"`+sub.BatchID+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	// ... and, not isolated, reads its state.
	if st, err := r.client.Status(ctx, sub.BatchID); err != nil || st.BatchID != sub.BatchID {
		t.Fatalf("status of the tenant's batch from the other client account: %+v, %v", st, err)
	}
	agg, err := tenant.Wait(ctx, sub.BatchID, nil)
	if err != nil {
		t.Fatalf("wait as tenant: %v", err)
	}
	checkSlept(t, agg, sub.BatchID, len(items))
	if err := tenantNC.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := tenantDone.all(); len(got) != 1 {
		t.Fatalf("%d messages on %s in the tenant's account, want the one aggregate: %s", len(got), n.Done(sub.BatchID), dump(got))
	}
	if v := rec.violations(); len(v) > 0 {
		t.Fatalf("tenant: permission violations: %q", v)
	}
	r.noViolations(t)
}

// Bad layouts are refused with a message that says what to change.
func TestAccountsConfigRefusesBadLayouts(t *testing.T) {
	t.Parallel()
	client := security.User{Role: security.Client, Name: "c", Password: "p"}
	worker := security.User{Role: security.Worker, Name: "w", Password: "p"}
	for name, tc := range map[string]struct {
		a     security.Accounts
		users []security.User
	}{
		"account named twice":          {security.Accounts{Workers: "FANOUT"}, nil},
		"account with a dot":           {security.Accounts{Clients: []string{"A.B"}}, nil},
		"domain with a dot":            {security.Accounts{Domain: "a.b"}, nil},
		"client in an unknown account": {security.Accounts{}, []security.User{{Role: security.Client, Name: "c", Password: "p", Account: "OTHER"}}},
		"worker choosing an account":   {security.Accounts{}, []security.User{{Role: security.Worker, Name: "w", Password: "p", Account: "CLIENTS"}}},
		"user without password":        {security.Accounts{}, []security.User{{Role: security.Client, Name: "c"}}},
	} {
		if _, err := security.AccountsConfig(security.Options{}, tc.a, tc.users); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := security.AccountsConfig(security.Options{}, security.Accounts{}, []security.User{client, worker}); err != nil {
		t.Errorf("a client and a worker: %v", err)
	}
}
