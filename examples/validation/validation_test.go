package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/examples/validation/validation"
	"github.com/fanoutdev/fanout/internal/embedded"
)

// devStack starts what `fanout dev` runs (real embedded NATS, a
// coordinator, a built-in worker) on a free port, stopped with the test.
func devStack(t *testing.T) *embedded.Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stack, err := embedded.StartStack(ctx, embedded.StackConfig{DataDir: t.TempDir(), Port: 0, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stack.Stop(context.Background()) })
	return stack
}

// The example as `go run ./examples/validation` runs it, with exact counts:
// run 1 completes with its 3 invalid records as failed items; run 2, checked
// one record at a time, fails at its 5th invalid record (item 21: 5 of 40
// is over 10%), with the 17 valid records before it counted and the 18
// after it not run.
func TestValidation(t *testing.T) {
	t.Parallel()
	stack := devStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var out bytes.Buffer
	aggs, err := run(ctx, []string{"-server", stack.URL}, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	batches := validation.Demo()

	// Run 1: every record has its result; exactly the bad ones failed, each
	// with the message Check gives for it.
	a := aggs[0]
	if a.Status != client.StatusCompleted || a.Total != 40 || a.Succeeded != 37 || a.Failed != 3 || a.NotRun != 0 || a.Reason != "" {
		t.Fatalf("run 1: %s %q: %d succeeded %d failed %d not run of %d; want completed 37/3/0 of 40", a.Status, a.Reason, a.Succeeded, a.Failed, a.NotRun, a.Total)
	}
	checkResults(t, "run 1", batches[0], a, 40)

	// Run 2: stopped by the threshold at the 5th bad record, item 21.
	a = aggs[1]
	if a.Status != client.StatusFailed || a.Total != 40 || a.Succeeded != 17 || a.Failed != 5 || a.NotRun != 18 {
		t.Fatalf("run 2: %s: %d succeeded %d failed %d not run of %d; want failed 17/5/18 of 40", a.Status, a.Succeeded, a.Failed, a.NotRun, a.Total)
	}
	if !strings.Contains(a.Reason, "tolerated_failure_percent") {
		t.Errorf("run 2 reason %q: want it to name tolerated_failure_percent", a.Reason)
	}
	checkResults(t, "run 2", batches[1], a, 22)
	for _, r := range a.Results[22:] {
		if !r.NotRun || r.OK {
			t.Errorf("run 2 item %d after the stop: %+v, want not run", r.Item, r)
		}
	}

	for _, want := range []string{
		"run 1, a few bad records: 40 records, 3 invalid",
		"  37 valid, 3 invalid (7.5% of 40)\n",
		"  17 valid, 5 invalid (12.5% of 40), 18 not run\n",
		fmt.Sprintf("    item 21: %s\n", checkErr(batches[1].Records[21])),
		"as expected",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// checkResults checks items [0, upTo) of an aggregate: in item order, the
// bad records failed with Check's message, the others passed normalised.
func checkResults(t *testing.T, run string, b validation.Batch, a *client.Aggregate, upTo int) {
	t.Helper()
	if len(a.Results) != a.Total {
		t.Fatalf("%s: %d results for %d items", run, len(a.Results), a.Total)
	}
	for i, r := range a.Results[:upTo] {
		if r.Item != i {
			t.Fatalf("%s: result %d is item %d", run, i, r.Item)
		}
		if slices.Contains(b.Bad, i) {
			if r.OK || r.NotRun || r.Error != checkErr(b.Records[i]) {
				t.Errorf("%s item %d: %+v, want failed with %q", run, i, r, checkErr(b.Records[i]))
			}
		} else if !r.OK || !strings.Contains(string(r.Output), fmt.Sprintf(`"id":"c-%04d"`, i+1)) {
			t.Errorf("%s item %d: %+v, want valid", run, i, r)
		}
	}
}

func checkErr(r validation.Record) string {
	_, err := validation.Check(r)
	if err == nil {
		return "(valid)"
	}
	return err.Error()
}

// Check names every problem of a record, and passes good ones normalised.
func TestCheck(t *testing.T) {
	t.Parallel()
	c, err := validation.Check(validation.Record{ID: " c-1 ", Name: "Ada", Email: " Ada@Example.COM", Age: 36, Country: "gb"})
	if err != nil || c != (validation.Clean{ID: "c-1", Name: "Ada", Email: "ada@example.com", Age: 36, Country: "GB"}) {
		t.Errorf("good record: %+v, %v", c, err)
	}
	_, err = validation.Check(validation.Record{Email: "nobody", Age: 3, Country: "XX"})
	want := `record (no id): id is missing; name is missing; email "nobody" is not an address; age 3 is outside 18-120; country "XX" is not one of DE ES FR GB IT NL PL SE US`
	if err == nil || err.Error() != want {
		t.Errorf("bad record: %v\nwant %s", err, want)
	}
	for _, email := range []string{"a@b", "a b@c.com", "<a@b.com>", "Ann <a@b.com>", ""} {
		if _, err := validation.Check(validation.Record{ID: "x", Name: "x", Email: email, Age: 30, Country: "DE"}); err == nil {
			t.Errorf("email %q accepted", email)
		}
	}
}
