//go:build fanout_faults

package faults

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"sync/atomic"
)

var (
	// exitAfter is FANOUT_FAULT_EXIT_AFTER_RESULT, read as the process
	// starts; 0 switches the fault off.
	exitAfter = positiveEnv("FANOUT_FAULT_EXIT_AFTER_RESULT")
	stored    atomic.Int64
)

func positiveEnv(name string) int64 {
	if n, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil && n > 0 {
		return n
	}
	return 0
}

// AfterResultsStored is the worker SDK's hook between the server storing a
// work message's results and the worker acking that message. It exits the
// process (code ExitAfterResultCode) at the Nth call when
// FANOUT_FAULT_EXIT_AFTER_RESULT is N.
func AfterResultsStored() {
	if exitAfter > 0 && stored.Add(1) >= exitAfter {
		os.Exit(ExitAfterResultCode)
	}
}

// ActivitiesEnabled reports whether the "crash" and "poison" activities
// are served (FANOUT_FAULT_ACTIVITIES=1).
func ActivitiesEnabled() bool { return os.Getenv("FANOUT_FAULT_ACTIVITIES") == "1" }

// Crash is the "crash" activity's handler: it exits the process (code
// CrashCode).
func Crash(context.Context, json.RawMessage) (json.RawMessage, error) {
	os.Exit(CrashCode)
	return nil, nil
}

// Poison is the "poison" activity: the input {"poison": true} exits the
// process (code CrashCode) on the item's first attempt and is returned on
// later ones; any other input is returned at once.
func Poison(attempt int, input json.RawMessage) (json.RawMessage, error) {
	var v struct {
		Poison bool `json:"poison"`
	}
	if attempt <= 1 && json.Unmarshal(input, &v) == nil && v.Poison {
		os.Exit(CrashCode)
	}
	return input, nil
}
