package messages_test

import (
	"strings"
	"testing"

	"github.com/fanoutdev/fanout/internal/messages"
)

func TestParseResultSubject(t *testing.T) {
	t.Parallel()
	n := messages.MustNames("")
	for _, tc := range []struct {
		batch string
		item  int
	}{{"b", 0}, {"0b7c6a4e-2f7d-4b61-9d0e-1f2a3b4c5d6e", 9999}, {"order_42", 1<<31 - 1}} {
		subj := n.Result(tc.batch, tc.item)
		batch, item, ok := n.ParseResultSubject(subj)
		if !ok || batch != tc.batch || item != tc.item {
			t.Errorf("ParseResultSubject(%q) = %q, %d, %v; want %q, %d, true", subj, batch, item, ok, tc.batch, tc.item)
		}
	}
	for _, subj := range []string{
		"",
		"fanout.result",
		"fanout.result.",
		"fanout.result.b",
		"fanout.result.b.",
		"fanout.result..1",
		"fanout.result.b.x",
		"fanout.result.b.-1",
		"fanout.result.b.+1",
		"fanout.result.b.01",
		"fanout.result.b. 1",
		"fanout.result.b.1.2",
		"fanout.result.b.1e3",
		"fanout.result.b.99999999999999999999999",
		"fanout.work.echo.b",
		"fanout.done.b",
		"other.result.b.1",
		"fanoutx.result.b.1",
		"xfanout.result.b.1",
	} {
		if batch, item, ok := n.ParseResultSubject(subj); ok {
			t.Errorf("ParseResultSubject(%q) = %q, %d, true; want not ok", subj, batch, item)
		}
	}
	// Another prefix does not read this one's results, nor the reverse.
	other := messages.MustNames("tenant_b")
	if _, _, ok := other.ParseResultSubject(n.Result("b", 1)); ok {
		t.Error("prefix tenant-b parsed a fanout result subject")
	}
	if b, i, ok := other.ParseResultSubject(other.Result("b", 1)); !ok || b != "b" || i != 1 {
		t.Errorf("prefix tenant-b: %q, %d, %v", b, i, ok)
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	n := messages.MustNames("")
	for got, want := range map[string]string{
		n.Submit():                       "fanout.submit",
		n.Status():                       "fanout.status",
		n.Cancel():                       "fanout.cancel",
		n.Work("sha256", "b1"):           "fanout.work.sha256.b1",
		n.Result("b1", 7):                "fanout.result.b1.7",
		n.Progress("b1"):                 "fanout.progress.b1",
		n.Done("b1"):                     "fanout.done.b1",
		n.WorkStream():                   "FANOUT_WORK",
		n.ResultsStream():                "FANOUT_RESULTS",
		n.DoneStream():                   "FANOUT_DONE",
		n.BatchesBucket():                "FANOUT_BATCHES",
		messages.IdempotencyKey("b1", 7): "b1/7",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if got := messages.MustNames("my_app").WorkStream(); got != "MY_APP_WORK" {
		t.Errorf("stream of prefix my-app: %q", got)
	}
	for _, bad := range []string{"a.b", "a b", "*", ">", strings.Repeat("p", 33), "a-b", "Fanout", "9lives"} {
		if _, err := messages.NewNames(bad); err == nil {
			t.Errorf("prefix %q accepted", bad)
		}
	}
	if b, ok := n.BatchFromToken(n.Token("b1")); !ok || b != "b1" {
		t.Errorf("BatchFromToken: %q, %v", b, ok)
	}
	for _, subj := range []string{"fanout.control.batch.", "fanout.control.batch.a.b", "fanout.control.other.b1", "fanout.control.batch.*"} {
		if b, ok := n.BatchFromToken(subj); ok {
			t.Errorf("BatchFromToken(%q) = %q, true", subj, b)
		}
	}
}
