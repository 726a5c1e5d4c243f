package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/internal/ui"
	"github.com/fanoutdev/fanout/worker"
)

// bundle is one test's deployment and dashboard.
type bundle struct {
	t   *testing.T
	env *testenv.Env
	srv *httptest.Server
}

// setup starts an embedded NATS server, a coordinator, a worker with the
// built-in activities (more options in opts) and the dashboard.
func setup(t *testing.T, cfg ui.Config, opts ...worker.Option) *bundle {
	t.Helper()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil, opts...)
	cfg.Client = env.Client
	s, err := ui.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections() // live updates a browser still holds open
		srv.Close()
	})
	return &bundle{t: t, env: env, srv: srv}
}

// browser is an HTTP client with cookies that does not follow redirects.
func (b *bundle) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

// get fetches a page and returns its status and body.
func (b *bundle) get(c *http.Client, path string) (int, string) {
	b.t.Helper()
	resp, err := c.Get(b.srv.URL + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// post sends a form and returns the response (body read and closed).
func (b *bundle) post(c *http.Client, path string, form url.Values, header http.Header) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf returns the CSRF token of a page's forms.
func (b *bundle) csrf(page string) string {
	b.t.Helper()
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatal("the page has no CSRF token")
	}
	return m[1]
}

// sleepItems makes n sleep items of ms each; fail(i), if not empty, is
// item i's error.
func sleepItems(n, ms int, fail func(i int) string) []json.RawMessage {
	items := make([]json.RawMessage, n)
	for i := range items {
		f := ""
		if fail != nil {
			f = fail(i)
		}
		items[i], _ = json.Marshal(map[string]any{"ms": ms, "fail": f})
	}
	return items
}

// status reads a batch's status.
func (b *bundle) status(id string) *client.Progress {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := b.env.Client.Status(ctx, id)
	if err != nil {
		b.t.Fatal(err)
	}
	return p
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func failEvery(n int, format string) func(int) string {
	return func(i int) string {
		if i%n == 0 {
			return fmt.Sprintf(format, i)
		}
		return ""
	}
}
