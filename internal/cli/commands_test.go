package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
)

// result is one run of the CLI.
type result struct {
	code        int
	out, errOut string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.out, r.errOut)
}

// cliEnv is a deployment and the CLI pointed at it.
type cliEnv struct {
	t   *testing.T
	env *testenv.Env
	url string
}

func newCLIEnv(t *testing.T, register func(*worker.Worker)) *cliEnv {
	t.Helper()
	env := testenv.Server(t)
	env.Coordinator(nil)
	env.Worker(register, worker.WithName("cli-worker"))
	return &cliEnv{t: t, env: env, url: env.Server.ClientURL()}
}

// run runs the CLI with stdin, against the deployment.
func (e *cliEnv) run(stdin string, args ...string) result {
	e.t.Helper()
	return runCLI(e.t, stdin, append([]string{"--server", e.url}, args...)...)
}

func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := execute(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return result{code: code, out: out.String(), errOut: errOut.String()}
}

func (e *cliEnv) must(code int, r result) result {
	e.t.Helper()
	if r.code != code {
		e.t.Fatalf("want exit %d, got %s", code, r)
	}
	return r
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// submit --wait reads a JSON array file, shows plain progress lines off a
// terminal and prints the aggregate as a table; exit 0 when every item
// succeeded.
func TestSubmitWait(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	items := writeFile(t, "items.json", `[
  {"data": "a"},
  {"data": "b"}
]`)
	r := e.must(0, e.run("", "submit", "--activity", "sha256", items, "--wait"))
	for _, want := range []string{"status     completed", "total      2", "succeeded  2", "failed     0"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.out)
		}
	}
	if !strings.Contains(r.errOut, "2/2 done (100.0%)") {
		t.Errorf("stderr lacks the last progress line:\n%s", r.errOut)
	}

	// --json: the aggregate, results included, and only it on stdout.
	r = e.must(0, e.run(`["x"]`, "submit", "-a", "echo", "-", "-w", "--json", "-q"))
	var agg client.Aggregate
	if err := json.Unmarshal([]byte(r.out), &agg); err != nil {
		t.Fatalf("stdout is not an aggregate: %v\n%s", err, r.out)
	}
	if agg.Status != client.StatusCompleted || len(agg.Results) != 1 || string(agg.Results[0].Output) != `"x"` {
		t.Fatalf("aggregate %+v", agg)
	}
	if r.errOut != "" {
		t.Fatalf("--quiet wrote to stderr: %s", r.errOut)
	}
}

