package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary runs the CLI's Main when this variable is set, so that
// tests can run the CLI as a process and send it signals.
const mainEnv = "FANOUT_CLI_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		Main()
	}
	os.Exit(m.Run())
}

// cliProcess is the CLI running as a process of its own.
type cliProcess struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	stdout bytes.Buffer
	done   chan struct{}
}

func startCLI(t *testing.T, args ...string) *cliProcess {
	t.Helper()
	p := &cliProcess{cmd: exec.Command(os.Args[0], args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), mainEnv+"=1")
	p.cmd.Stdout = writerFunc(func(b []byte) { p.mu.Lock(); p.stdout.Write(b); p.mu.Unlock() })
	p.cmd.Stderr = writerFunc(func(b []byte) { p.mu.Lock(); p.stderr.Write(b); p.mu.Unlock() })
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }

func (p *cliProcess) output() (stdout, stderr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String(), p.stderr.String()
}

// await polls until cond holds on the process's output, or fails the test.
func (p *cliProcess) await(t *testing.T, what string, within time.Duration, cond func(stdout, stderr string) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, errOut := p.output()
		if cond(out, errOut) {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("the CLI exited (%v) before %s:\nstdout:\n%s\nstderr:\n%s", p.cmd.ProcessState, what, out, errOut)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s:\nstdout:\n%s\nstderr:\n%s", what, within, out, errOut)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exitCode waits for the process to end and returns its exit code.
func (p *cliProcess) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		out, errOut := p.output()
		t.Fatalf("the CLI did not exit within %s:\nstdout:\n%s\nstderr:\n%s", within, out, errOut)
		return -1
	}
}

// fanout dev on a port that is taken fails at once, saying so and naming
// --port, however long the embedded server would wait.
func TestDevPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	start := time.Now()
	r := runCLI(t, "", "dev", "--port", port, "--data", t.TempDir(), "--ui", "off")
	took := time.Since(start)
	t.Logf("a taken port failed in %s", took)
	if r.code != ExitConnect || !strings.Contains(r.errOut, "address in use") || !strings.Contains(r.errOut, "--port") {
		t.Fatalf("dev on a taken port: %s", r)
	}
	if took > 2*time.Second {
		t.Fatalf("dev on a taken port took %s to fail, want under 2s", took)
	}
}

// fanout dev stops on a signal: before it is up (exit 130, at once) and
// once it is ready (exit 0).
func TestDevStopsOnSignal(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(signalled{os.Interrupt})
	var out, errOut bytes.Buffer
	start := time.Now()
	code := execute(ctx, []string{"dev", "--port", "0", "--data", t.TempDir(), "--ui", "off"}, strings.NewReader(""), &out, &errOut)
	if code != 130 || time.Since(start) > 5*time.Second {
		t.Fatalf("dev interrupted while starting: exit %d after %s\n%s%s", code, time.Since(start), out.String(), errOut.String())
	}

	p := startCLI(t, "dev", "--port", "0", "--data", t.TempDir(), "--ui", "off")
	p.await(t, "the ready line", time.Minute, func(out, _ string) bool { return strings.Contains(out, "fanout dev: ready at nats://") })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.exitCode(t, 45*time.Second); code != 0 {
		out, errOut := p.output()
		t.Fatalf("dev stopped by SIGTERM: exit %d\n%s%s", code, out, errOut)
	}
}
