package procs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Module paths of what Build builds. The nats-server is the version pinned
// in go.mod.
const (
	CoordinatorPkg = "github.com/fanoutdev/fanout/cmd/coordinator"
	WorkerPkg      = "github.com/fanoutdev/fanout/cmd/worker"
	NATSServerPkg  = "github.com/nats-io/nats-server/v2"
)

// FaultsTag is the build tag the coordinator and worker are built with: it
// compiles in the worker's fault hooks (package internal/faults), which
// the FANOUT_FAULT_* variables switch on.
const FaultsTag = "fanout_faults"

// Binaries are the built executables.
type Binaries struct {
	Dir         string
	NATSServer  string
	Coordinator string
	Worker      string
	// Race is true when the coordinator and worker were built with -race:
	// a data race in them then fails the test that ran them.
	Race bool
}

// BuildOptions tune Build.
type BuildOptions struct {
	// Race builds the coordinator and worker with -race (never the
	// nats-server: it is not under test).
	Race bool
}

// Build builds the coordinator, worker and nats-server binaries into dir,
// the coordinator and worker with the FaultsTag build tag. It must run
// inside the fanout module (the test's package directory is).
func Build(ctx context.Context, dir string, o BuildOptions) (*Binaries, error) {
	b := &Binaries{
		Dir:         dir,
		NATSServer:  filepath.Join(dir, "nats-server"),
		Coordinator: filepath.Join(dir, "coordinator"),
		Worker:      filepath.Join(dir, "worker"),
		Race:        o.Race,
	}
	gobin, err := goCommand()
	if err != nil {
		return nil, err
	}
	fanoutArgs := []string{"build", "-tags", FaultsTag, "-o", dir + string(filepath.Separator)}
	if o.Race {
		fanoutArgs = append(fanoutArgs, "-race")
	}
	builds := [][]string{
		append(fanoutArgs, CoordinatorPkg, WorkerPkg),
		{"build", "-o", b.NATSServer, NATSServerPkg},
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, args := range builds {
		wg.Go(func() {
			out, err := exec.CommandContext(ctx, gobin, args...).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return b, nil
}

// goCommand finds the go command: go test puts GOROOT/bin first on PATH.
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("the go command is neither on PATH nor in GOROOT: %w", err)
	}
	return p, nil
}

// Main is a TestMain body: it builds the binaries into a temporary
// directory, stores them in *bins, runs the tests and removes the
// directory. With -short it builds nothing and leaves *bins nil, and
// NewEnv skips the tests. The binaries are built with -race when the test
// binary is, unless FANOUT_E2E_RACE=0.
func Main(m *testing.M, bins **Binaries) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "fanout-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	b, err := Build(ctx, dir, BuildOptions{Race: RaceEnabled && os.Getenv("FANOUT_E2E_RACE") != "0"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: built coordinator, worker (race=%v, tags %s) and nats-server in %s\n", b.Race, FaultsTag, time.Since(start).Round(time.Millisecond))
	}
	*bins = b
	return m.Run()
}
