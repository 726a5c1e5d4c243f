package messages_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/fanoutdev/fanout/internal/messages"
)

var requestSeeds = []string{
	``,
	`null`,
	`[]`,
	`"x"`,
	`{}`,
	`{"activity":"echo","items":[1]}`,
	`{"activity":"sha256","items":[{"data":"a"},{"data":"b"}]}`,
	`{"id":"order-42","activity":"sleep","items":[{"ms":1,"fail":"x"}],"options":{"max_in_flight":16,"max_attempts":1,"backoff":["10ms"],"item_timeout":"1s","timeout":"1h","failure_policy":"fail_fast","tolerated_failures":2,"tolerated_failure_percent":5}}`,
	`{"activity":"echo","source":{"activity":"list","input":{"dir":"/in"}},"reduce":{"activity":"combine"}}`,
	`{"activity":"echo","items":[1],"options":{"backoff":[]}}`,
	`{"activity":"echo","items":[1],"options":{"item_timeout":"1ms","timeout":"1ms","backoff":["0s"]}}`,
	`{"activity":"echo","items":[1],"options":null}`,
	`{"activity":"echo","items":[1],"options":{"max_in_flight":1e300}}`,
	`{"activity":"echo","items":[1],"options":{"max_in_flight":2147483648}}`,
	`{"activity":"echo","items":[1],"options":{"max_in_flight":-0}}`,
	`{"activity":"echo","items":[1],"options":{"item_timeout":"2562047h47m16.854775807s"}}`,
	`{"activity":"echo","items":[1],"options":{"tolerated_failure_percent":1e400}}`,
	`{"activity":"echo","items":[1],"options":{"backoff":["-1ns"]}}`,
	`{"activity":"echo","items":null}`,
	`{"activity":"echo","items":[1],"activity":"sha256"}`,
	`{"activity":"e\u0063ho","items":["\ud800"]}`,
	"{\"activity\":\"echo\",\"items\":[\"\xff\"]}",
	`{"id":"` + strings.Repeat("a", 64) + `","activity":"` + strings.Repeat("b", 64) + `","items":[[[[[[[[[]]]]]]]]]}`,
}

// FuzzDecodeBatchRequest: the decoder never panics, every refusal carries a
// known code and a message, and every accepted request satisfies the
// invariants the coordinator relies on (valid activity and id, items or a
// source, options within bounds and defaulted, storable as JSON).
func FuzzDecodeBatchRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	lim := testLimits
	f.Fuzz(func(t *testing.T, data []byte) {
		req, e := messages.DecodeBatchRequest(data, lim)
		if e != nil {
			switch e.Code {
			case messages.CodeInvalidJSON, messages.CodeInvalidRequest, messages.CodeTooLarge:
			default:
				t.Fatalf("refused %q with code %q", abbreviate(string(data)), e.Code)
			}
			if e.Message == "" {
				t.Fatalf("refused %q without a message", abbreviate(string(data)))
			}
			return
		}
		checkAccepted(t, string(data), req, lim)
	})
}

// FuzzDecodeBatchRef: never panics; an accepted ref names a valid batch id.
func FuzzDecodeBatchRef(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"batch_id":"b1"}`, `{"batch_id":null}`, `{"batch_id":"a.b"}`, `{"batch_id":"b","x":1}`, `[1]`, `"b"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ref, e := messages.DecodeBatchRef(data)
		if e != nil {
			if (e.Code != messages.CodeInvalidJSON && e.Code != messages.CodeInvalidRequest) || e.Message == "" {
				t.Fatalf("refused %q with %+v", data, e)
			}
			return
		}
		if !messages.ValidToken(ref.BatchID) {
			t.Fatalf("accepted %q with batch id %q", data, ref.BatchID)
		}
	})
}

// FuzzParseResultSubject: a subject is parsed only if it is exactly the
// subject Names.Result builds for what was parsed, so two different
// subjects can never count as the same item.
func FuzzParseResultSubject(f *testing.F) {
	for _, s := range []string{"fanout.result.b.0", "fanout.result.b.01", "fanout.result.b.-1", "fanout.result..1", "fanout.result.b.1.2", "fanout.result.b." + strconv.Itoa(1<<40)} {
		f.Add(s)
	}
	n := messages.MustNames("")
	f.Fuzz(func(t *testing.T, subject string) {
		batch, item, ok := n.ParseResultSubject(subject)
		if !ok {
			return
		}
		if item < 0 || batch == "" || strings.Contains(batch, ".") {
			t.Fatalf("ParseResultSubject(%q) = %q, %d", subject, batch, item)
		}
		if again := n.Result(batch, item); again != subject {
			t.Fatalf("ParseResultSubject(%q) = %q, %d, but that item's subject is %q", subject, batch, item, again)
		}
	})
}
