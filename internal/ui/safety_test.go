package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/internal/ui"
	"github.com/fanoutdev/fanout/worker"
)

// A listen address other machines can reach needs a token or read-only
// mode; loopback needs neither.
func TestListenAddressRules(t *testing.T) {
	t.Parallel()
	c := testenv.Server(t).Client
	for _, tc := range []struct {
		listen   string
		token    string
		readOnly bool
		ok       bool
	}{
		{"127.0.0.1:0", "", false, true},
		{"localhost:8480", "", false, true},
		{"[::1]:0", "", false, true},
		{"0.0.0.0:8480", "", false, false},
		{":8480", "", false, false},
		{"192.0.2.7:8480", "", false, false},
		{"0.0.0.0:8480", "secret", false, true},
		{"0.0.0.0:8480", "", true, true},
	} {
		_, err := ui.New(ui.Config{Client: c, Listen: tc.listen, Token: tc.token, ReadOnly: tc.readOnly})
		if tc.ok && err != nil {
			t.Errorf("%s token %q read-only %v: %v", tc.listen, tc.token, tc.readOnly, err)
		}
		if !tc.ok && !errors.Is(err, ui.ErrUnsafeListen) {
			t.Errorf("%s without a token, not read-only: %v, want ErrUnsafeListen", tc.listen, err)
		}
	}
	if _, err := ui.New(ui.Config{Client: c, Listen: "8480"}); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Errorf("listen 8480: %v, want an error naming host:port", err)
	}
}

// An action without the form's CSRF token, with a wrong one, or sent
// from another site is refused and changes nothing; with the token it
// runs.
func TestActionsNeedTheCSRFToken(t *testing.T) {
	t.Parallel()
	b := setup(t, ui.Config{})
	r := b.env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(50, 200, nil), Options: client.Options{MaxInFlight: 1}})
	c := b.browser()
	code, page := b.get(c, "/batches/"+r.BatchID+"/cancel")
	if code != http.StatusOK {
		t.Fatalf("confirmation page: %d\n%s", code, page)
	}
	token := b.csrf(page)

	for name, tc := range map[string]struct {
		form   url.Values
		header http.Header
	}{
		"no token":     {url.Values{}, nil},
		"wrong token":  {url.Values{"csrf": {strings.Repeat("0", 64)}}, nil},
		"cross-site":   {url.Values{"csrf": {token}}, http.Header{"Sec-Fetch-Site": {"cross-site"}}},
		"other origin": {url.Values{"csrf": {token}}, http.Header{"Origin": {"https://evil.example"}}},
	} {
		resp, body := b.post(c, "/batches/"+r.BatchID+"/cancel", tc.form, tc.header)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s: %d, want 403\n%s", name, resp.StatusCode, body)
		}
	}
	// Another browser (no CSRF cookie) with this page's token: refused too.
	if resp, _ := b.post(b.browser(), "/batches/"+r.BatchID+"/cancel", url.Values{"csrf": {token}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("token without its cookie: %d, want 403", resp.StatusCode)
	}
	if p := b.status(r.BatchID); p.Status != client.StatusRunning {
		t.Fatalf("after refused cancels the batch is %s, want running", p.Status)
	}

	resp, body := b.post(c, "/batches/"+r.BatchID+"/cancel", url.Values{"csrf": {token}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/batches/"+r.BatchID+"?done=cancel" {
		t.Fatalf("cancel with the token: %d to %q\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	eventually(t, 30*time.Second, "batch canceled", func() bool { return b.status(r.BatchID).Status == client.StatusCanceled })
}

// Item errors, worker names and what the address says are shown as text,
// never as markup.
func TestHostileTextIsEscaped(t *testing.T) {
	t.Parallel()
	const (
		hostile = `<script>alert("x")</script><img src=x onerror=alert(1)>`
		worker1 = `<b onmouseover=alert(2)>evil-worker</b>`
	)
	b := setup(t, ui.Config{}, worker.WithName(worker1))
	r := b.env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(6, 0, failEvery(2, hostile+" %d")), Options: client.Options{MaxAttempts: 1}})
	b.env.Wait(r.BatchID, time.Minute)
	c := b.browser()
	escaped := `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;`
	for _, path := range []string{"/batches/" + r.BatchID, "/batches/" + r.BatchID + "?item=2", "/workers"} {
		code, page := b.get(c, path)
		if code != http.StatusOK {
			t.Fatalf("%s: %d\n%s", path, code, page)
		}
		for _, raw := range []string{"<script>alert", "<img src=x", "<b onmouseover"} {
			if strings.Contains(page, raw) {
				t.Fatalf("%s holds %q unescaped:\n%s", path, raw, page)
			}
		}
		if !strings.Contains(page, "&lt;b onmouseover=alert(2)&gt;evil-worker&lt;/b&gt;") {
			t.Fatalf("%s: the worker's name is not shown escaped:\n%s", path, page)
		}
		if path != "/workers" && !strings.Contains(page, escaped) {
			t.Fatalf("%s: the item error is not shown escaped:\n%s", path, page)
		}
	}
	for _, path := range []string{"/batches?activity=%3Cscript%3Ealert(3)%3C/script%3E", "/go?id=%3Cscript%3Ealert(4)%3C/script%3E", "/batches/%3Cscript%3Ealert(5)%3C%2Fscript%3E"} {
		code, page := b.get(c, path)
		if code < 400 || strings.Contains(page, "<script>alert") {
			t.Fatalf("%s: %d, hostile text unescaped or accepted:\n%s", path, code, page)
		}
	}
	// Downloads are JSON with <, > and & escaped, and say what they are.
	resp, err := c.Get(b.srv.URL + "/batches/" + r.BatchID + "/results.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("results download: %s, nosniff %q", ct, resp.Header.Get("X-Content-Type-Options"))
	}
}

// Read-only: no action is offered, and none runs.
func TestReadOnlyRefusesActions(t *testing.T) {
	t.Parallel()
	b := setup(t, ui.Config{ReadOnly: true})
	r := b.env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(20, 200, nil), Options: client.Options{MaxInFlight: 1}})
	c := b.browser()
	code, page := b.get(c, "/batches/"+r.BatchID)
	if code != http.StatusOK || strings.Contains(page, "/cancel") || !strings.Contains(page, "read-only") {
		t.Fatalf("read-only batch page: %d, offers cancel or lacks the read-only badge:\n%s", code, page)
	}
	if code, _ := b.get(c, "/batches/"+r.BatchID+"/cancel"); code != http.StatusForbidden {
		t.Fatalf("read-only confirmation page: %d, want 403", code)
	}
	if resp, _ := b.post(c, "/batches/"+r.BatchID+"/cancel", url.Values{"csrf": {strings.Repeat("0", 64)}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("read-only cancel: %d, want 403", resp.StatusCode)
	}
	if p := b.status(r.BatchID); p.Status != client.StatusRunning {
		t.Fatalf("batch %s after a read-only cancel, want running", p.Status)
	}
}

