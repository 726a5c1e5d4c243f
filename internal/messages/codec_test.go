package messages

import (
	"encoding/json"
	"reflect"
	"testing"
)

// The per-item path decodes with Decode (goccy/go-json) what workers and
// coordinators of any language publish: it must accept, reject and read
// exactly what encoding/json does, or a message would mean one thing to
// a worker and another to the coordinator.
func FuzzDecodeMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{"batch_id":"b1","item":3,"activity":"sha256","input":{"data":"x"},"attempt":1,"max_attempts":3,"item_timeout_ms":1000}`,
		`{"batch_id":"b1","item":0,"activity":"a","items":[{"item":0,"input":1},{"item":1,"input_ref":{"bucket":"B","name":"n","size":9}}],"attempt":1,"max_attempts":1,"backoff_ms":[10,20],"item_timeout_ms":5}`,
		`{"batch_id":"b1","item":3,"ok":true,"output":{"sha256":"ab"},"attempts":1,"worker":"w","duration_ms":0.012}`,
		`{"batch_id":"b1","item":3,"ok":false,"error":"boom \u003c\ud83d\ude00","attempts":2,"duration_ms":1e-7}`,
		`{"batch_id":"b1","step":"reduce","ok":true,"output_ref":{"bucket":"B","name":"x"},"attempts":1}`,
		`{"item":1,"item":2,"OK":true}`, `{"a":1,"a":2}`, `[{"x":1}, 2, "s", null, [true]]`, `[1,]`, `{"item":1.5}`, `{"item":"1"}`, `[]`, `null`, `{"input":}`, "{\"error\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var gw, sw WorkMessage
		gErr, sErr := Decode(data, &gw), json.Unmarshal(data, &sw)
		if (gErr == nil) != (sErr == nil) {
			t.Fatalf("work message %q: Decode error %v, encoding/json error %v", data, gErr, sErr)
		}
		if gErr == nil && !reflect.DeepEqual(gw, sw) {
			t.Fatalf("work message %q: Decode read %+v, encoding/json %+v", data, gw, sw)
		}
		// Requests are validated with Decode into these first (see
		// decodeObject, decodeItems).
		var gm, sm map[string]json.RawMessage
		if gErr, sErr := Decode(data, &gm), json.Unmarshal(data, &sm); (gErr == nil) != (sErr == nil) || (gErr == nil && !reflect.DeepEqual(gm, sm)) {
			t.Fatalf("object %q: Decode read %v (%v), encoding/json %v (%v)", data, gm, gErr, sm, sErr)
		}
		var ga, sa []json.RawMessage
		if gErr, sErr := Decode(data, &ga), json.Unmarshal(data, &sa); (gErr == nil) != (sErr == nil) || (gErr == nil && !reflect.DeepEqual(ga, sa)) {
			t.Fatalf("array %q: Decode read %v (%v), encoding/json %v (%v)", data, ga, gErr, sa, sErr)
		}
		var gr, sr ResultMessage
		gErr, sErr = Decode(data, &gr), json.Unmarshal(data, &sr)
		if (gErr == nil) != (sErr == nil) {
			t.Fatalf("result message %q: Decode error %v, encoding/json error %v", data, gErr, sErr)
		}
		if gErr == nil && !reflect.DeepEqual(gr, sr) {
			t.Fatalf("result message %q: Decode read %+v, encoding/json %+v", data, gr, sr)
		}
		if gErr == nil {
			ge, err1 := Encode(&gr)
			se, err2 := json.Marshal(&sr)
			if (err1 == nil) != (err2 == nil) || string(ge) != string(se) {
				t.Fatalf("result message %q: Encode gave %s (%v), encoding/json %s (%v)", data, ge, err1, se, err2)
			}
		}
	})
}

// A batch request's items are raw JSON from the client: Encode must refuse
// an item that is not one JSON value, and what it writes must read back as
// the same request, whatever an item holds (an item that tried to close
// the array and add a field must not get through).
func FuzzEncodeBatchRequest(f *testing.F) {
	for _, seed := range []string{`{"data":"x"}`, ` 1 `, `"s"`, ``, `null`, `1],"activity":"other","x":[2`, `{"a":1}{"b":2}`, `[1,2`, "\"\xff\"", `"<&>"`, "{\n \"a\" : [1, 2]\n}"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, item []byte) {
		req := BatchRequest{ID: "b1", Activity: "sha256", Items: []json.RawMessage{[]byte(`{"n":0}`), item},
			Options: Options{MaxInFlight: 7}}
		got, err := Encode(&req)
		if _, stdErr := json.Marshal(&req); (err == nil) != (stdErr == nil) {
			t.Fatalf("item %q: Encode error %v, encoding/json error %v", item, err, stdErr)
		}
		if err != nil {
			return
		}
		var back BatchRequest
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("item %q: encoded %q does not read back: %v", item, got, err)
		}
		want := req
		if item == nil {
			want.Items = []json.RawMessage{req.Items[0], []byte("null")}
		}
		if back.ID != want.ID || back.Activity != want.Activity || back.Options.MaxInFlight != 7 || len(back.Items) != 2 {
			t.Fatalf("item %q: read back %+v from %q", item, back, got)
		}
		for i := range want.Items {
			var a, b any
			if json.Unmarshal(want.Items[i], &a) != nil || json.Unmarshal(back.Items[i], &b) != nil || !reflect.DeepEqual(a, b) {
				t.Fatalf("item %d: %q read back as %q", i, want.Items[i], back.Items[i])
			}
		}
	})
}
