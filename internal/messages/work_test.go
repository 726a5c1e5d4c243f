package messages_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Every field of a work message is either set by NewWorkMessage from the
// batch (the same for all its messages) or one of the few set per message:
// a field added to the message and not to NewWorkMessage fails here
// instead of shipping empty.
func TestNewWorkMessageSetsEveryBatchField(t *testing.T) {
	perMessage := map[string]bool{"Item": true, "Input": true, "InputRef": true, "Step": true, "Items": true, "Unpack": true}
	o := messages.Options{MaxAttempts: 4, ItemTimeout: messages.Duration(1500 * time.Millisecond),
		Backoff: []messages.Duration{messages.Duration(time.Second)}}
	wm := messages.NewWorkMessage("b-1", "act", o)
	v := reflect.ValueOf(wm)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !perMessage[f.Name] && v.Field(i).IsZero() {
			t.Errorf("WorkMessage.%s is not set by NewWorkMessage", f.Name)
		}
	}
	if wm.MaxAttempts != 4 || wm.ItemTimeoutMS != 1500 || !reflect.DeepEqual(wm.BackoffMS, []int64{1000}) || wm.Attempt != 1 {
		t.Errorf("work message %+v does not carry the options %+v", wm, o)
	}
}

// A work message encoded as the coordinator encodes it (items and steps
// alike) decodes, with the worker's decoder and with encoding/json, to the
// same message.
func FuzzWorkMessageRoundTrip(f *testing.F) {
	f.Add("b-1", "sha256", 0, 1, 3, int64(1000), int64(300000), []byte(`{"data":"a"}`), "", false, 0)
	f.Add("b", "x", 7, 2, 1, int64(0), int64(1), []byte(`"x"`), "reduce", false, 0)
	f.Add("b", "x", 16, 1, 3, int64(5), int64(10), []byte(`[1, 2]`), "", true, 16)
	f.Add("b", "x", 0, 1, 3, int64(5), int64(10), []byte(`null`), "", false, 3)
	f.Fuzz(func(t *testing.T, batch, activity string, item, attempt, maxAttempts int, backoffMS, timeoutMS int64, input []byte, step string, unpack bool, n int) {
		// Batch ids and activities are ASCII tokens; any valid text must
		// still come back as it went.
		if !json.Valid(input) || n < 0 || n > 100 || !utf8.ValidString(batch) || !utf8.ValidString(activity) || !utf8.ValidString(step) {
			return
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, input); err != nil {
			t.Fatal(err)
		}
		o := messages.Options{MaxAttempts: maxAttempts, ItemTimeout: messages.Duration(time.Duration(timeoutMS) * time.Millisecond),
			Backoff: []messages.Duration{messages.Duration(time.Duration(backoffMS) * time.Millisecond)}}
		wm := messages.NewWorkMessage(batch, activity, o)
		wm.Item, wm.Attempt, wm.Step = item, attempt, messages.Step(step)
		if n == 0 {
			wm.Input = compact.Bytes()
		} else {
			wm.Unpack = unpack
			for i := range n {
				wm.Items = append(wm.Items, messages.WorkItem{Item: item + i, Input: compact.Bytes()})
			}
		}
		data, err := messages.Encode(&wm)
		if err != nil {
			t.Fatalf("encode %+v: %v", wm, err)
		}
		var got, std messages.WorkMessage
		if err := messages.Decode(data, &got); err != nil {
			t.Fatalf("decode %s: %v", data, err)
		}
		if err := json.Unmarshal(data, &std); err != nil {
			t.Fatalf("encoding/json decode %s: %v", data, err)
		}
		for _, back := range []messages.WorkMessage{got, std} {
			if !sameWork(t, back, wm) {
				t.Fatalf("%s decodes to\n%+v, want\n%+v", data, back, wm)
			}
		}
	})
}

// sameWork compares work messages, inputs as JSON values: the encoder may
// escape characters of a raw input (<, >, & as HTML-safe escapes), which
// reads back as the same value.
func sameWork(t *testing.T, a, b messages.WorkMessage) bool {
	if len(a.Items) != len(b.Items) || !sameJSON(t, a.Input, b.Input) {
		return false
	}
	a.Input, b.Input = nil, nil
	a.Items, b.Items = append([]messages.WorkItem(nil), a.Items...), append([]messages.WorkItem(nil), b.Items...)
	for i := range a.Items {
		if !sameJSON(t, a.Items[i].Input, b.Items[i].Input) {
			return false
		}
		a.Items[i].Input, b.Items[i].Input = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

func sameJSON(t *testing.T, a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var va, vb any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if err := da.Decode(&va); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := db.Decode(&vb); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}