// With a token, pages need it: a login form sets a cookie, or a bearer
// header carries it.
func TestTokenIsRequired(t *testing.T) {
	t.Parallel()
	b := setup(t, ui.Config{Token: "s3cret"})
	c := b.browser()
	resp, err := c.Get(b.srv.URL + "/workers")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login?next=%2Fworkers") {
		t.Fatalf("without the token: %d to %q, want the login form", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, _ := b.get(c, "/events?batch=x"); code != http.StatusUnauthorized {
		t.Fatalf("live updates without the token: %d, want 401", code)
	}
	code, login := b.get(c, "/login?next=/workers")
	if code != http.StatusOK {
		t.Fatalf("login page: %d", code)
	}
	if resp, _ := b.post(c, "/login", url.Values{"csrf": {b.csrf(login)}, "token": {"guess"}, "next": {"/workers"}}, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d, want 401", resp.StatusCode)
	}
	resp, _ = b.post(c, "/login", url.Values{"csrf": {b.csrf(login)}, "token": {"s3cret"}, "next": {"//evil.example/"}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/batches" {
		t.Fatalf("login with an outside next: %d to %q, want /batches", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, page := b.get(c, "/workers"); code != http.StatusOK || !strings.Contains(page, "Workers") {
		t.Fatalf("after login: %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, b.srv.URL+"/activities", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	if resp, err := b.browser().Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("bearer token: %v %v", resp.StatusCode, err)
	}
}

// Without a token, only requests addressed to a loopback name are
// answered: a page whose name was rebound to 127.0.0.1 gets nothing.
func TestOtherHostNamesRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, ui.Config{})
	req, _ := http.NewRequest(http.MethodGet, b.srv.URL+"/batches", nil)
	req.Host = "rebound.example:8480"
	resp, err := b.browser().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("host rebound.example: %d, want 421", resp.StatusCode)
	}
	req.Host = "localhost:8480"
	if resp, err := b.browser().Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("host localhost: %v, %v", resp.StatusCode, err)
	}
}

// An activity with queued work and no live worker is flagged on the
// activities page.
func TestActivityWithoutWorkersIsFlagged(t *testing.T) {
	t.Parallel()
	b := setup(t, ui.Config{})
	lonely := b.env.Worker(func(w *worker.Worker) {
		worker.Handle(w, "lonely", func(context.Context, struct{}) (struct{}, error) { return struct{}{}, nil })
	}, worker.WithName("lonely-worker"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := lonely.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	c := b.browser()
	if _, page := b.get(c, "/activities"); strings.Contains(page, `id="stranded"`) {
		t.Fatalf("flagged before any work was queued:\n%s", page)
	}
	b.env.Submit(client.BatchRequest{Activity: "lonely", Items: []json.RawMessage{json.RawMessage(`{}`)}})
	eventually(t, 30*time.Second, "the lonely activity flagged", func() bool {
		_, page := b.get(c, "/activities")
		return strings.Contains(page, `id="stranded"`) && strings.Contains(page, "no live worker")
	})
}
