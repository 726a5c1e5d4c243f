package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

// Invariant 5: bad input is answered with an error reply carrying the right
// code, stores nothing, and leaves a batch running at the same time exactly
// as it would have been.
func TestBadSubmitsAreAnsweredAndHarmless(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(func(c *coordinator.Config) { c.MaxItems = 100 })
	g := newGate()
	env.Worker(func(w *worker.Worker) { w.HandleFunc("gate", g.handle) })
	t.Cleanup(g.open)
	dc := countDone(t, env)

	// A batch that stays running until the bad requests are all answered.
	const total = 40
	good := env.Submit(client.BatchRequest{Activity: "gate", Items: echoItems(total), Options: client.Options{MaxInFlight: 8}})
	g.waitEntered(t, 1, 30*time.Second)

	maxPayload := int(env.Conn.MaxPayload())
	// A request that fits in one message but not once stored with its id
	// and filled-in options.
	pad := strings.Repeat("x", maxPayload-len(`{"activity":"echo","items":[""]}`)-16)
	nearLimit := `{"activity":"echo","items":["` + pad + `"]}`
	if len(nearLimit) > maxPayload {
		t.Fatalf("test request of %d bytes over max_payload %d", len(nearLimit), maxPayload)
	}

	cases := []struct{ name, body, code string }{
		{"empty body", ``, client.CodeInvalidJSON},
		{"not JSON", `activity=echo&items=1`, client.CodeInvalidJSON},
		{"broken JSON", `{"activity":"echo","items":[1,2}`, client.CodeInvalidJSON},
		{"JSON array", `[{"activity":"echo","items":[1]}]`, client.CodeInvalidJSON},
		{"JSON string", `"echo"`, client.CodeInvalidJSON},
		{"JSON number", `1`, client.CodeInvalidJSON},
		{"JSON null", `null`, client.CodeInvalidJSON},
		{"no activity", `{"items":[1]}`, client.CodeInvalidRequest},
		{"activity not a string", `{"activity":["echo"],"items":[1]}`, client.CodeInvalidRequest},
		{"activity with a subject wildcard", `{"activity":"echo.>","items":[1]}`, client.CodeInvalidRequest},
		{"no items", `{"activity":"echo"}`, client.CodeInvalidRequest},
		{"empty items", `{"activity":"echo","items":[]}`, client.CodeInvalidRequest},
		{"items not an array", `{"activity":"echo","items":{"0":1}}`, client.CodeInvalidRequest},
		{"items a number", `{"activity":"echo","items":3}`, client.CodeInvalidRequest},
		{"items null", `{"activity":"echo","items":null}`, client.CodeInvalidRequest},
		{"unknown field", `{"activity":"echo","items":[1],"callback":"http://x"}`, client.CodeInvalidRequest},
		{"max_in_flight a string", `{"activity":"echo","items":[1],"options":{"max_in_flight":"16"}}`, client.CodeInvalidRequest},
		{"max_in_flight negative", `{"activity":"echo","items":[1],"options":{"max_in_flight":-16}}`, client.CodeInvalidRequest},
		{"max_in_flight zero", `{"activity":"echo","items":[1],"options":{"max_in_flight":0}}`, client.CodeInvalidRequest},
		{"max_in_flight fraction", `{"activity":"echo","items":[1],"options":{"max_in_flight":2.5}}`, client.CodeInvalidRequest},
		{"max_attempts negative", `{"activity":"echo","items":[1],"options":{"max_attempts":-1}}`, client.CodeInvalidRequest},
		{"max_attempts too many", `{"activity":"echo","items":[1],"options":{"max_attempts":1000}}`, client.CodeInvalidRequest},
		{"timeout a number", `{"activity":"echo","items":[1],"options":{"timeout":60}}`, client.CodeInvalidRequest},
		{"timeout negative", `{"activity":"echo","items":[1],"options":{"timeout":"-1m"}}`, client.CodeInvalidRequest},
		{"timeout past retention", `{"activity":"echo","items":[1],"options":{"timeout":"1000h"}}`, client.CodeInvalidRequest},
		{"item_timeout a number", `{"activity":"echo","items":[1],"options":{"item_timeout":30}}`, client.CodeInvalidRequest},
		{"item_timeout not a duration", `{"activity":"echo","items":[1],"options":{"item_timeout":"thirty seconds"}}`, client.CodeInvalidRequest},
		{"backoff a string", `{"activity":"echo","items":[1],"options":{"backoff":"1s"}}`, client.CodeInvalidRequest},
		{"backoff negative", `{"activity":"echo","items":[1],"options":{"backoff":["-1s"]}}`, client.CodeInvalidRequest},
		{"failure_policy unknown", `{"activity":"echo","items":[1],"options":{"failure_policy":"ignore"}}`, client.CodeInvalidRequest},
		{"tolerated_failures negative", `{"activity":"echo","items":[1],"options":{"tolerated_failures":-2}}`, client.CodeInvalidRequest},
		{"tolerated_failure_percent a string", `{"activity":"echo","items":[1],"options":{"tolerated_failure_percent":"5"}}`, client.CodeInvalidRequest},
		{"unknown option", `{"activity":"echo","items":[1],"options":{"priority":"high"}}`, client.CodeInvalidRequest},
		{"options not an object", `{"activity":"echo","items":[1],"options":"fast"}`, client.CodeInvalidRequest},
		{"id not a string", `{"id":42,"activity":"echo","items":[1]}`, client.CodeInvalidRequest},
		{"id with a dot", `{"id":"a.b","activity":"echo","items":[1]}`, client.CodeInvalidRequest},
		{"id with a wildcard", `{"id":"*","activity":"echo","items":[1]}`, client.CodeInvalidRequest},
		{"id too long", `{"id":"` + strings.Repeat("k", 65) + `","activity":"echo","items":[1]}`, client.CodeInvalidRequest},
		{"unknown activity", `{"activity":"no_such_activity","items":[1]}`, client.CodeUnknownActivity},
		{"more items than the coordinator takes", `{"activity":"echo","items":[` + strings.Repeat(`1,`, 100) + `1]}`, client.CodeTooLarge},
		{"too large once stored", nearLimit, client.CodeTooLarge},
		{"source step of an unknown activity", `{"activity":"echo","source":{"activity":"no_such_source"}}`, client.CodeUnknownActivity},
		{"reduce step of an unknown activity", `{"activity":"echo","items":[1],"reduce":{"activity":"no_such_reduce"}}`, client.CodeUnknownActivity},
		{"source step without an activity", `{"activity":"echo","source":{"input":1}}`, client.CodeInvalidRequest},
		{"items and a source", `{"activity":"echo","items":[1],"source":{"activity":"echo"}}`, client.CodeInvalidRequest},
		{"an item nested too deep", `{"activity":"echo","items":[` + strings.Repeat("[", messages.MaxValueDepth+1) + strings.Repeat("]", messages.MaxValueDepth+1) + `]}`, client.CodeInvalidRequest},
		{"items_ref in another bucket", `{"activity":"echo","items_ref":{"bucket":"OTHER","name":"items.jsonl"}}`, client.CodeInvalidRequest},
		{"items_ref to a missing object", `{"activity":"echo","items_ref":{"name":"no-such-items.jsonl"}}`, client.CodeInvalidRequest},
	}
	for _, tc := range cases {
		reply := rawRequest(t, env, names.Submit(), []byte(tc.body))
		checkErrorReply(t, "submit "+tc.name, reply, tc.code)
	}
	// The typed client surfaces the same refusal as an *Error.
	_, err := env.Client.Submit(ctxFor(t, 10*time.Second), client.BatchRequest{Activity: "no_such_activity", Items: echoItems(1)})
	if e, ok := err.(*client.Error); !ok || e.Code != client.CodeUnknownActivity {
		t.Errorf("client submit of an unknown activity: %v", err)
	}

	// Nothing was stored for any refused request: the bucket holds the one
	// good batch and the control stream its one token.
	ctx := ctxFor(t, 10*time.Second)
	kv, err := jsOf(t, env).KeyValue(ctx, names.BatchesBucket())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for k := range keys.Keys() {
		stored = append(stored, k)
	}
	if len(stored) != 1 || stored[0] != good.BatchID {
		t.Errorf("batch states stored: %v, want only %s", stored, good.BatchID)
	}
	ctl, err := jsOf(t, env).Stream(ctx, names.ControlStream())
	if err != nil {
		t.Fatal(err)
	}
	if info, err := ctl.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("control stream: %v, %v; want the good batch's token only", info, err)
	}

	// The good batch was running throughout and ends exactly.
	if p := status(t, env, good.BatchID); p.Status != client.StatusRunning {
		t.Fatalf("good batch %s before release", p.Status)
	}
	g.open()
	agg := env.Wait(good.BatchID, 60*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, total, total, 0)
	for i, r := range agg.Results {
		if string(r.Output) != string(echoItems(total)[i]) {
			t.Fatalf("good batch item %d: output %s", i, r.Output)
		}
	}
	dc.check(t, env, good.BatchID)
}

