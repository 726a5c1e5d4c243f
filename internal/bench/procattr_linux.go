package bench

import (
	"os/exec"
	"syscall"
)

// setChildAttrs makes the kernel kill the coordinator process if the bench
// dies first.
func setChildAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
