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
