// Package procs runs fanout's real binaries as processes for end-to-end
// tests: a nats-server with JetStream on a file store, coordinators and
// workers. It builds the binaries once per test run (Build, from TestMain),
// starts each process with its output captured line by line, waits on
// events (log lines, exits, replies) rather than sleeps, signals and kills
// processes, restarts the server on the same store and port, and reads the
// streams to check what the engine recorded.
//
// Everything a test starts is killed in t.Cleanup; a process's output is
// written to the test log when the test fails, and a process that exits on
// its own (unless Proc.ExpectExit), panics or reports a data race fails the
// test. Proc methods that fail the test must be called from the test's
// goroutine.
//
// For fault injection: the worker is built with the fanout_faults tag
// (FaultsTag), which compiles in its fault hooks (package internal/faults);
// StartWorkerEnv / WorkerEnv add environment variables, the
// FANOUT_FAULT_* that switch them on; BatchState and AwaitBatchState read a
// batch's checkpoint in FANOUT_BATCHES (owner, epoch, counts); WorkCount and
// AwaitNoWork look for a batch's messages left in FANOUT_WORK; CountResults
// counts distinct results of all batches as they are published, an event to
// pick kill moments from.
//
// Environment: FANOUT_E2E_RACE=0 builds the coordinator and worker without
// -race even when the tests run with -race; go test -short builds nothing
// and skips every test that calls NewEnv.
//
// Typical use:
//
//	func TestMain(m *testing.M) { os.Exit(procs.Main(m, &bins)) }
//
//	func TestX(t *testing.T) {
//		e := procs.NewEnv(t, bins)      // nats-server process + client
//		e.Coordinator()                 // ready when it answers requests
//		w := e.Worker("--concurrency", "4")
//		r := e.Submit(ctx, req)
//		w.Kill()                        // SIGKILL, waits for the exit
//		agg := e.Wait(ctx, r.BatchID, nil)
//	}
package procs
