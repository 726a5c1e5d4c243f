//go:build !linux

package procs

import "os/exec"

func setProcAttr(*exec.Cmd) {}
