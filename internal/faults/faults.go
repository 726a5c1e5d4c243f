// Package faults lets the fault-injection tests make the real worker
// binary fail at precise moments. Its hooks exist only in builds with the
// fanout_faults tag (tests/procs builds cmd/worker so); a build without it
// has none, and the worker SDK and cmd/worker then do not import this
// package. In a tagged build they are switched on by environment variables:
//
//	FANOUT_FAULT_EXIT_AFTER_RESULT=N  the process exits (code 97) right after
//	                                  the results of its Nth work message
//	                                  are stored, before that message's
//	                                  ack: "published, then died"
//	FANOUT_FAULT_ACTIVITIES=1         registers the activity "crash", whose
//	                                  handler exits the process (code 98),
//	                                  and "poison", which does so only for
//	                                  the input {"poison": true} on its
//	                                  first attempt
//
// The exit codes are defined in every build, for the tests to compare
// with.
package faults

// ExitAfterResultCode and CrashCode are the exit codes of the two faults.
const (
	ExitAfterResultCode = 97
	CrashCode           = 98
)