// Status and cancel requests with bad bodies or unknown batches get error
// replies; a batch finished is reported, and cancel leaves it as it was.
func TestBadStatusAndCancelRequests(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(nil)
	bodies := []struct{ name, body, code string }{
		{"empty body", ``, client.CodeInvalidJSON},
		{"not JSON", `batch-1`, client.CodeInvalidJSON},
		{"broken JSON", `{"batch_id":"b`, client.CodeInvalidJSON},
		{"JSON array", `["b"]`, client.CodeInvalidJSON},
		{"JSON null", `null`, client.CodeInvalidJSON},
		{"no batch_id", `{}`, client.CodeInvalidRequest},
		{"empty batch_id", `{"batch_id":""}`, client.CodeInvalidRequest},
		{"batch_id a number", `{"batch_id":7}`, client.CodeInvalidRequest},
		{"batch_id with a dot", `{"batch_id":"a.b"}`, client.CodeInvalidRequest},
		{"batch_id a wildcard", `{"batch_id":"*"}`, client.CodeInvalidRequest},
		{"unknown field", `{"batch_id":"b","force":true}`, client.CodeInvalidRequest},
		{"unknown batch", `{"batch_id":"no-such-batch"}`, client.CodeNotFound},
		{"unknown uuid batch", `{"batch_id":"0b7c6a4e-2f7d-4b61-9d0e-1f2a3b4c5d6e"}`, client.CodeNotFound},
	}
	for _, subj := range []string{names.Status(), names.Cancel()} {
		for _, tc := range bodies {
			checkErrorReply(t, subj+" "+tc.name, rawRequest(t, env, subj, []byte(tc.body)), tc.code)
		}
	}
	ctx := ctxFor(t, 10*time.Second)
	if _, err := env.Client.Status(ctx, "nope"); !isCode(err, client.CodeNotFound) {
		t.Errorf("client status of an unknown batch: %v", err)
	}
	if _, err := env.Client.Cancel(ctx, "nope"); !isCode(err, client.CodeNotFound) {
		t.Errorf("client cancel of an unknown batch: %v", err)
	}
	// A finished batch: status reports it, cancel changes nothing.
	r := env.Submit(client.BatchRequest{Activity: "echo", Items: echoItems(3)})
	agg := env.Wait(r.BatchID, 30*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, 3, 3, 0)
	var p client.Progress
	if err := json.Unmarshal(rawRequest(t, env, names.Cancel(), []byte(`{"batch_id":"`+r.BatchID+`"}`)), &p); err != nil {
		t.Fatal(err)
	}
	if p.BatchID != r.BatchID || p.Status != client.StatusCompleted || p.Succeeded != 3 || p.Done != 3 {
		t.Errorf("cancel of a finished batch: %+v", p)
	}
	if p := status(t, env, r.BatchID); p.Status != client.StatusCompleted || p.Succeeded != 3 {
		t.Errorf("status after canceling a finished batch: %+v", p)
	}
}

