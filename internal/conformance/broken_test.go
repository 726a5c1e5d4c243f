package conformance_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
)

// startBrokenWorker serves activity with a worker that gets the protocol
// wrong on purpose: the attempt is the delivery count alone, it never
// gives up, sends no heartbeats, runs only the first item of a packed
// message, negatively acks a result refused as a duplicate, and acks what
// it cannot read.
func startBrokenWorker(t *testing.T, env *testenv.Env, activity string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := messages.MustNames("")
	nc := env.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := env.Stream(ctx, names.WorkStream()).CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: names.WorkConsumer(activity), FilterSubject: names.WorkActivityFilter(activity),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var wm messages.WorkMessage
		if json.Unmarshal(m.Data(), &wm) != nil {
			_ = m.Ack()
			return
		}
		meta, _ := m.Metadata()
		attempt := int(meta.NumDelivered)
		it := messages.WorkItem{Item: wm.Item, Input: wm.Input}
		if len(wm.Items) > 0 {
			it = wm.Items[0]
		}
		var in struct {
			SleepMS int             `json:"sleep_ms"`
			Fail    string          `json:"fail"`
			Perm    bool            `json:"permanent"`
			Until   int             `json:"until"`
			Echo    json.RawMessage `json:"echo"`
		}
		_ = json.Unmarshal(it.Input, &in)
		time.Sleep(time.Duration(in.SleepMS) * time.Millisecond)
		res := messages.ResultMessage{BatchID: wm.BatchID, Item: it.Item, Step: wm.Step, Attempts: attempt, Worker: "broken"}
		switch {
		case in.Fail != "" && (in.Perm || attempt >= wm.MaxAttempts):
			res.Error = in.Fail
		case in.Fail != "" && attempt < in.Until:
			_ = m.NakWithDelay(10 * time.Millisecond)
			return
		default:
			echo := in.Echo
			if echo == nil {
				echo = json.RawMessage("null")
			}
			res.OK = true
			res.Output, _ = json.Marshal(map[string]any{"echo": echo, "attempt": attempt, "key": messages.IdempotencyKey(wm.BatchID, it.Item)})
		}
		subject := names.Result(wm.BatchID, it.Item)
		if wm.Step != "" {
			subject = names.StepResult(wm.BatchID, wm.Step)
		}
		data, _ := json.Marshal(res)
		if _, err := js.Publish(context.Background(), subject, data); err != nil {
			_ = m.Nak()
			return
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}
