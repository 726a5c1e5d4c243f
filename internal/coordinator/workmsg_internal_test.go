package coordinator

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/internal/messages"
)

// The hand-encoded work message decodes to what encoding/json would make.
func TestWorkMessageEncoding(t *testing.T) {
	opts := messages.Options{MaxAttempts: 4, ItemTimeout: messages.Duration(1500 * time.Millisecond),
		Backoff: []messages.Duration{messages.Duration(time.Second), messages.Duration(30 * time.Second)}}
	items := []json.RawMessage{json.RawMessage(`{"a":1}`), json.RawMessage(`"x"`), json.RawMessage(`null`), json.RawMessage(`[1,2]`)}
	c := &Coordinator{names: messages.MustNames(""), cfg: Config{}.withDefaults()}
	d := &driver{c: c, batch: "b-1", st: &messages.BatchState{Activity: "act_1", Options: opts}, items: inlineItems(items)}
	for _, tc := range []struct{ item, end int }{{0, 1}, {2, 3}, {0, 4}, {1, 3}} {
		msg, err := d.workMessage(tc.item, tc.end)
		if err != nil {
			t.Fatal(err)
		}
		var got messages.WorkMessage
		if err := json.Unmarshal(msg.Data, &got); err != nil {
			t.Fatalf("%s: %v", msg.Data, err)
		}
		want := messages.WorkMessage{BatchID: "b-1", Activity: "act_1", Item: tc.item, Attempt: 1, MaxAttempts: 4,
			BackoffMS: []int64{1000, 30000}, ItemTimeoutMS: 1500}
		if tc.end-tc.item == 1 {
			want.Input = items[tc.item]
		} else {
			for i := tc.item; i < tc.end; i++ {
				want.Items = append(want.Items, messages.WorkItem{Item: i, Input: items[i]})
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("items [%d,%d): got %+v, want %+v", tc.item, tc.end, got, want)
		}
		if msg.Subject != "fanout.work.act_1.b-1" || msg.Header.Get("Nats-Msg-Id") != messages.WorkMsgID("b-1", tc.item) {
			t.Fatalf("subject %s id %s", msg.Subject, msg.Header.Get("Nats-Msg-Id"))
		}
	}
}
