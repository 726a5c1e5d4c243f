package messages_test

import (
	"encoding/json"
	"strings"
	"testing"

	gojson "github.com/goccy/go-json"

	"github.com/fanoutdev/fanout/internal/messages"
)

// nested is an item n levels deep: objects and arrays in turn, with a
// string holding brackets at the bottom.
func nested(n int) string {
	var b strings.Builder
	for i := range n {
		if i%2 == 0 {
			b.WriteString(`{"k":`)
		} else {
			b.WriteString(`[`)
		}
	}
	b.WriteString(`"[{\"}"`)
	for i := n - 1; i >= 0; i-- {
		if i%2 == 0 {
			b.WriteString(`}`)
		} else {
			b.WriteString(`]`)
		}
	}
	return b.String()
}

// depthOf is the reference: the nesting of a decoded value.
func depthOf(v any) int {
	d := 0
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			d = max(d, depthOf(e))
		}
		return d + 1
	case map[string]any:
		for _, e := range v {
			d = max(d, depthOf(e))
		}
		return d + 1
	}
	return 0
}

func TestDepth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		json string
		want int
	}{
		{`1`, 0}, {`"[[["`, 0}, {`[]`, 1}, {`{}`, 1}, {`[[],{}]`, 2},
		{`{"a":"\"]}"}`, 1}, {`{"a\\":["\\"]}`, 2}, {nested(7), 7}, {nested(messages.MaxValueDepth), messages.MaxValueDepth},
	} {
		if got := messages.Depth([]byte(tc.json)); got != tc.want {
			t.Errorf("Depth(%s) = %d, want %d", abbreviate(tc.json), got, tc.want)
		}
	}
}

// FuzzDepth: on valid JSON, Depth agrees with the nesting of the decoded
// value.
func FuzzDepth(f *testing.F) {
	for _, s := range []string{`1`, `[[1],{"a":[]}]`, `{"a":"]\\"}`, nested(9)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v any
		if json.Unmarshal(data, &v) != nil {
			return
		}
		if got, want := messages.Depth(data), depthOf(v); got != want {
			t.Fatalf("Depth(%q) = %d, decoded value nests %d", data, got, want)
		}
	})
}

// An item as deep as a submit accepts can be read back inside every
// message that carries it, by both decoders the project uses and within
// the 128 levels common decoders accept.
func TestDeepestItemCanBeReadBack(t *testing.T) {
	t.Parallel()
	item := nested(messages.MaxValueDepth)
	req, e := messages.DecodeBatchRequest([]byte(`{"activity":"echo","items":[`+item+`]}`), testLimits)
	if e != nil {
		t.Fatalf("refused an item %d levels deep: %v", messages.MaxValueDepth, e)
	}
	work := messages.NewWorkMessage("b", "echo", req.Options)
	work.Input = req.Items[0]
	agg := messages.Aggregate{BatchID: "b", Results: []messages.ItemResult{{Item: 0, OK: true, Output: req.Items[0]}}}
	for name, v := range map[string]any{"work message": &work, "aggregate": &agg} {
		b, err := messages.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		if d := messages.Depth(b); d > 128 {
			t.Errorf("%s nests %d levels", name, d)
		}
		var std, goccy any
		if err := json.Unmarshal(b, &std); err != nil {
			t.Errorf("%s: encoding/json: %v", name, err)
		}
		if err := gojson.Unmarshal(b, &goccy); err != nil {
			t.Errorf("%s: goccy: %v", name, err)
		}
	}
}
