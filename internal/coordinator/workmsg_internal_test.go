package coordinator

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/internal/aggregate"
	"github.com/fanoutdev/fanout/internal/messages"
)

// The work message of any range and form decodes, with the worker's
// decoder, to the batch's work message (messages.NewWorkMessage) with the
// range's items and inputs, under the id the form calls for.
func TestWorkMessages(t *testing.T) {
	opts := messages.Options{MaxAttempts: 4, ItemTimeout: messages.Duration(1500 * time.Millisecond),
		Backoff: []messages.Duration{messages.Duration(time.Second), messages.Duration(30 * time.Second)}}
	items := []json.RawMessage{json.RawMessage(`{"a":1}`), json.RawMessage(`"x"`), json.RawMessage(`null`), json.RawMessage(`[1,2]`)}
	c := &Coordinator{names: messages.MustNames(""), cfg: Config{}.withDefaults()}
	st := messages.BatchState{BatchID: "b-1", Activity: "act_1", Total: len(items), Options: opts}
	d := &driver{c: c, batch: "b-1", token: token{req: messages.BatchRequest{ID: "b-1", Activity: "act_1"}},
		m: aggregate.New(aggregate.Config{}, st, false), items: inlineItems(items)}
	for _, tc := range []struct {
		from, to, attempt int
		form              aggregate.WorkForm
		id                string
	}{
		{0, 1, 1, aggregate.FormPlain, "b-1/0"},
		{2, 3, 1, aggregate.FormPlain, "b-1/2"},
		{0, 4, 1, aggregate.FormPlain, "b-1/0"},
		{1, 3, 1, aggregate.FormPlain, "b-1/1"},
		{0, 4, 1, aggregate.FormAutoPack, "b-1/0"},
		{2, 3, 2, aggregate.FormUnpacked, "b-1/2/unpacked"},
	} {
		msg, err := d.workMessage(tc.from, tc.to, tc.attempt, tc.form)
		if err != nil {
			t.Fatal(err)
		}
		var got messages.WorkMessage
		if err := messages.Decode(msg.Data, &got); err != nil {
			t.Fatalf("%s: %v", msg.Data, err)
		}
		want := messages.NewWorkMessage("b-1", "act_1", opts)
		want.Item, want.Attempt = tc.from, tc.attempt
		if tc.to-tc.from == 1 {
			want.Input = items[tc.from]
		} else {
			want.Unpack = tc.form == aggregate.FormAutoPack
			for i := tc.from; i < tc.to; i++ {
				want.Items = append(want.Items, messages.WorkItem{Item: i, Input: items[i]})
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("items [%d,%d) %v: got %+v, want %+v", tc.from, tc.to, tc.form, got, want)
		}
		if msg.Subject != "fanout.work.act_1.b-1" || msg.Header.Get("Nats-Msg-Id") != tc.id {
			t.Fatalf("subject %s id %s, want id %s", msg.Subject, msg.Header.Get("Nats-Msg-Id"), tc.id)
		}
	}
}
