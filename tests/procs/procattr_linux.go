package procs

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill a child when the test binary dies
// without running its cleanups (a panic, a -timeout, a SIGKILL), so that no
// nats-server outlives its test run.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
