package compose

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fanoutdev/fanout/client"
)

// connect connects to the published NATS port(s), reconnecting for ever:
// as admin, in the account of fanout's streams (for looking at them), and
// as the client user, in the client account, for the fanout client that
// submits and reads the batches across the account boundary.
func connect(t *testing.T, ports ...int) (*nats.Conn, *client.Client) {
	t.Helper()
	var urls []string
	for _, p := range ports {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	dial := func(user, password string) *nats.Conn {
		nc, err := nats.Connect(strings.Join(urls, ","), nats.Name("compose-test "+user), nats.UserInfo(user, password),
			nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond), nats.Timeout(5*time.Second))
		if err != nil {
			t.Fatalf("connect to %v as %s: %v", urls, user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	admin := dial("admin", adminPassword)
	c, err := client.New(dial("client", clientPassword), client.WithRequestTimeout(5*time.Second), client.WithJetStreamDomain("fanout"))
	if err != nil {
		t.Fatal(err)
	}
	return admin, c
}

// batch is a submitted batch and how to check its outputs.
type batch struct {
	name  string
	id    string
	total int
	// want returns the output item i must have.
	want func(i int) any
}

// options: retries enough that a crash or a broker restart never exhausts
// an item's attempts; the test is about exact accounting, not retry limits.
var testOptions = client.Options{MaxAttempts: 10}

// sleepBatch: item i sleeps a distinct number of milliseconds (100..,
// shuffled), so its output {"slept_ms": ms} names it.
func sleepBatch(n int) (client.BatchRequest, func(int) any) {
	ms := func(i int) int { return 100 + (i*389)%n } // 389 is prime: a permutation when n is not a multiple
	items := make([]json.RawMessage, n)
	for i := range items {
		items[i] = json.RawMessage(fmt.Sprintf(`{"ms":%d}`, ms(i)))
	}
	return client.BatchRequest{Activity: "sleep", Items: items, Options: testOptions},
		func(i int) any { return map[string]any{"slept_ms": float64(ms(i))} }
}

// shaBatch: item i hashes "<tag>-<i>".
func shaBatch(tag string, n int) (client.BatchRequest, func(int) any) {
	data := func(i int) string { return fmt.Sprintf("%s-%d", tag, i) }
	items := make([]json.RawMessage, n)
	for i := range items {
		items[i], _ = json.Marshal(map[string]string{"data": data(i)})
	}
	return client.BatchRequest{Activity: "sha256", Items: items, Options: testOptions},
		func(i int) any {
			sum := sha256.Sum256([]byte(data(i)))
			return map[string]any{"sha256": hex.EncodeToString(sum[:])}
		}
}

// echoBatch: item i is {"i": i, "tag": tag} and comes back unchanged.
func echoBatch(tag string, n int) (client.BatchRequest, func(int) any) {
	items := make([]json.RawMessage, n)
	for i := range items {
		items[i], _ = json.Marshal(map[string]any{"i": i, "tag": tag})
	}
	return client.BatchRequest{Activity: "echo", Items: items, Options: testOptions},
		func(i int) any { return map[string]any{"i": float64(i), "tag": tag} }
}

// submit submits with an idempotency id, retrying while NATS or the
// coordinators are not answering: a retry of a submit that did go through
// returns the same batch.
func submit(ctx context.Context, t *testing.T, c *client.Client, name string, req client.BatchRequest, want func(int) any) *batch {
	t.Helper()
	req.ID = name + "-" + randomHex(6)
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := c.Submit(ctx, req)
		if err == nil {
			if r.Total != len(req.Items) {
				t.Fatalf("batch %s: total %d, want %d", name, r.Total, len(req.Items))
			}
			t.Logf("submitted %s: %s, %d %s items", name, r.BatchID, r.Total, req.Activity)
			return &batch{name: name, id: r.BatchID, total: r.Total, want: want}
		}
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code != client.CodeUnavailable && ce.Code != client.CodeInternal {
			t.Fatalf("batch %s refused: %v", name, err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("batch %s: submit: %v", name, err)
		}
		t.Logf("batch %s: submit: %v; retrying", name, err)
		time.Sleep(500 * time.Millisecond)
	}
}

// waitDone waits until at least minDone items of b are done and returns
// the progress then. It fails the test if b ends first: the disruption
// that was to happen mid-batch would then happen after it.
func waitDone(ctx context.Context, t *testing.T, c *client.Client, b *batch, minDone int, what string) client.Progress {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var last error
	for {
		p, err := c.Status(ctx, b.id)
		if err == nil {
			if p.Status.Final() {
				t.Fatalf("batch %s ended (%s, %d/%d done) before %s: make it longer", b.name, p.Status, p.Done, p.Total, what)
			}
			if p.Done >= minDone {
				t.Logf("%s: batch %s at %d/%d done, %d in flight", what, b.name, p.Done, p.Total, p.InFlight)
				return *p
			}
		} else {
			last = err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("batch %s never reached %d done for %s (last error: %v)", b.name, minDone, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkExact waits for each batch's aggregate and checks it is exact:
// completed, every item succeeded once, results in item order with the
// right outputs.
func checkExact(ctx context.Context, t *testing.T, c *client.Client, batches ...*batch) {
	t.Helper()
	for _, b := range batches {
		agg := waitAggregate(ctx, t, c, b)
		if agg.Status != client.StatusCompleted || agg.Total != b.total || agg.Succeeded != b.total || agg.Failed != 0 || agg.NotRun != 0 {
			t.Errorf("batch %s: status %s (%s), total %d, succeeded %d, failed %d, not run %d; want completed with %d succeeded",
				b.name, agg.Status, agg.Reason, agg.Total, agg.Succeeded, agg.Failed, agg.NotRun, b.total)
		}
		if len(agg.Results) != b.total {
			t.Errorf("batch %s: %d results, want %d", b.name, len(agg.Results), b.total)
			continue
		}
		bad := 0
		for i, r := range agg.Results {
			var got any
			err := json.Unmarshal(r.Output, &got)
			want, _ := json.Marshal(b.want(i))
			gotJSON, _ := json.Marshal(got)
			if r.Item != i || !r.OK || err != nil || !bytes.Equal(gotJSON, want) {
				if bad++; bad <= 5 {
					t.Errorf("batch %s: result %d: item %d ok %v output %s error %q; want item %d ok output %s",
						b.name, i, r.Item, r.OK, r.Output, r.Error, i, want)
				}
			}
		}
		if bad > 5 {
			t.Errorf("batch %s: %d wrong results in all", b.name, bad)
		}
		if bad == 0 && agg.Status == client.StatusCompleted {
			t.Logf("batch %s exact: %d/%d succeeded, results in order, in %.1fs", b.name, agg.Succeeded, agg.Total, agg.DurationMS/1000)
		}
	}
}

func waitAggregate(ctx context.Context, t *testing.T, c *client.Client, b *batch) *client.Aggregate {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		agg, err := c.Wait(wctx, b.id, nil)
		cancel()
		if err == nil {
			return agg
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if p, serr := c.Status(ctx, b.id); serr == nil {
				t.Fatalf("batch %s: no aggregate: %v (status %s, %d/%d done, %d in flight)", b.name, err, p.Status, p.Done, p.Total, p.InFlight)
			}
			t.Fatalf("batch %s: no aggregate: %v", b.name, err)
		}
		t.Logf("batch %s: wait: %v; again", b.name, err)
	}
}
