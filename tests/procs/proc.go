package procs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a running (or exited) child process of the test.
type Proc struct {
	// Name identifies the process in the test log (and is the fanout
	// --name of coordinators and workers).
	Name string
	t    testing.TB
	cmd  *exec.Cmd
	out  *Output

	exited  chan struct{}
	waitErr error // set before exited is closed

	mu       sync.Mutex
	signaled bool // the test signaled it: an exit is expected
}

// ProcSpec says what to run.
type ProcSpec struct {
	Name string
	Path string
	Args []string
	// Env is added to the test's environment, from which every NATS_* and
	// FANOUT_* variable is removed first.
	Env []string
}

// StartProc starts a process and registers its cleanup: SIGKILL if still
// running, then checks (unexpected exit, panic, data race) and, when the
// test failed, its output in the test log.
func StartProc(t testing.TB, spec ProcSpec) *Proc {
	t.Helper()
	p := &Proc{Name: spec.Name, t: t, out: newOutput(), exited: make(chan struct{})}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(cleanEnv(), spec.Env...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", spec.Name, err)
	}
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		p.out.end()
		close(p.exited)
	}()
	t.Cleanup(p.cleanup)
	return p
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NATS_") || strings.HasPrefix(kv, "FANOUT_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (p *Proc) cleanup() {
	p.mu.Lock()
	expected := p.signaled
	p.mu.Unlock()
	select {
	case <-p.exited:
		if !expected {
			p.t.Errorf("%s (pid %d) exited on its own during the test: %s", p.Name, p.PID(), p.exitDescription())
		}
	default:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	out := p.out.String()
	switch {
	case strings.Contains(out, "WARNING: DATA RACE"):
		p.t.Errorf("%s (pid %d) reported a data race", p.Name, p.PID())
	case strings.Contains(out, "\npanic: ") || strings.HasPrefix(out, "panic: ") || strings.Contains(out, "fatal error: "):
		p.t.Errorf("%s (pid %d) panicked", p.Name, p.PID())
	}
	if p.t.Failed() {
		p.t.Logf("---- output of %s (pid %d, %s) ----\n%s\n---- end of %s ----", p.Name, p.PID(), p.exitDescription(), out, p.Name)
	}
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Output is the process's output, stdout and stderr interleaved.
func (p *Proc) Output() *Output { return p.out }

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// ExpectExit tells the cleanup that the process may exit on its own (a
// binary started to fail, say) without failing the test.
func (p *Proc) ExpectExit() {
	p.mu.Lock()
	p.signaled = true
	p.mu.Unlock()
}

// Signal sends sig and marks the exit that may follow as expected.
func (p *Proc) Signal(sig os.Signal) error {
	p.mu.Lock()
	p.signaled = true
	p.mu.Unlock()
	return p.cmd.Process.Signal(sig)
}

// Term sends SIGTERM (graceful shutdown) without waiting.
func (p *Proc) Term() {
	p.t.Helper()
	if err := p.Signal(syscall.SIGTERM); err != nil && p.Running() {
		p.t.Fatalf("SIGTERM %s: %v", p.Name, err)
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *Proc) Kill() {
	p.t.Helper()
	if err := p.Signal(syscall.SIGKILL); err != nil && p.Running() {
		p.t.Fatalf("SIGKILL %s: %v", p.Name, err)
	}
	<-p.exited
}

// Wait waits for the process to exit and returns its exit code: -1 when a
// signal ended it. It returns ctx's error if ctx ends first.
func (p *Proc) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("%s (pid %d) still running: %w", p.Name, p.PID(), ctx.Err())
	}
}

// Stop sends SIGTERM and waits for the exit, up to timeout; it returns the
// exit code. The test fails if the process does not exit in time (it is
// then killed by the cleanup).
func (p *Proc) Stop(timeout time.Duration) int {
	p.t.Helper()
	p.Term()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		p.t.Fatalf("stop: %v", err)
	}
	return code
}

// ExitCode is the exit code once exited (-1 when ended by a signal), or an
// error while it runs.
func (p *Proc) ExitCode() (int, error) {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), nil
	default:
		return 0, errors.New(p.Name + " is still running")
	}
}

func (p *Proc) exitDescription() string {
	select {
	case <-p.exited:
		if p.waitErr == nil {
			return "exit status 0"
		}
		return p.waitErr.Error()
	default:
		return "running"
	}
}

// AwaitLog waits for a JSON log line with message msg (and fields kv,
// pairs of key and value) anywhere in the output, failing the test after
// timeout or if the process exits first.
func (p *Proc) AwaitLog(timeout time.Duration, msg string, kv ...string) LogLine {
	p.t.Helper()
	return p.AwaitLogFrom(timeout, 0, msg, kv...)
}

// AwaitLogFrom is AwaitLog for lines at index >= from (see Output.Len).
func (p *Proc) AwaitLogFrom(timeout time.Duration, from int, msg string, kv ...string) LogLine {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l, err := p.out.AwaitLog(ctx, from, msg, kv...)
	if err != nil {
		p.t.Fatalf("%s: waiting for log %q: %v (%s)", p.Name, msg, err, p.exitDescription())
	}
	return l
}
