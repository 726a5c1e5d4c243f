package messages_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/internal/messages"
)

var testLimits = messages.Limits{MaxItems: 1000, MaxTimeout: 7 * 24 * time.Hour}

func TestDecodeBatchRequestFillsDefaults(t *testing.T) {
	t.Parallel()
	req, e := messages.DecodeBatchRequest([]byte(`{"activity":"sha256","items":[{"data":"a"},{"data":"b"}]}`), testLimits)
	if e != nil {
		t.Fatalf("refused: %v", e)
	}
	if req.Activity != "sha256" || req.ID != "" || len(req.Items) != 2 || req.Source != nil || req.Reduce != nil {
		t.Fatalf("request %+v", req)
	}
	if string(req.Items[0]) != `{"data":"a"}` || string(req.Items[1]) != `{"data":"b"}` {
		t.Fatalf("items %s, %s", req.Items[0], req.Items[1])
	}
	o := req.Options
	if o.MaxInFlight != 0 || o.MaxAttempts != messages.DefaultMaxAttempts ||
		o.ItemTimeout.Std() != messages.DefaultItemTimeout || o.FailurePolicy != messages.FailureContinue ||
		o.Timeout != 0 || o.ToleratedFailures != nil || o.ToleratedFailurePercent != nil {
		t.Fatalf("defaults not filled: %+v", o)
	}
	if len(o.Backoff) != len(messages.DefaultBackoff) {
		t.Fatalf("backoff %v, want %v", o.Backoff, messages.DefaultBackoff)
	}
	for i := range o.Backoff {
		if o.Backoff[i] != messages.DefaultBackoff[i] {
			t.Fatalf("backoff %v, want %v", o.Backoff, messages.DefaultBackoff)
		}
	}
	// The defaults are a copy: changing one request's must not change the next.
	o.Backoff[0] = 0
	if messages.DefaultBackoff[0] == 0 {
		t.Fatal("a request's backoff shares its array with DefaultBackoff")
	}
}

func TestDecodeBatchRequestKeepsEveryOption(t *testing.T) {
	t.Parallel()
	body := `{
		"id": "order-42",
		"activity": "sleep",
		"items": [1, "two", null, {"x": [3]}],
		"options": {
			"max_in_flight": 16,
			"max_attempts": 5,
			"backoff": ["10ms", "1s"],
			"item_timeout": "2s",
			"timeout": "1h",
			"failure_policy": "fail_fast",
			"tolerated_failures": 0,
			"tolerated_failure_percent": 12.5
		}
	}`
	req, e := messages.DecodeBatchRequest([]byte(body), testLimits)
	if e != nil {
		t.Fatalf("refused: %v", e)
	}
	o := req.Options
	switch {
	case req.ID != "order-42", req.Activity != "sleep", len(req.Items) != 4:
		t.Fatalf("request %+v", req)
	case o.MaxInFlight != 16, o.MaxAttempts != 5, len(o.Backoff) != 2,
		o.Backoff[0].Std() != 10*time.Millisecond, o.Backoff[1].Std() != time.Second,
		o.ItemTimeout.Std() != 2*time.Second, o.Timeout.Std() != time.Hour,
		o.FailurePolicy != messages.FailureFast:
		t.Fatalf("options %+v", o)
	case o.ToleratedFailures == nil || *o.ToleratedFailures != 0:
		t.Fatalf("tolerated_failures %v, want 0", o.ToleratedFailures)
	case o.ToleratedFailurePercent == nil || *o.ToleratedFailurePercent != 12.5:
		t.Fatalf("tolerated_failure_percent %v, want 12.5", o.ToleratedFailurePercent)
	}
	// An explicitly empty backoff means "retry at once", not the default.
	req, e = messages.DecodeBatchRequest([]byte(`{"activity":"a","items":[1],"options":{"backoff":[]}}`), testLimits)
	if e != nil || req.Options.Backoff == nil || len(req.Options.Backoff) != 0 {
		t.Fatalf("empty backoff: %v, %v", req.Options.Backoff, e)
	}
	// A source instead of items is a valid request (the coordinator decides
	// whether it supports it).
	req, e = messages.DecodeBatchRequest([]byte(`{"activity":"a","source":{"activity":"list","input":{"dir":"/in"}},"reduce":{"activity":"combine"}}`), testLimits)
	if e != nil || req.Source == nil || req.Source.Activity != "list" || string(req.Source.Input) != `{"dir":"/in"}` || req.Reduce == nil || req.Reduce.Activity != "combine" {
		t.Fatalf("source request: %+v, %v", req, e)
	}
}

