package security_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// With the least-privilege roles a worker writes its heartbeat (creating
// the workers bucket), and the client lists the live workers and reads a
// batch's results with client.Results, without a permission violation.
// The client may not write heartbeats, and may not list batches
// (client.List, fanout ls): that reads the batch-state bucket.
func TestLeastPrivilegePresenceAndReads(t *testing.T) {
	t.Parallel()
	eachLayout(t, testPresenceAndReads)
}

func testPresenceAndReads(t *testing.T, d *deployment) {
	n := d.names
	r := d.start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ws, err := r.client.Workers(ctx)
	if err != nil || len(ws) != 1 || len(ws[0].Activities) == 0 {
		t.Fatalf("workers as client: %+v, %v (violations %q)", ws, err, r.clientRec.violations())
	}
	items := echoItems(20, 5)
	agg := r.run(ctx, t, items)
	got := 0
	for res, err := range r.client.Results(ctx, agg.BatchID) {
		if err != nil {
			t.Fatalf("results as client: %v (violations %q)", err, r.clientRec.violations())
		}
		if res.Item != got || !res.OK || string(res.Output) != string(items[got]) {
			t.Fatalf("result %d: %+v", got, res)
		}
		got++
	}
	if got != len(items) {
		t.Fatalf("%d results, want %d", got, len(items))
	}
	r.noViolations(t)

	subject := "$KV." + n.WorkersBucket() + ".forged"
	if err := r.clientNC.Publish(subject, []byte(`{"name":"forged"}`)); err != nil {
		t.Fatal(err)
	}
	r.clientRec.await(t, subject)

	denied(t, r.clientRec, d.api("$JS.API.STREAM.INFO.KV_"+n.BatchesBucket()), func(ctx context.Context) error {
		_, err := r.client.List(ctx, 10)
		return err
	})
	// Nor may the worker read the heartbeats of the others.
	wjs := d.js(r.workerNC)
	denied(t, r.workerRec, d.api("$JS.API.CONSUMER.CREATE.KV_"+n.WorkersBucket()), func(ctx context.Context) error {
		_, err := wjs.OrderedConsumer(ctx, "KV_"+n.WorkersBucket(), jetstream.OrderedConsumerConfig{})
		return err
	})
}
