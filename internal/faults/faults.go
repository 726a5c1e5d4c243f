// Package faults lets the fault-injection tests make the real worker
// binary fail at precise moments. It is switched on only by environment
// variables that production deployments never set:
//
//	FANOUT_FAULT_EXIT_AFTER_RESULT=N  the process exits (code 97) right after
//	                                  its Nth result is published, before the
//	                                  ack: "published, then died"
//	FANOUT_FAULT_ACTIVITIES=1         registers the activity "crash", whose
//	                                  handler exits the process (code 98),
//	                                  and "poison", which does so only for
//	                                  the input {"poison": true} on its
//	                                  first attempt
package faults

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"sync/atomic"
)

// ExitAfterResultCode and CrashCode are the exit codes of the two faults.
const (
	ExitAfterResultCode = 97
	CrashCode           = 98
)

var (
	exitAfter int64 = -1
	published atomic.Int64
)

// Load reads the fault variables. Call it once from main.
func Load() {
	if n, err := strconv.ParseInt(os.Getenv("FANOUT_FAULT_EXIT_AFTER_RESULT"), 10, 64); err == nil && n > 0 {
		exitAfter = n
	}
}

// ResultPublished is called by the worker between publishing a result and
// acking its work message.
func ResultPublished() {
	if exitAfter > 0 && published.Add(1) >= exitAfter {
		os.Exit(ExitAfterResultCode)
	}
}

// CrashActivityEnabled reports whether the "crash" activity should be served.
func CrashActivityEnabled() bool { return os.Getenv("FANOUT_FAULT_ACTIVITIES") == "1" }

// Crash is the "crash" activity's handler: it kills the process.
func Crash(context.Context, json.RawMessage) (json.RawMessage, error) {
	os.Exit(CrashCode)
	return nil, nil
}

// Poison is the "poison" activity: the input {"poison": true} exits the
// process (code 98) on the item's first attempt and is returned on later
// ones; any other input is returned at once.
func Poison(attempt int, input json.RawMessage) (json.RawMessage, error) {
	var v struct {
		Poison bool `json:"poison"`
	}
	if attempt <= 1 && json.Unmarshal(input, &v) == nil && v.Poison {
		os.Exit(CrashCode)
	}
	return input, nil
}
