package aggregate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Results given out of order come out in item order, each once; items
// never given come out as not run; only results waiting for an earlier
// item are held.
func TestOrderedWriter(t *testing.T) {
	var buf bytes.Buffer
	ow := NewOrderedWriter(&buf, 6)
	add := func(item int, ok bool) {
		t.Helper()
		res := &messages.ResultMessage{Item: item, OK: ok, Output: json.RawMessage(`{"n":` + string(rune('0'+item)) + `}`)}
		if !ok {
			res.Output, res.Error = nil, "boom"
		}
		if err := ow.Add(item, res); err != nil {
			t.Fatal(err)
		}
	}
	add(2, true)
	add(1, false)
	if ow.Held() != 2 {
		t.Fatalf("held %d, want 2 (item 0 missing)", ow.Held())
	}
	add(0, true)
	add(0, true) // written already: ignored
	add(7, true) // out of range: ignored
	add(5, true)
	if ow.Held() != 1 {
		t.Fatalf("held %d, want 1 (item 5 waits for 3 and 4)", ow.Held())
	}
	if err := ow.Close("batch canceled"); err != nil {
		t.Fatal(err)
	}
	var got []messages.ItemResult
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var r messages.ItemResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", sc.Bytes(), err)
		}
		got = append(got, r)
	}
	want := []messages.ItemResult{
		{Item: 0, OK: true, Output: json.RawMessage(`{"n":0}`)},
		{Item: 1, Error: "boom"},
		{Item: 2, OK: true, Output: json.RawMessage(`{"n":2}`)},
		{Item: 3, NotRun: true, Error: "not run: batch canceled"},
		{Item: 4, NotRun: true, Error: "not run: batch canceled"},
		{Item: 5, OK: true, Output: json.RawMessage(`{"n":5}`)},
	}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].Item != want[i].Item || got[i].OK != want[i].OK || got[i].NotRun != want[i].NotRun ||
			got[i].Error != want[i].Error || string(got[i].Output) != string(want[i].Output) {
			t.Errorf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}
