package security_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/security"
	"github.com/fanoutdev/fanout/internal/ui"
)

// The dashboard on the ui role's least-privilege user draws every page and
// runs every action without a permission violation, and may not submit.
func TestUIRole(t *testing.T) {
	t.Parallel()
	eachLayout(t, testUIRole)
}

func testUIRole(t *testing.T, d *deployment) {
	r := d.start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	failing := make([]json.RawMessage, 20)
	for i := range failing {
		failing[i] = json.RawMessage(fmt.Sprintf(`{"ms":0,"fail":"item %d failed"}`, i))
	}
	done, err := r.client.Submit(ctx, client.BatchRequest{Activity: "sleep", Items: failing, Options: client.Options{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Wait(ctx, done.BatchID, nil); err != nil {
		t.Fatal(err)
	}
	slow := make([]json.RawMessage, 200)
	for i := range slow {
		slow[i] = json.RawMessage(`{"ms":100}`)
	}
	running, err := r.client.Submit(ctx, client.BatchRequest{Activity: "sleep", Items: slow, Options: client.Options{MaxInFlight: 2}})
	if err != nil {
		t.Fatal(err)
	}

	rec := newRecorder()
	c := d.newClient(d.connect(security.UI, rec))
	dash, err := ui.New(ui.Config{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(dash.Handler())
	defer func() { srv.CloseClientConnections(); srv.Close() }()
	get := func(path, want string) string {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("%s as ui: %d without %q (violations %q)\n%s", path, resp.StatusCode, want, rec.violations(), body)
		}
		return string(body)
	}
	get("/batches", done.BatchID)
	get("/batches?status=completed&activity=sleep", done.BatchID)
	get("/batches/"+done.BatchID+"?item=3", "item 3 failed")
	get("/batches/"+done.BatchID+"/results.jsonl", "item 19 failed")
	get("/batches/"+done.BatchID+"/aggregate.json", done.BatchID)
	get("/batches/"+running.BatchID, "running")
	get("/workers", "sleep")
	get("/activities", "sleep")
	stop, err := c.SubscribeProgress(running.BatchID, func(client.Progress) {})
	if err != nil {
		t.Fatal(err)
	}
	stop()
	two := 2
	if _, err := c.Update(ctx, running.BatchID, client.OptionsUpdate{MaxInFlight: &two}); err != nil {
		t.Fatalf("update as ui: %v", err)
	}
	if _, err := c.Cancel(ctx, running.BatchID); err != nil {
		t.Fatalf("cancel as ui: %v", err)
	}
	if _, err := c.Redrive(ctx, done.BatchID, ""); err != nil {
		t.Fatalf("redrive as ui: %v", err)
	}
	if v := rec.violations(); len(v) > 0 {
		t.Fatalf("ui: permission violations: %q", v)
	}

	// Submitting is the client's, not the dashboard's.
	denied(t, rec, d.names.Submit(), func(ctx context.Context) error {
		_, err := c.Submit(ctx, client.BatchRequest{Activity: "echo", Items: []json.RawMessage{json.RawMessage(`1`)}})
		return err
	})
}