// Every way a submit body can be wrong gets an error with the right code and
// a message naming the field at fault.
func TestDecodeBatchRequestRefuses(t *testing.T) {
	t.Parallel()
	big := `{"activity":"a","items":[` + strings.Repeat("1,", testLimits.MaxItems) + `1]}`
	cases := []struct {
		name, body, code, mention string
	}{
		{"empty body", ``, messages.CodeInvalidJSON, "empty"},
		{"blank body", " \n\t ", messages.CodeInvalidJSON, "empty"},
		{"not JSON", `hello`, messages.CodeInvalidJSON, "JSON"},
		{"truncated object", `{"activity":"echo","items":[1]`, messages.CodeInvalidJSON, "JSON"},
		{"trailing garbage", `{"activity":"echo","items":[1]} x`, messages.CodeInvalidJSON, "JSON"},
		{"array", `[{"activity":"echo"}]`, messages.CodeInvalidJSON, "object"},
		{"string", `"echo"`, messages.CodeInvalidJSON, "object"},
		{"number", `42`, messages.CodeInvalidJSON, "object"},
		{"null", `null`, messages.CodeInvalidJSON, "object"},
		{"no activity", `{"items":[1]}`, messages.CodeInvalidRequest, "activity"},
		{"empty activity", `{"activity":"","items":[1]}`, messages.CodeInvalidRequest, "activity"},
		{"activity not a string", `{"activity":7,"items":[1]}`, messages.CodeInvalidRequest, "activity"},
		{"activity with a dot", `{"activity":"a.b","items":[1]}`, messages.CodeInvalidRequest, "activity"},
		{"activity with a wildcard", `{"activity":"*","items":[1]}`, messages.CodeInvalidRequest, "activity"},
		{"activity too long", `{"activity":"` + strings.Repeat("a", 65) + `","items":[1]}`, messages.CodeInvalidRequest, "activity"},
		{"no items", `{"activity":"echo"}`, messages.CodeInvalidRequest, "items"},
		{"empty items", `{"activity":"echo","items":[]}`, messages.CodeInvalidRequest, "items"},
		{"items null", `{"activity":"echo","items":null}`, messages.CodeInvalidRequest, "items"},
		{"items an object", `{"activity":"echo","items":{"a":1}}`, messages.CodeInvalidRequest, "items"},
		{"items a string", `{"activity":"echo","items":"abc"}`, messages.CodeInvalidRequest, "items"},
		{"items and source", `{"activity":"echo","items":[1],"source":{"activity":"list"}}`, messages.CodeInvalidRequest, "source"},
		{"source not an object", `{"activity":"echo","source":"list"}`, messages.CodeInvalidRequest, "source"},
		{"source without activity", `{"activity":"echo","source":{"input":1}}`, messages.CodeInvalidRequest, "source.activity"},
		{"source unknown field", `{"activity":"echo","source":{"activity":"l","x":1}}`, messages.CodeInvalidRequest, "source.x"},
		{"reduce bad activity", `{"activity":"echo","items":[1],"reduce":{"activity":"a b"}}`, messages.CodeInvalidRequest, "reduce.activity"},
		{"unknown field", `{"activity":"echo","items":[1],"priority":1}`, messages.CodeInvalidRequest, "priority"},
		{"field in wrong case", `{"Activity":"echo","items":[1]}`, messages.CodeInvalidRequest, "Activity"},
		{"id not a string", `{"id":5,"activity":"echo","items":[1]}`, messages.CodeInvalidRequest, "id"},
		{"id with a dot", `{"id":"a.b","activity":"echo","items":[1]}`, messages.CodeInvalidRequest, "id"},
		{"id with a space", `{"id":"a b","activity":"echo","items":[1]}`, messages.CodeInvalidRequest, "id"},
		{"id too long", `{"id":"` + strings.Repeat("x", 65) + `","activity":"echo","items":[1]}`, messages.CodeInvalidRequest, "id"},
		{"too many items", big, messages.CodeTooLarge, "items"},
		{"item nested too deep", `{"activity":"echo","items":[1,` + nested(messages.MaxValueDepth+1) + `]}`, messages.CodeInvalidRequest, "items"},
		{"source input nested too deep", `{"activity":"echo","source":{"activity":"l","input":` + nested(messages.MaxValueDepth+1) + `}}`, messages.CodeInvalidRequest, "source.input"},
		{"reduce input nested too deep", `{"activity":"echo","items":[1],"reduce":{"activity":"r","input":` + nested(messages.MaxValueDepth+1) + `}}`, messages.CodeInvalidRequest, "reduce.input"},
		{"options not an object", `{"activity":"echo","items":[1],"options":5}`, messages.CodeInvalidRequest, "options"},
		{"options an array", `{"activity":"echo","items":[1],"options":[]}`, messages.CodeInvalidRequest, "options"},
		{"unknown option", `{"activity":"echo","items":[1],"options":{"parallelism":4}}`, messages.CodeInvalidRequest, "options.parallelism"},
		{"max_in_flight a string", `{"activity":"echo","items":[1],"options":{"max_in_flight":"16"}}`, messages.CodeInvalidRequest, "options.max_in_flight"},
		{"max_in_flight zero", `{"activity":"echo","items":[1],"options":{"max_in_flight":0}}`, messages.CodeInvalidRequest, "options.max_in_flight"},
		{"max_in_flight negative", `{"activity":"echo","items":[1],"options":{"max_in_flight":-1}}`, messages.CodeInvalidRequest, "options.max_in_flight"},
		{"max_in_flight fraction", `{"activity":"echo","items":[1],"options":{"max_in_flight":1.5}}`, messages.CodeInvalidRequest, "options.max_in_flight"},
		{"max_in_flight huge", `{"activity":"echo","items":[1],"options":{"max_in_flight":1e300}}`, messages.CodeInvalidRequest, "options.max_in_flight"},
		{"max_in_flight over the bound", `{"activity":"echo","items":[1],"options":{"max_in_flight":100001}}`, messages.CodeInvalidRequest, "options.max_in_flight"},
		{"max_in_flight a boolean", `{"activity":"echo","items":[1],"options":{"max_in_flight":true}}`, messages.CodeInvalidRequest, "options.max_in_flight"},
		{"max_attempts zero", `{"activity":"echo","items":[1],"options":{"max_attempts":0}}`, messages.CodeInvalidRequest, "options.max_attempts"},
		{"max_attempts negative", `{"activity":"echo","items":[1],"options":{"max_attempts":-3}}`, messages.CodeInvalidRequest, "options.max_attempts"},
		{"max_attempts over the bound", `{"activity":"echo","items":[1],"options":{"max_attempts":101}}`, messages.CodeInvalidRequest, "options.max_attempts"},
		{"backoff a string", `{"activity":"echo","items":[1],"options":{"backoff":"1s"}}`, messages.CodeInvalidRequest, "options.backoff"},
		{"backoff numbers", `{"activity":"echo","items":[1],"options":{"backoff":[1000]}}`, messages.CodeInvalidRequest, "options.backoff"},
		{"backoff not durations", `{"activity":"echo","items":[1],"options":{"backoff":["soon"]}}`, messages.CodeInvalidRequest, "options.backoff"},
		{"backoff negative", `{"activity":"echo","items":[1],"options":{"backoff":["1s","-1s"]}}`, messages.CodeInvalidRequest, "options.backoff[1]"},
		{"backoff too long a delay", `{"activity":"echo","items":[1],"options":{"backoff":["721h"]}}`, messages.CodeInvalidRequest, "options.backoff[0]"},
		{"backoff too many", `{"activity":"echo","items":[1],"options":{"backoff":[` + strings.Repeat(`"1s",`, messages.MaxBackoffLen) + `"1s"]}}`, messages.CodeInvalidRequest, "options.backoff"},
		{"item_timeout a number", `{"activity":"echo","items":[1],"options":{"item_timeout":30}}`, messages.CodeInvalidRequest, "options.item_timeout"},
		{"item_timeout zero", `{"activity":"echo","items":[1],"options":{"item_timeout":"0s"}}`, messages.CodeInvalidRequest, "options.item_timeout"},
		{"item_timeout negative", `{"activity":"echo","items":[1],"options":{"item_timeout":"-5s"}}`, messages.CodeInvalidRequest, "options.item_timeout"},
		{"item_timeout no unit", `{"activity":"echo","items":[1],"options":{"item_timeout":"30"}}`, messages.CodeInvalidRequest, "options.item_timeout"},
		{"item_timeout too long", `{"activity":"echo","items":[1],"options":{"item_timeout":"721h"}}`, messages.CodeInvalidRequest, "options.item_timeout"},
		{"item_timeout overflowing", `{"activity":"echo","items":[1],"options":{"item_timeout":"9999999999h"}}`, messages.CodeInvalidRequest, "options.item_timeout"},
		{"timeout a number", `{"activity":"echo","items":[1],"options":{"timeout":3600}}`, messages.CodeInvalidRequest, "options.timeout"},
		{"timeout negative", `{"activity":"echo","items":[1],"options":{"timeout":"-1h"}}`, messages.CodeInvalidRequest, "options.timeout"},
		{"timeout past retention", `{"activity":"echo","items":[1],"options":{"timeout":"169h"}}`, messages.CodeInvalidRequest, "options.timeout"},
		{"failure_policy unknown", `{"activity":"echo","items":[1],"options":{"failure_policy":"stop"}}`, messages.CodeInvalidRequest, "options.failure_policy"},
		{"failure_policy a number", `{"activity":"echo","items":[1],"options":{"failure_policy":1}}`, messages.CodeInvalidRequest, "options.failure_policy"},
		{"tolerated_failures negative", `{"activity":"echo","items":[1],"options":{"tolerated_failures":-1}}`, messages.CodeInvalidRequest, "options.tolerated_failures"},
		{"tolerated_failures a string", `{"activity":"echo","items":[1],"options":{"tolerated_failures":"3"}}`, messages.CodeInvalidRequest, "options.tolerated_failures"},
		{"tolerated_failure_percent over 100", `{"activity":"echo","items":[1],"options":{"tolerated_failure_percent":100.5}}`, messages.CodeInvalidRequest, "options.tolerated_failure_percent"},
		{"tolerated_failure_percent negative", `{"activity":"echo","items":[1],"options":{"tolerated_failure_percent":-1}}`, messages.CodeInvalidRequest, "options.tolerated_failure_percent"},
		{"tolerated_failure_percent a string", `{"activity":"echo","items":[1],"options":{"tolerated_failure_percent":"5%"}}`, messages.CodeInvalidRequest, "options.tolerated_failure_percent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, e := messages.DecodeBatchRequest([]byte(tc.body), testLimits)
			if e == nil {
				t.Fatalf("accepted %s", abbreviate(tc.body))
			}
			if e.Code != tc.code {
				t.Errorf("code %q, want %q (message %q)", e.Code, tc.code, e.Message)
			}
			if !strings.Contains(e.Message, tc.mention) {
				t.Errorf("message %q does not name %q", e.Message, tc.mention)
			}
		})
	}
}