func isCode(err error, code string) bool {
	e, ok := err.(*messages.Error)
	return ok && e.Code == code && e.Message != ""
}

func status(t *testing.T, env *testenv.Env, batch string) *client.Progress {
	t.Helper()
	p, err := env.Client.Status(ctxFor(t, 10*time.Second), batch)
	if err != nil {
		t.Fatalf("status of %s: %v", batch, err)
	}
	return p
}

// An output nested deeper than items may be fails its item (the aggregate
// that carries it must be readable by every client); one as deep as
// allowed is carried and read back.
func TestDeepOutputsFailTheirItem(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	deep := func(n int) json.RawMessage {
		return json.RawMessage(strings.Repeat("[", n) + strings.Repeat("]", n))
	}
	env.Worker(func(w *worker.Worker) {
		w.HandleFunc("nest", func(_ context.Context, input json.RawMessage) (json.RawMessage, error) {
			var n int
			if err := json.Unmarshal(input, &n); err != nil {
				return nil, err
			}
			return deep(n), nil
		})
	})
	r := env.Submit(client.BatchRequest{Activity: "nest", Items: []json.RawMessage{
		json.RawMessage(fmt.Sprint(messages.MaxValueDepth)), json.RawMessage(fmt.Sprint(messages.MaxValueDepth + 1)),
	}})
	agg := env.Wait(r.BatchID, 30*time.Second)
	checkAggregate(t, agg, client.StatusCompleted, 2, 1, 1)
	if !agg.Results[0].OK || string(agg.Results[0].Output) != string(deep(messages.MaxValueDepth)) {
		t.Errorf("an output %d levels deep: %+v", messages.MaxValueDepth, agg.Results[0])
	}
	if agg.Results[1].OK || !strings.Contains(agg.Results[1].Error, "nested") {
		t.Errorf("an output %d levels deep: %+v", messages.MaxValueDepth+1, agg.Results[1])
	}
}