// Items from standard input as JSON Lines, options as flags; watch,
// status, results and results --failed; exit 1 when an item failed.
func TestSubmitJSONLinesThenRead(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	stdin := "{\"ms\":1}\n\n{\"ms\":1,\"fail\":\"disk full\"}\n{\"ms\":1}\n"
	r := e.must(0, e.run(stdin, "submit", "-a", "sleep", "-", "--max-attempts", "1", "--max-in-flight", "2",
		"--backoff", "10ms,20ms", "--item-timeout", "30s", "--timeout", "1h", "--tolerated-failures", "5", "--id", "jsonl-batch"))
	if r.out != "jsonl-batch\n" {
		t.Fatalf("submit without --wait printed %q, want the batch id", r.out)
	}

	r = e.must(1, e.run("", "watch", "jsonl-batch"))
	if !strings.Contains(r.out, "failed     1") || !strings.Contains(r.out, "item 1: disk full") || !strings.Contains(r.errOut, "jsonl-batch completed: 1 of 3 items failed") {
		t.Fatalf("watch:\n%s", r)
	}
	r = e.must(1, e.run("", "status", "jsonl-batch", "--json"))
	var p client.Progress
	if err := json.Unmarshal([]byte(r.out), &p); err != nil || p.Done != 3 || p.Failed != 1 || p.Options == nil ||
		p.Options.MaxInFlight != 2 || p.Options.MaxAttempts != 1 || len(p.Options.Backoff) != 2 || p.Options.ToleratedFailures == nil || *p.Options.ToleratedFailures != 5 {
		t.Fatalf("status --json: %+v, %v\n%s", p, err, r.out)
	}
	r = e.must(1, e.run("", "status", "jsonl-batch"))
	if !strings.Contains(r.out, "done       3/3 (100.0%)") || !strings.Contains(r.out, "max_in_flight=2 items_per_message=auto max_attempts=1 backoff=10ms,20ms item_timeout=30s timeout=1h0m0s") {
		t.Fatalf("status:\n%s", r)
	}

	r = e.must(1, e.run("", "results", "jsonl-batch"))
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	want := []string{`{"item":0,"ok":true,"output":{"slept_ms":1}}`, `{"item":1,"ok":false,"error":"disk full"}`, `{"item":2,"ok":true,"output":{"slept_ms":1}}`}
	if len(lines) != len(want) {
		t.Fatalf("results:\n%s", r)
	}
	for i, line := range lines {
		// Each line: the aggregate's result, then the stored attempt's details.
		var got struct {
			client.ItemResult
			Attempts   int      `json:"attempts"`
			Worker     string   `json:"worker"`
			DurationMS *float64 `json:"duration_ms"`
		}
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %d: %v\n%s", i, err, line)
		}
		base, _ := json.Marshal(got.ItemResult)
		if string(base) != want[i] || got.Attempts != 1 || got.Worker != "cli-worker" || got.DurationMS == nil || *got.DurationMS < 1 {
			t.Errorf("results line %d: %s; want %s with attempts 1, worker cli-worker and a duration of at least 1 ms", i, line, want[i])
		}
	}
	r = e.must(1, e.run("", "results", "jsonl-batch", "--failed"))
	if !strings.HasPrefix(strings.TrimSpace(r.out), strings.TrimSuffix(want[1], "}")+`,"attempts":1,"worker":"cli-worker","duration_ms":`) || strings.Count(r.out, "\n") != 1 {
		t.Fatalf("results --failed:\n%s", r)
	}

	// The same id again is the same batch.
	r = e.must(0, e.run("[1]", "submit", "-a", "sleep", "-", "--id", "jsonl-batch", "--json"))
	if !strings.Contains(r.out, `"existing": true`) || !strings.Contains(r.errOut, "already existed") {
		t.Fatalf("second submit of an id:\n%s", r)
	}
}

// A batch with a source step (the items come from an activity) and a
// reduce step; the progress view learns the total late.
func TestSubmitSourceAndReduce(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, func(w *worker.Worker) {
		worker.Handle(w, "count", func(_ context.Context, in struct{ N int }) ([]map[string]string, error) {
			out := make([]map[string]string, in.N)
			for i := range out {
				out[i] = map[string]string{"data": fmt.Sprint(i)}
			}
			return out, nil
		})
	})
	r := e.must(0, e.run("", "submit", "-a", "sha256", "--source", "count", "--source-input", `{"n":5}`, "--reduce", "echo", "--wait"))
	if !strings.Contains(r.out, "total      5") || !strings.Contains(r.out, "output     {") {
		t.Fatalf("source and reduce:\n%s", r)
	}
	e.must(2, e.run("", "submit", "-a", "sha256", "--source", "count", "--source-input", `{n:5}`))
	e.must(2, e.run("[1]", "submit", "-a", "sha256", "-", "--source", "count"))
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	bare := testenv.Server(t) // NATS without a coordinator
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "nats://" + l.Addr().String()
	l.Close() // nothing listens there now

	for _, tc := range []struct {
		name  string
		code  int
		stdin string
		args  []string
		msg   string
	}{
		{"unknown activity", 2, "[1]", []string{"submit", "-a", "nope", "-"}, "unknown_activity"},
		{"no activity", 2, "[1]", []string{"submit", "-"}, "--activity is required"},
		{"no items", 2, "", []string{"submit", "-a", "echo"}, "give a file of items"},
		{"empty input", 2, "  \n", []string{"submit", "-a", "echo", "-"}, "the input is empty"},
		{"bad JSON Lines", 2, "{\"a\":1}\n{oops\n", []string{"submit", "-a", "echo", "-"}, "line 2: not a JSON value"},
		{"bad array", 2, "[1,\n2", []string{"submit", "-a", "echo", "-"}, "not a JSON array"},
		{"missing file", 2, "", []string{"submit", "-a", "echo", "/no/such/items.json"}, "no such file"},
		{"bad option", 2, "[1]", []string{"submit", "-a", "echo", "-", "--failure-policy", "sometimes"}, "invalid_request: options.failure_policy"},
		{"bad backoff", 2, "[1]", []string{"submit", "-a", "echo", "-", "--backoff", "1s,soon"}, "give durations such as"},
		{"bad flag value", 2, "[1]", []string{"submit", "-a", "echo", "-", "--item-timeout", "soon"}, "invalid argument"},
		{"unknown flag", 2, "", []string{"status", "x", "--frobnicate"}, "unknown flag"},
		{"no batch id", 2, "", []string{"status"}, "give one batch id"},
		{"no such batch", 2, "", []string{"status", "nope"}, "not_found"},
		{"bad batch id", 2, "", []string{"watch", "not an id"}, "invalid_request"},
		{"nothing to update", 2, "", []string{"update", "x"}, "nothing to change"},
		{"redrive of no batch", 2, "", []string{"redrive", "nope"}, "not_found"},
	} {
		r := e.run(tc.stdin, tc.args...)
		if r.code != tc.code || !strings.Contains(r.errOut, tc.msg) {
			t.Errorf("%s: want exit %d and %q on stderr, got %s", tc.name, tc.code, tc.msg, r)
		}
	}
	if r := runCLI(t, "", "--server", closed, "status", "x"); r.code != ExitConnect || !strings.Contains(r.errOut, "connect to NATS") {
		t.Errorf("no server: %s", r)
	}
	if r := runCLI(t, "[1]", "--server", bare.Server.ClientURL(), "submit", "-a", "echo", "-"); r.code != ExitConnect || !strings.Contains(r.errOut, "no fanout coordinator") {
		t.Errorf("no coordinator: %s", r)
	}
	if r := runCLI(t, "", "--server", bare.Server.ClientURL(), "--prefix", "a.b", "ls"); r.code != ExitUsage {
		t.Errorf("bad prefix: %s", r)
	}
}