// Options are bounded as their error messages say: item_timeout and timeout
// from 1ms. A sub-millisecond item_timeout cannot be carried by the work
// message (item_timeout_ms is whole milliseconds; 0 there means "use the 5
// minute default"), so accepting one silently turns "500us" into 5 minutes.
func TestDecodeBatchRequestRefusesSubMillisecondTimeouts(t *testing.T) {
	t.Parallel()
	for _, opt := range []string{`"item_timeout":"500us"`, `"item_timeout":"1ns"`, `"timeout":"999us"`} {
		req, e := messages.DecodeBatchRequest([]byte(`{"activity":"echo","items":[1],"options":{`+opt+`}}`), testLimits)
		if e == nil {
			t.Errorf("accepted %s (item_timeout %s, timeout %s); the documented range starts at 1ms", opt, req.Options.ItemTimeout.Std(), req.Options.Timeout.Std())
			continue
		}
		if e.Code != messages.CodeInvalidRequest {
			t.Errorf("%s: code %q, want %q", opt, e.Code, messages.CodeInvalidRequest)
		}
	}
	// 1ms itself is in range.
	if _, e := messages.DecodeBatchRequest([]byte(`{"activity":"echo","items":[1],"options":{"item_timeout":"1ms","timeout":"1ms"}}`), testLimits); e != nil {
		t.Errorf("1ms refused: %v", e)
	}
}

