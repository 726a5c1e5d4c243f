package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/worker"
	"github.com/fanoutdev/fanout/worker/workertest"
)

// awaitStatus polls a batch's status until cond holds, or fails the test.
func awaitStatus(t *testing.T, e *cliEnv, id string, what string, cond func(*client.Progress) bool) *client.Progress {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := e.env.Client.Status(context.Background(), id)
		if err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s: no %s within 30s: %+v, %v", id, what, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ctrl-C while submit --wait, watch or wait waits: exit 130, a last line
// of its own that says how to go on waiting, and the batch goes on.
func TestInterruptedWaitExits130(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	items := writeFile(t, "items.json", `[{"ms": 60000}]`)
	e.must(0, e.run("", "submit", "-a", "sleep", items, "--id", "slow-watch"))
	for _, tc := range []struct {
		name, id string
		args     []string
		resume   string
	}{
		{"submit --wait", "slow-submit", []string{"submit", "-a", "sleep", items, "--wait", "--id", "slow-submit"}, "fanout watch slow-submit"},
		{"watch", "slow-watch", []string{"watch", "slow-watch"}, "fanout watch slow-watch"},
		{"wait", "slow-watch", []string{"wait", "slow-watch"}, "fanout wait slow-watch"},
	} {
		p := startCLI(t, append([]string{"--server", e.url}, tc.args...)...)
		awaitStatus(t, e, tc.id, "item out", func(st *client.Progress) bool { return st.InFlight == 1 })
		if tc.name != "wait" {
			p.await(t, "a progress line", 30*time.Second, func(_, errOut string) bool { return strings.Contains(errOut, "0/1 done") })
		}
		// Connected: the CLI has its signal handler (it connects after).
		p.await(t, "a connection", 30*time.Second, func(string, string) bool { return cliConnected(e) })
		if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		code := p.exitCode(t, 30*time.Second)
		_, errOut := p.output()
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		last := lines[len(lines)-1]
		if code != 130 || last != "fanout: stopped waiting; batch "+tc.id+" goes on: "+tc.resume {
			t.Errorf("%s interrupted: exit %d, want 130 and a last line naming %q; stderr:\n%s", tc.name, code, tc.resume, errOut)
		}
		if st, err := e.env.Client.Status(context.Background(), tc.id); err != nil || st.Status != client.StatusRunning {
			t.Errorf("%s: the batch did not go on: %+v, %v", tc.name, st, err)
		}
	}
}

// cliConnected reports whether a CLI's connection is open on the server.
func cliConnected(e *cliEnv) bool {
	cz, err := e.env.Server.Connz(&server.ConnzOptions{})
	if err != nil {
		return false
	}
	for _, c := range cz.Conns {
		if c.Name == "fanout cli" {
			return true
		}
	}
	return false
}

// registerActivity creates the consumer a worker of activity would, and
// starts no worker: the activity is known and nobody serves it.
func registerActivity(t *testing.T, e *cliEnv, activity string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := messages.MustNames("")
	work := e.env.Stream(ctx, names.WorkStream())
	if _, err := work.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: names.WorkConsumer(activity), FilterSubject: names.WorkActivityFilter(activity),
		AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1,
	}); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A running batch whose activity has queued work and no live worker says