// update, cancel and redrive a batch while it runs.
func TestLiveControl(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	items := make([]string, 20)
	for i := range items {
		items[i] = `{"ms":100}`
	}
	id := strings.TrimSpace(e.must(0, e.run("["+strings.Join(items, ",")+"]", "submit", "-a", "sleep", "-", "--max-in-flight", "1")).out)

	r := e.must(0, e.run("", "update", id, "--max-in-flight", "2", "--failure-policy", "fail_fast"))
	if !strings.Contains(r.out, "max_in_flight=2") || !strings.Contains(r.out, "failure_policy=fail_fast") {
		t.Fatalf("update:\n%s", r)
	}
	r = e.must(0, e.run("", "cancel", id, "--json"))
	var p client.Progress
	if err := json.Unmarshal([]byte(r.out), &p); err != nil || p.Status != client.StatusCanceled {
		t.Fatalf("cancel: %+v, %v\n%s", p, err, r)
	}
	r = e.must(1, e.run("", "results", id, "--failed"))
	if n := strings.Count(r.out, `"not_run":true`); n == 0 || n != strings.Count(r.out, "\n") {
		t.Fatalf("results --failed of a canceled batch:\n%s", r)
	}

	r = e.must(0, e.run("", "redrive", id, "--id", id+"-again", "--wait", "--json"))
	var agg client.Aggregate
	if err := json.Unmarshal([]byte(r.out), &agg); err != nil || agg.BatchID != id+"-again" || agg.Status != client.StatusCompleted ||
		agg.RedriveOf == nil || agg.RedriveOf.BatchID != id || agg.Total != len(agg.RedriveOf.Items) {
		t.Fatalf("redrive: %+v, %v\n%s", agg, err, r)
	}
	r = e.must(0, e.run("", "redrive", id, "--id", id+"-again"))
	if r.out != id+"-again\n" {
		t.Fatalf("redrive again printed %q", r.out)
	}
}

func TestLs(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	e.must(0, e.run("", "ls"))
	e.must(0, e.run("[1]", "submit", "-a", "echo", "-", "--id", "first", "--wait", "-q"))
	e.must(0, e.run("[1,2]", "submit", "-a", "echo", "-", "--id", "second", "--wait", "-q"))
	r := e.must(0, e.run("", "ls"))
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "DONE/TOTAL") ||
		!strings.HasPrefix(lines[1], "second ") || !strings.Contains(lines[1], "completed  2/2") || !strings.HasPrefix(lines[2], "first ") {
		t.Fatalf("ls:\n%s", r)
	}
	r = e.must(0, e.run("", "ls", "--limit", "1", "--json"))
	var bs []client.Progress
	if err := json.Unmarshal([]byte(r.out), &bs); err != nil || len(bs) != 1 || bs[0].BatchID != "second" || bs[0].Total != 2 {
		t.Fatalf("ls --limit 1 --json: %+v, %v", bs, err)
	}
}

