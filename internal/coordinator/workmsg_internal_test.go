package coordinator

import (
	"encoding/json"
	"reflect"
	"strconv"
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
	for _, tc := range []struct {
		item, end, attempt int
		form               workForm
	}{{0, 1, 1, formPlain}, {2, 3, 1, formPlain}, {0, 4, 1, formPlain}, {1, 3, 1, formPlain}, {0, 4, 1, formAutoPack}, {2, 3, 2, formUnpacked}} {
		msg, err := d.workMessage(tc.item, tc.end, tc.attempt, tc.form)
		if err != nil {
			t.Fatal(err)
		}
		var got messages.WorkMessage
		if err := json.Unmarshal(msg.Data, &got); err != nil {
			t.Fatalf("%s: %v", msg.Data, err)
		}
		want := messages.WorkMessage{BatchID: "b-1", Activity: "act_1", Item: tc.item, Attempt: tc.attempt, MaxAttempts: 4,
			BackoffMS: []int64{1000, 30000}, ItemTimeoutMS: 1500, Unpack: tc.form == formAutoPack}
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
		wantID := messages.WorkMsgID("b-1", tc.item)
		if tc.form == formUnpacked {
			wantID = "b-1/" + strconv.Itoa(tc.item) + "/unpacked"
		}
		if msg.Subject != "fanout.work.act_1.b-1" || msg.Header.Get("Nats-Msg-Id") != wantID {
			t.Fatalf("subject %s id %s, want id %s", msg.Subject, msg.Header.Get("Nats-Msg-Id"), wantID)
		}
	}
}

// Groups are a function of the state alone: items_per_message groups start
// at its multiples, auto-packed ones at PackFrom plus multiples of
// PackSize, everything else is one item.
func TestGroupEnd(t *testing.T) {
	fixed := &messages.BatchState{Total: 10, Options: messages.Options{ItemsPerMessage: 4}}
	auto := &messages.BatchState{Total: 20, PackFrom: 5, PackSize: 4}
	single := &messages.BatchState{Total: 3, Options: messages.Options{ItemsPerMessage: 1}, PackFrom: 0, PackSize: 0}
	for _, tc := range []struct {
		st         *messages.BatchState
		item, end  int
		auto, head bool
	}{
		{fixed, 0, 4, false, false}, {fixed, 5, 8, false, false}, {fixed, 8, 10, false, false},
		{auto, 0, 1, false, false}, {auto, 4, 5, false, false}, {auto, 5, 9, true, true}, {auto, 7, 9, true, false},
		{auto, 9, 13, true, true}, {auto, 17, 20, true, true}, {auto, 19, 20, true, false},
		{single, 2, 3, false, false},
	} {
		end, isAuto := groupEnd(tc.st, tc.item)
		if end != tc.end || isAuto != tc.auto || isAutoGroupStart(tc.st, tc.item) != tc.head {
			t.Errorf("item %d of %+v: end %d auto %v start %v; want %d %v %v", tc.item, tc.st, end, isAuto, isAutoGroupStart(tc.st, tc.item), tc.end, tc.auto, tc.head)
		}
	}
}