// so in status and while watch waits; a served one does not.
func TestBatchWithoutLiveWorker(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	registerActivity(t, e, "manual")
	e.must(0, e.run(`[{"n":1},{"n":2}]`, "submit", "-a", "manual", "-", "--id", "stranded"))
	const want = "no live worker serves `manual`"
	awaitStatus(t, e, "stranded", "work out", func(st *client.Progress) bool { return st.InFlight == 2 })

	r := e.must(1, e.run("", "status", "stranded"))
	if !strings.Contains(r.out, want) {
		t.Fatalf("status of a batch nobody serves:\n%s", r)
	}
	r = e.must(1, e.run("", "status", "stranded", "--json"))
	if !strings.Contains(r.errOut, want) || !json.Valid([]byte(r.out)) {
		t.Fatalf("status --json of a batch nobody serves:\n%s", r)
	}

	// watch: its progress line carries the warning; interrupted, it exits.
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, []string{"--server", e.url, "watch", "stranded"}, strings.NewReader(""), &out, &errOut)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(errOut.String(), want) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("watch did not warn of the missing worker:\n%s", errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != ExitInterrupted {
		t.Fatalf("watch stopped: exit %d\n%s", code, errOut.String())
	}

	// A served batch gets no warning.
	e.must(0, e.run(`[{"ms":60000}]`, "submit", "-a", "sleep", "-", "--id", "served"))
	awaitStatus(t, e, "served", "work out", func(st *client.Progress) bool { return st.InFlight == 1 })
	if r := e.must(1, e.run("", "status", "served")); strings.Contains(r.out, "no live worker") {
		t.Fatalf("status of a served batch:\n%s", r)
	}
	e.must(0, e.run("", "cancel", "served"))
	e.must(0, e.run("", "cancel", "stranded"))
}