func TestWorkers(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	r := e.must(0, e.run("", "workers"))
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME ") || !strings.HasPrefix(lines[1], "cli-worker ") || !strings.Contains(lines[1], "echo,sha256,sleep") || !strings.Contains(lines[1], "0/16") {
		t.Fatalf("workers:\n%s", r)
	}
	r = e.must(0, e.run("", "workers", "--activity", "sha256", "--json"))
	var ws []client.WorkerPresence
	if err := json.Unmarshal([]byte(r.out), &ws); err != nil || len(ws) != 1 || ws[0].Name != "cli-worker" {
		t.Fatalf("workers --json: %+v, %v", ws, err)
	}
	r = e.must(0, e.run("", "workers", "--activity", "resize", "--json"))
	if strings.TrimSpace(r.out) != "[]" {
		t.Fatalf("workers of an activity nobody serves: %s", r)
	}
}

// Every command has help with examples, and shell completion works: the
// scripts, flag values, and activities from the live workers.
func TestHelpAndCompletion(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, nil)
	for _, cmd := range []string{"submit", "watch", "status", "results", "cancel", "update", "redrive", "ls", "workers", "dev", "demo"} {
		r := runCLI(t, "", cmd, "--help")
		if r.code != 0 || !strings.Contains(r.out, "Examples:") || !strings.Contains(r.out, "fanout "+cmd) || !strings.Contains(r.out, "--server") {
			t.Errorf("%s --help:\n%s", cmd, r)
		}
	}
	r := runCLI(t, "", "--help")
	for _, cmd := range []string{"submit", "watch", "status", "results", "cancel", "update", "redrive", "ls", "workers", "completion", "Exit codes"} {
		if !strings.Contains(r.out, cmd) {
			t.Errorf("fanout --help does not mention %s:\n%s", cmd, r.out)
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		if r := runCLI(t, "", "completion", shell); r.code != 0 || !strings.Contains(r.out, "fanout") {
			t.Errorf("completion %s: %s", shell, r)
		}
	}
	r = runCLI(t, "", "__complete", "submit", "--failure-policy", "")
	if !strings.Contains(r.out, "continue\nfail_fast\n") {
		t.Errorf("completion of --failure-policy:\n%s", r)
	}
	r = e.run("", "__complete", "submit", "--activity", "")
	if !strings.Contains(r.out, "echo\nsha256\nsleep\n") {
		t.Errorf("completion of --activity:\n%s", r)
	}
	r = runCLI(t, "", "__complete", "status", "")
	if !strings.Contains(r.out, ":4") { // no file completion
		t.Errorf("completion of a batch id:\n%s", r)
	}
}

func TestReadItems(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, format string
		want       []string
		err        string
	}{
		{in: `[1, {"a": 2}, "x"]`, format: "auto", want: []string{`1`, `{"a": 2}`, `"x"`}},
		{in: "[\n  1,\n  2\n]\n", format: "auto", want: []string{"1", "2"}},
		{in: "{\"a\":1}\r\n\n  {\"a\":2}  \n", format: "auto", want: []string{`{"a":1}`, `{"a":2}`}},
		{in: "[1,2]\n[3]\n", format: "auto", want: []string{"[1,2]", "[3]"}},
		{in: "[1,2]", format: "jsonl", want: []string{"[1,2]"}},
		{in: "[1,2]", format: "json", want: []string{"1", "2"}},
		{in: `{"a":1}`, format: "json", err: "not a JSON array"},
		{in: "[1] [2]", format: "json", err: "more after the array"},
		{in: "[]", format: "auto", err: "the array is empty"},
		{in: "[1,\n2", format: "auto", err: "not a JSON array"},
		{in: "1\nnope\n", format: "auto", err: "line 2"},
		{in: "1", format: "yaml", err: "--format"},
	} {
		items, err := readItems(strings.NewReader(tc.in), tc.format)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q as %s: %v, want an error with %q", tc.in, tc.format, err, tc.err)
			}
			continue
		}
		got := make([]string, len(items))
		for i, it := range items {
			got[i] = string(it)
		}
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%q as %s: %q, %v; want %q", tc.in, tc.format, got, err, tc.want)
		}
	}
}
