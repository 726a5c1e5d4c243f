package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/testenv"
)

func echoItems(n, pad int) []json.RawMessage {
	items := make([]json.RawMessage, n)
	p := strings.Repeat("x", pad)
	for i := range items {
		items[i] = json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, p))
	}
	return items
}

func setup(t *testing.T) *testenv.Env {
	t.Helper()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil)
	return env
}

// collect gathers what Results yields, stopping at the first error.
func collect(ctx context.Context, c *client.Client, batch string) ([]client.ItemResult, error) {
	var out []client.ItemResult
	for r, err := range c.Results(ctx, batch) {
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Results yields a finished batch's results in item order, from the
// aggregate message, with failed items failed.
func TestResults(t *testing.T) {
	t.Parallel()
	env := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	items := []json.RawMessage{[]byte(`{"ms":1}`), []byte(`{"ms":1,"fail":"nope"}`), []byte(`{"ms":1}`)}
	r := env.Submit(client.BatchRequest{Activity: "sleep", Items: items, Options: client.Options{MaxAttempts: 1}})
	env.Wait(r.BatchID, time.Minute)
	got, err := collect(ctx, env.Client, r.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !got[0].OK || got[1].OK || got[1].Error != "nope" || !got[2].OK || got[2].Item != 2 {
		t.Fatalf("results %+v", got)
	}
	// Breaking out early is fine.
	for r, err := range env.Client.Results(ctx, r.BatchID) {
		if err != nil || r.Item != 0 {
			t.Fatalf("%+v, %v", r, err)
		}
		break
	}
}

// A batch too large for one aggregate message has its results in the
// object store; Results streams them from there in item order.
func TestResultsFromTheObjectStore(t *testing.T) {
	t.Parallel()
	env := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// 10,000 sha256 results make an aggregate of about 1.1 MB: more than
	// the 1 MB a message may hold.
	items := make([]json.RawMessage, 10_000)
	for i := range items {
		items[i] = json.RawMessage(fmt.Sprintf(`{"data":"%d"}`, i))
	}
	r := env.Submit(client.BatchRequest{Activity: "sha256", Items: items, Options: client.Options{MaxInFlight: 2000, ItemsPerMessage: 50}})
	agg, err := env.Client.Wait(ctx, r.BatchID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if agg.ResultsRef == nil {
		t.Fatal("the aggregate carries its results; the test does not reach the object store")
	}
	got, err := collect(ctx, env.Client, r.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(items) {
		t.Fatalf("%d results, want %d", len(got), len(items))
	}
	for i, res := range got {
		sum := sha256.Sum256([]byte(strconv.Itoa(i)))
		if res.Item != i || !res.OK || string(res.Output) != `{"sha256":"`+hex.EncodeToString(sum[:])+`"}` {
			t.Fatalf("result %d: %+v", i, res)
		}
	}
	n := 0
	for _, err := range env.Client.Results(ctx, r.BatchID) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 10 {
			break // stops reading the object
		}
	}
}

// Results of a running batch waits for it to end; of a batch that does
// not exist, it yields not_found at once; without a coordinator,
// ErrNoCoordinator.
func TestResultsWaitsAndRefuses(t *testing.T) {
	t.Parallel()
	env := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	items := []json.RawMessage{[]byte(`{"ms":300}`), []byte(`{"ms":1}`)}
	r := env.Submit(client.BatchRequest{Activity: "sleep", Items: items})
	got, err := collect(ctx, env.Client, r.BatchID)
	if err != nil || len(got) != 2 || !got[0].OK || !got[1].OK {
		t.Fatalf("results of a running batch: %+v, %v", got, err)
	}

	_, err = collect(ctx, env.Client, "no-such-batch")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != client.CodeNotFound {
		t.Fatalf("results of no batch: %v, want not_found", err)
	}
	_, err = collect(ctx, env.Client, "not a batch id")
	if !errors.As(err, &ce) || ce.Code != client.CodeInvalidRequest {
		t.Fatalf("results of a bad id: %v, want invalid_request", err)
	}

	bare := testenv.Server(t)
	if _, err := collect(ctx, bare.Client, "b"); !errors.Is(err, client.ErrNoCoordinator) {
		t.Fatalf("results without a coordinator: %v", err)
	}
}

// Anyone in the client's account can have a message delivered on a
// batch's progress and aggregate subjects (a reply aimed at them). Wait
// passes on only the batch's own progress, and returns only the aggregate
// the done stream stored: a well-formed forged aggregate on the aggregate
// subject is ignored.
func TestWaitIgnoresForgedMessages(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A worker that stops leaves its activity's consumer: the batch is
	// accepted and waits for the next worker.
	if err := env.Worker(nil).Stop(ctx); err != nil {
		t.Fatal(err)
	}
	items := []json.RawMessage{[]byte(`{"a":1}`), []byte(`{"b":2}`)}
	r := env.Submit(client.BatchRequest{Activity: "echo", Items: items})
	type result struct {
		agg *client.Aggregate
		err error
	}
	done := make(chan result, 1)
	var foreign atomic.Int32
	go func() {
		agg, err := env.Client.Wait(ctx, r.BatchID, func(p client.Progress) {
			if p.BatchID != r.BatchID {
				foreign.Add(1)
			}
		})
		done <- result{agg, err}
	}()
	// Once Wait listens on both subjects, forge what it could be fooled by.
	for _, subject := range []string{"fanout.aggregate." + r.BatchID, "fanout.progress." + r.BatchID} {
		deadline := time.Now().Add(10 * time.Second)
		for !env.Server.GlobalAccount().SubscriptionInterest(subject) {
			if time.Now().After(deadline) {
				t.Fatalf("Wait did not subscribe to %s within 10s", subject)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Well formed: only where it comes from gives it away.
	forged := fmt.Sprintf(`{"batch_id":%q,"activity":"echo","status":"completed","total":2,"succeeded":0,"failed":2,"results":[{"item":0,"ok":false,"error":"forged"},{"item":1,"ok":false,"error":"forged"}]}`, r.BatchID)
	other := `{"batch_id":"other","activity":"echo","status":"completed","total":1,"succeeded":1,"failed":0}`
	for subject, data := range map[string]string{
		"fanout.aggregate." + r.BatchID: forged,
		"fanout.progress." + r.BatchID:  other,
	} {
		if err := env.Conn.Publish(subject, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	// Published before the worker starts: the real aggregate comes after.
	env.Worker(nil)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.agg.Status != client.StatusCompleted || res.agg.Succeeded != 2 || len(res.agg.Results) != 2 || string(res.agg.Results[1].Output) != `{"b":2}` {
		t.Fatalf("Wait returned %+v, want the stored aggregate of two echoed items", res.agg)
	}
	if n := foreign.Load(); n != 0 {
		t.Fatalf("Wait passed on %d progress events of another batch", n)
	}
}