// pause holds new work back: once what was out is counted, nothing more
// runs; resume finishes the batch, every item counted exactly once.
func TestPauseAndResume(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	const total = 12
	items := make([]string, total)
	for i := range items {
		items[i] = `{"ms":100}`
	}
	id := strings.TrimSpace(e.must(0, e.run("["+strings.Join(items, ",")+"]", "submit", "-a", "sleep", "-", "--max-in-flight", "2")).out)

	r := e.must(0, e.run("", "pause", id, "--json"))
	var p client.Progress
	if err := json.Unmarshal([]byte(r.out), &p); err != nil || !p.Paused || p.Status != client.StatusRunning {
		t.Fatalf("pause: %+v, %v\n%s", p, err, r)
	}
	// What was out finishes: nothing in flight, items left.
	st := awaitStatus(t, e, id, "paused batch at rest", func(st *client.Progress) bool { return st.InFlight == 0 && st.Done > 0 })
	if st.Done >= total || !st.Paused {
		t.Fatalf("paused batch: %+v", st)
	}
	// Nothing new goes out while paused: the count stays over ten of the
	// coordinator's checks (every 100 ms), and no work is queued for it.
	held := st.Done
	time.Sleep(time.Second)
	if st = awaitStatus(t, e, id, "status", func(*client.Progress) bool { return true }); st.Done != held || st.InFlight != 0 {
		t.Fatalf("a paused batch went on: done %d -> %d, in flight %d", held, st.Done, st.InFlight)
	}
	r = e.must(1, e.run("", "status", id))
	if !strings.Contains(r.out, "paused") || !strings.Contains(r.out, "fanout resume "+id) {
		t.Fatalf("status of a paused batch:\n%s", r)
	}
	if r = e.must(0, e.run("", "ls")); !strings.Contains(r.out, "running (paused)") {
		t.Fatalf("ls with a paused batch:\n%s", r)
	}

	if r = e.must(0, e.run("", "resume", id, "--json")); strings.Contains(r.out, `"paused"`) {
		t.Fatalf("resume:\n%s", r)
	}
	r = e.must(0, e.run("", "wait", id, "--json"))
	var agg client.Aggregate
	if err := json.Unmarshal([]byte(r.out), &agg); err != nil || agg.Status != client.StatusCompleted || agg.Succeeded != total || agg.Failed != 0 || len(agg.Results) != total {
		t.Fatalf("resumed batch: %+v, %v", agg, err)
	}
	// Exactly once: one stored result per item, each with its first attempt.
	page, err := e.env.Client.ResultsPage(context.Background(), id, client.ResultsQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, r := range page.Results {
		if seen[r.Item] || r.Attempts != 1 {
			t.Fatalf("item %d: a second result, or attempt %d", r.Item, r.Attempts)
		}
		seen[r.Item] = true
	}
	if len(seen) != total || !page.End {
		t.Fatalf("%d results stored for %d items", len(seen), total)
	}
	// An ended batch cannot be paused.
	if r := e.run("", "pause", id); r.code != ExitUsage || !strings.Contains(r.errOut, "already ended") {
		t.Fatalf("pause of an ended batch: %s", r)
	}
}

// fanout wait: exit 0 for a batch whose items all succeeded, 1 when one
// failed, 4 when --timeout passes first, 2 for no such batch.
func TestWaitExitCodes(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	e.must(0, e.run(`[{"ms":1}]`, "submit", "-a", "sleep", "-", "--id", "good"))
	e.must(0, e.run(`[{"ms":1,"fail":"no"}]`, "submit", "-a", "sleep", "-", "--id", "bad", "--max-attempts", "1"))
	e.must(0, e.run(`[{"ms":60000}]`, "submit", "-a", "sleep", "-", "--id", "long"))
	if r := e.must(0, e.run("", "wait", "good")); !strings.Contains(r.out, "completed") {
		t.Fatalf("wait good:\n%s", r)
	}
	e.must(1, e.run("", "wait", "bad"))
	if r := e.must(ExitStillRunning, e.run("", "wait", "long", "--timeout", "300ms")); !strings.Contains(r.errOut, "still running") {
		t.Fatalf("wait --timeout:\n%s", r)
	}
	e.must(2, e.run("", "wait", "nope"))
	e.must(0, e.run("", "cancel", "long"))
}

// The progress bar's rate and ETA are the coordinator's, from the batch's
// own start; the finished bar and the summaries show the same rate.
func TestProgressRateIsTheBatchs(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	v := newProgressView(&out, 1000, "sha256", true)
	// A bar opened on a batch nearly done: the rate is the batch's.
	v.update(client.Progress{BatchID: "b", Total: 1000, Done: 990, Percent: 99, RatePerSec: 633.4, ETAMS: 15_800})
	agg := &client.Aggregate{BatchID: "b", Activity: "sha256", Status: client.StatusCompleted, Total: 1000, Succeeded: 1000, DurationMS: 1579}
	v.finish(agg)
	bar := out.String()
	if !strings.Contains(bar, "633 items/s") || !strings.Contains(bar, "eta 16s") {
		t.Fatalf("bar while running: %q", bar)
	}
	want := rateText(aggregateRate(agg))
	if want != "633 items/s" {
		t.Fatalf("aggregate rate %s, want 633 items/s", want)
	}
	tail := bar[strings.LastIndex(bar, "\r")+1:]
	if !strings.Contains(tail, want) {
		t.Fatalf("finished bar %q does not show the batch's rate %s", tail, want)
	}
	var summary bytes.Buffer
	printAggregate(&summary, agg)
	printSummary(&summary, agg)
	if strings.Count(summary.String(), want) != 2 {
		t.Fatalf("summaries:\n%s\nwant the rate %s in each", summary.String(), want)
	}
}

// Unknown flags suggest the closest; completion offers batch ids.
func TestFlagSuggestionAndBatchCompletion(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	if r := e.run("[1]", "submit", "-a", "echo", "-", "--max-inflight", "3"); r.code != ExitUsage || !strings.Contains(r.errOut, "did you mean --max-in-flight?") {
		t.Fatalf("unknown flag: %s", r)
	}
	if r := e.run("", "ls", "--stauts", "failed"); r.code != ExitUsage || !strings.Contains(r.errOut, "did you mean --status?") {
		t.Fatalf("unknown flag: %s", r)
	}
	e.must(0, e.run("[1]", "submit", "-a", "echo", "-", "--id", "done-batch", "--wait", "-q"))
	e.must(0, e.run(`[{"ms":60000}]`, "submit", "-a", "sleep", "-", "--id", "running-batch"))
	for _, cmd := range []string{"status", "results"} {
		r := e.run("", "__complete", cmd, "")
		if !strings.Contains(r.out, "done-batch\techo, completed") || !strings.Contains(r.out, "running-batch\tsleep, running") {
			t.Errorf("completion of %s:\n%s", cmd, r)
		}
	}
	for _, cmd := range []string{"watch", "cancel", "pause"} {
		r := e.run("", "__complete", cmd, "")
		if strings.Contains(r.out, "done-batch") || !strings.Contains(r.out, "running-batch") {
			t.Errorf("completion of %s (running batches):\n%s", cmd, r)
		}
	}
	e.must(0, e.run("", "cancel", "running-batch"))
}

// ls filters by status and activity and shows each batch's duration.
func TestLsFilters(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	e.must(0, e.run("[1]", "submit", "-a", "echo", "-", "--id", "e1", "--wait", "-q"))
	e.must(1, e.run(`[{"ms":1,"fail":"x"}]`, "submit", "-a", "sleep", "-", "--id", "s1", "--max-attempts", "1", "--failure-policy", "fail_fast", "--wait", "-q"))
	r := e.must(0, e.run("", "ls", "--activity", "sleep"))
	if !strings.Contains(r.out, "DURATION") || !strings.Contains(r.out, "s1 ") || strings.Contains(r.out, "e1 ") {
		t.Fatalf("ls --activity sleep:\n%s", r)
	}
	r = e.must(0, e.run("", "ls", "--status", "completed", "--json"))
	var bs []client.Progress
	if err := json.Unmarshal([]byte(r.out), &bs); err != nil || len(bs) != 1 || bs[0].BatchID != "e1" || bs[0].FinishedAt.IsZero() {
		t.Fatalf("ls --status completed: %+v, %v", bs, err)
	}
	if r := e.run("", "ls", "--status", "done"); r.code != ExitUsage || !strings.Contains(r.errOut, "use running, completed") {
		t.Fatalf("ls --status done: %s", r)
	}
}

// redrive says which items of the old batch run again, and its progress is
// labelled with the activity, as submit's is.
func TestRedriveNamesTheOriginalItems(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	e.must(1, e.run(`[{"ms":1},{"ms":1,"fail":"x"},{"ms":1},{"ms":1,"fail":"y"}]`, "submit", "-a", "sleep", "-", "--id", "orig", "--max-attempts", "1", "--wait", "-q"))
	r := e.must(1, e.run("", "redrive", "orig", "--id", "again", "--wait"))
	if !strings.Contains(r.errOut, "batch again runs items 1, 3 of batch orig again") || !strings.Contains(r.errOut, "batch again: 2 sleep items") {
		t.Fatalf("redrive:\n%s", r)
	}
	if !strings.Contains(r.out, "item 0 (item 1 of orig): x") || !strings.Contains(r.out, "orig (items 1, 3)") {
		t.Fatalf("redrive's aggregate:\n%s", r)
	}
}

// fanout conformance: a report and exit 0 for a worker that keeps the
// protocol; exit 2, saying what to do, when no worker serves the activity.
func TestConformanceCommand(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, func(w *worker.Worker) { w.Handle("conformance", workertest.Conformance()) })
	r := e.run("", "conformance", "--activity", "conformance", "--case", "plain", "--case", "unpack")
	if r.code != 0 || !strings.Contains(r.out, "PASS  plain") || !strings.Contains(r.out, "PASS  unpack") || !strings.Contains(r.out, "2 passed, 0 failed") {
		t.Fatalf("conformance of the Go worker: %s", r)
	}
	if r := e.run("", "conformance", "--activity", "nobody"); r.code != ExitUsage || !strings.Contains(r.errOut, "start the worker under test") {
		t.Fatalf("conformance without a worker: %s", r)
	}
	if r := e.run("", "conformance", "--activity", "conformance", "--case", "nope"); r.code != ExitUsage || !strings.Contains(r.errOut, "no such case") {
		t.Fatalf("conformance --case nope: %s", r)
	}
}