// A JSON null for an optional field means "left out": it must not silently
// turn into a value that changes the batch. "tolerated_failures": null
// becoming a threshold of 0 would fail a batch on its first failed item.
func TestDecodeBatchRequestNullOptionsAreLeftOut(t *testing.T) {
	t.Parallel()
	for _, opt := range []string{"tolerated_failures", "tolerated_failure_percent"} {
		req, e := messages.DecodeBatchRequest([]byte(`{"activity":"echo","items":[1],"options":{"`+opt+`":null}}`), testLimits)
		if e != nil {
			if e.Code != messages.CodeInvalidRequest {
				t.Errorf("%s null: code %q, want %q", opt, e.Code, messages.CodeInvalidRequest)
			}
			continue // refusing null is fine too
		}
		if o := req.Options; o.ToleratedFailures != nil || o.ToleratedFailurePercent != nil {
			t.Errorf("%q: null became a failure threshold (tolerated_failures %v, tolerated_failure_percent %v); a batch would fail on its first failed item",
				opt, deref(o.ToleratedFailures), deref(o.ToleratedFailurePercent))
		}
	}
	// Nulls elsewhere: left out (defaults) or refused, never a panic or a zero value.
	for _, body := range []string{
		`{"activity":"echo","items":[1],"options":null}`,
		`{"activity":"echo","items":[1],"options":{"failure_policy":null}}`,
		`{"activity":"echo","items":[1],"options":{"backoff":null}}`,
		`{"activity":"echo","items":[1],"options":{"max_in_flight":null}}`,
		`{"activity":"echo","items":[1],"options":{"max_attempts":null}}`,
		`{"activity":"echo","items":[1],"options":{"item_timeout":null}}`,
		`{"id":null,"activity":"echo","items":[1]}`,
	} {
		req, e := messages.DecodeBatchRequest([]byte(body), testLimits)
		if e != nil {
			if e.Code != messages.CodeInvalidRequest {
				t.Errorf("%s: code %q", body, e.Code)
			}
			continue
		}
		checkAccepted(t, body, req, testLimits)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// What the coordinator stores (json.Marshal of the decoded request) is what
// the driver reads back (json.Unmarshal): nothing is lost on the way.
func TestBatchRequestRoundTrip(t *testing.T) {
	t.Parallel()
	body := `{"id":"x1","activity":"sleep","items":[{"ms":1},{"ms":2,"fail":"no"}],
		"options":{"max_in_flight":3,"max_attempts":2,"backoff":["10ms"],"item_timeout":"1s","timeout":"1m",
		"failure_policy":"continue","tolerated_failures":1,"tolerated_failure_percent":50}}`
	req, e := messages.DecodeBatchRequest([]byte(body), testLimits)
	if e != nil {
		t.Fatal(e)
	}
	stored, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var back messages.BatchRequest
	if err := json.Unmarshal(stored, &back); err != nil {
		t.Fatal(err)
	}
	again, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(stored) {
		t.Fatalf("round trip changed the request:\n%s\n%s", stored, again)
	}
	// And the stored form is itself a valid submit body meaning the same.
	req2, e := messages.DecodeBatchRequest(stored, testLimits)
	if e != nil {
		t.Fatalf("stored form refused: %v", e)
	}
	if b, _ := json.Marshal(req2); string(b) != string(stored) {
		t.Fatalf("stored form decodes differently:\n%s\n%s", stored, b)
	}
}

func TestDecodeBatchRef(t *testing.T) {
	t.Parallel()
	ref, e := messages.DecodeBatchRef([]byte(` {"batch_id":"0b7c6a4e-2f7d-4b61-9d0e-1f2a3b4c5d6e"} `))
	if e != nil || ref.BatchID != "0b7c6a4e-2f7d-4b61-9d0e-1f2a3b4c5d6e" {
		t.Fatalf("ref %+v, %v", ref, e)
	}
	cases := []struct{ name, body, code string }{
		{"empty", ``, messages.CodeInvalidJSON},
		{"not JSON", `batch-1`, messages.CodeInvalidJSON},
		{"broken JSON", `{"batch_id":`, messages.CodeInvalidJSON},
		{"array", `["b"]`, messages.CodeInvalidJSON},
		{"string", `"b"`, messages.CodeInvalidJSON},
		{"null", `null`, messages.CodeInvalidJSON},
		{"no batch_id", `{}`, messages.CodeInvalidRequest},
		{"empty batch_id", `{"batch_id":""}`, messages.CodeInvalidRequest},
		{"null batch_id", `{"batch_id":null}`, messages.CodeInvalidRequest},
		{"number batch_id", `{"batch_id":12}`, messages.CodeInvalidRequest},
		{"batch_id with a dot", `{"batch_id":"a.b"}`, messages.CodeInvalidRequest},
		{"batch_id a wildcard", `{"batch_id":">"}`, messages.CodeInvalidRequest},
		{"unknown field", `{"batch_id":"b","verbose":true}`, messages.CodeInvalidRequest},
	}
	for _, tc := range cases {
		ref, e := messages.DecodeBatchRef([]byte(tc.body))
		if e == nil {
			t.Errorf("%s: accepted %q as %+v", tc.name, tc.body, ref)
			continue
		}
		if e.Code != tc.code || e.Message == "" {
			t.Errorf("%s: error %+v, want code %q and a message", tc.name, e, tc.code)
		}
	}
}

func abbreviate(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// checkAccepted asserts the invariants of a request DecodeBatchRequest
// accepted: what the coordinator relies on without checking again.
func checkAccepted(t *testing.T, body string, req messages.BatchRequest, lim messages.Limits) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("accepted %q but "+format, append([]any{abbreviate(body)}, args...)...)
	}
	if !messages.ValidToken(req.Activity) {
		fail("activity %q is not a valid token", req.Activity)
	}
	if req.ID != "" && !messages.ValidToken(req.ID) {
		fail("id %q is not a valid token", req.ID)
	}
	switch {
	case req.Source == nil && len(req.Items) == 0:
		fail("it has no items and no source")
	case req.Source != nil && req.Items != nil:
		fail("it has both items and a source")
	case req.Source != nil && !messages.ValidToken(req.Source.Activity):
		fail("source activity %q is not a valid token", req.Source.Activity)
	case req.Reduce != nil && !messages.ValidToken(req.Reduce.Activity):
		fail("reduce activity %q is not a valid token", req.Reduce.Activity)
	case lim.MaxItems > 0 && len(req.Items) > lim.MaxItems:
		fail("%d items is over the limit %d", len(req.Items), lim.MaxItems)
	}
	for i, it := range req.Items {
		if !json.Valid(it) {
			fail("item %d is not valid JSON: %q", i, it)
		}
	}
	o := req.Options
	maxTimeout := messages.MaxDuration
	if lim.MaxTimeout > 0 {
		maxTimeout = lim.MaxTimeout
	}
	switch {
	case o.MaxInFlight < 0 || o.MaxInFlight > messages.MaxMaxInFlight: // 0: auto
		fail("max_in_flight %d", o.MaxInFlight)
	case o.MaxAttempts < 1 || o.MaxAttempts > messages.MaxMaxAttempts:
		fail("max_attempts %d", o.MaxAttempts)
	case o.Backoff == nil:
		fail("backoff was not defaulted")
	case len(o.Backoff) > messages.MaxBackoffLen:
		fail("%d backoff entries", len(o.Backoff))
	// The work message carries item_timeout in whole milliseconds.
	case o.ItemTimeout.Std() < time.Millisecond || o.ItemTimeout.Std() > messages.MaxDuration:
		fail("item_timeout %s", o.ItemTimeout.Std())
	case o.Timeout < 0 || (o.Timeout > 0 && o.Timeout.Std() < time.Millisecond) || o.Timeout.Std() > maxTimeout:
		fail("timeout %s", o.Timeout.Std())
	case o.FailurePolicy != messages.FailureContinue && o.FailurePolicy != messages.FailureFast:
		fail("failure_policy %q", o.FailurePolicy)
	case o.ToleratedFailures != nil && *o.ToleratedFailures < 0:
		fail("tolerated_failures %d", *o.ToleratedFailures)
	case o.ToleratedFailurePercent != nil && (*o.ToleratedFailurePercent < 0 || *o.ToleratedFailurePercent > 100):
		fail("tolerated_failure_percent %g", *o.ToleratedFailurePercent)
	}
	for i, b := range o.Backoff {
		if b < 0 || b.Std() > messages.MaxDuration {
			fail("backoff[%d] %s", i, b.Std())
		}
	}
	// The coordinator stores the request as JSON and the driver reads it
	// back: that must work and keep the batch the same.
	stored, err := json.Marshal(req)
	if err != nil {
		fail("it cannot be stored: %v", err)
	}
	var back messages.BatchRequest
	if err := json.Unmarshal(stored, &back); err != nil {
		fail("its stored form %q cannot be read back: %v", abbreviate(string(stored)), err)
	}
	if back.ID != req.ID || back.Activity != req.Activity || len(back.Items) != len(req.Items) ||
		back.Options.MaxInFlight != o.MaxInFlight || back.Options.MaxAttempts != o.MaxAttempts ||
		back.Options.ItemTimeout != o.ItemTimeout || back.Options.Timeout != o.Timeout ||
		back.Options.FailurePolicy != o.FailurePolicy {
		fail("its stored form %q reads back as %+v", abbreviate(string(stored)), back)
	}
}
