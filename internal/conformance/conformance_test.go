package conformance_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/internal/conformance"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/worker"
	"github.com/fanoutdev/fanout/worker/workertest"
)

func check(t *testing.T, env *testenv.Env, activity string, caseTimeout time.Duration) *conformance.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := conformance.Run(ctx, conformance.Config{Conn: env.Conn, Activity: activity, CaseTimeout: caseTimeout})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Write(&out)
	t.Logf("conformance report:\n%s", out.String())
	return rep
}

// The project's Go worker (the SDK) keeps the worker protocol: every case
// passes.
func TestGoWorkerConforms(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Worker(func(w *worker.Worker) { w.Handle("conformance", workertest.Conformance()) },
		worker.WithName("go-worker"), worker.WithAckWait(time.Second))
	rep := check(t, env, "conformance", 20*time.Second)
	if rep.Failed() > 0 || len(rep.Outcomes) != len(conformance.CaseNames()) {
		t.Fatalf("the Go worker failed %d of %d cases", rep.Failed(), len(rep.Outcomes))
	}
}

// buildExample builds a program of examples/ and returns its path.
func buildExample(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", bin, "./examples/"+name)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/%s: %v\n%s", name, err, out)
	}
	return bin
}

// startWorker runs a worker process against env until the test ends, and
// waits until it has registered its activity.
func startWorker(t *testing.T, env *testenv.Env, bin string, args ...string) {
	t.Helper()
	var logs bytes.Buffer
	cmd := exec.Command(bin, append([]string{"-server", env.Server.ClientURL()}, args...)...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", logs.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		qs, err := env.Client.Activities(ctx)
		if err == nil && len(qs) > 0 && qs[0].WaitingPulls > 0 {
			return
		}
		select {
		case <-done:
			t.Fatalf("the worker exited: %s\n%s", cmd.ProcessState, logs.String())
		case <-ctx.Done():
			t.Fatalf("the worker did not start pulling work within 30s:\n%s", logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// The worker written without the SDK, with nats.go alone (the reference
// for other languages), keeps the protocol too.
func TestRawWorkerConforms(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil) // a deployment: its streams exist
	startWorker(t, env, buildExample(t, "rawworker"), "-activity", "conformance", "-ack-wait", "1s")
	rep := check(t, env, "conformance", 20*time.Second)
	if rep.Failed() > 0 || len(rep.Outcomes) != len(conformance.CaseNames()) {
		t.Fatalf("the raw worker failed %d of %d cases", rep.Failed(), len(rep.Outcomes))
	}
}

// A worker that breaks the protocol fails the check, and the report says
// where and why: this one reads the attempt from the delivery count alone,
// does not heartbeat, runs packed messages as their first item, negatively
// acks a result refused as a duplicate, and acks unreadable messages.
func TestBrokenWorkerFails(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	startBrokenWorker(t, env, "conformance")
	rep := check(t, env, "conformance", 5*time.Second) // what never comes fails sooner
	failed := map[string]string{}
	for _, o := range rep.Outcomes {
		if !o.Passed {
			failed[o.Case] = o.Problem
		}
	}
	for name, want := range map[string]string{
		"attempts":  "the handler ran on attempt 1, want 2",
		"give-up":   "item 0 succeeded",
		"packed":    "no result of item 6",
		"heartbeat": "times while it ran",
		"duplicate": "not acked",
		"unpack":    "see docs/protocol.md#auto-packing",
	} {
		if !strings.Contains(failed[name], want) {
			t.Errorf("case %s: problem %q, want it to contain %q", name, failed[name], want)
		}
	}
	if _, ok := failed["plain"]; ok {
		t.Errorf("the broken worker handles plain items; the check failed it: %s", failed["plain"])
	}
	var out bytes.Buffer
	rep.Write(&out)
	if !strings.Contains(out.String(), "FAIL  attempts") || !strings.Contains(out.String(), "PASS  plain") ||
		!strings.HasSuffix(out.String(), "failed\n") {
		t.Errorf("report:\n%s", out.String())
	}
}
