package compose

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The compose test's passwords of the NATS admin and client users.
var (
	adminPassword  = "test-admin-" + randomHex(6)
	clientPassword = "test-client-" + randomHex(6)
)

// requireDockerEnv is the variable that turns a missing Docker into a
// failure instead of a skip.
const requireDockerEnv = "FANOUT_REQUIRE_DOCKER"

func TestMain(m *testing.M) {
	code := m.Run()
	removeImages()
	os.Exit(code)
}

var dockerCheck struct {
	once sync.Once
	err  error
}

// requireDocker skips the test when no Docker engine and compose command
// answer, or fails it when FANOUT_REQUIRE_DOCKER=1.
func requireDocker(t *testing.T) {
	t.Helper()
	required := os.Getenv(requireDockerEnv) == "1"
	if testing.Short() && !required {
		t.Skip("compose tests need Docker and take minutes; skipped in -short mode")
	}
	dockerCheck.once.Do(func() { dockerCheck.err = checkDocker() })
	if err := dockerCheck.err; err != nil {
		if required {
			t.Fatalf("%s=1 but Docker is not usable: %v", requireDockerEnv, err)
		}
		t.Skipf("Docker is not usable (set %s=1 to fail instead): %v", requireDockerEnv, err)
	}
}

func checkDocker() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := exec.LookPath("docker"); err != nil {
		return errors.New("no docker command")
	}
	out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("no Docker engine answers: %v: %s", err, strings.TrimSpace(string(out)))
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	out, err = exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "compose.sh"), "compose-command").CombinedOutput()
	if err != nil {
		return fmt.Errorf("no compose command: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func repoRoot() (string, error) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "docker-compose.yml")); err != nil {
		return "", fmt.Errorf("repository root not found from the test directory: %w", err)
	}
	return root, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// images are the image names the stacks run.
type images struct {
	tag  string // FANOUT_TAG of the fanout images
	nats string // the locally built NATS image
	own  bool   // built by this run: removed at the end
}

var built struct {
	once sync.Once
	img  images
	err  error
}

// buildImages builds the images once per test binary run, under a tag of
// its own so that runs in parallel do not replace each other's images.
func buildImages(t *testing.T) images {
	t.Helper()
	built.once.Do(func() {
		root, err := repoRoot()
		if err != nil {
			built.err = err
			return
		}
		tag, own := os.Getenv("FANOUT_COMPOSE_IMAGES_TAG"), false
		args := []string{"build-images"}
		if tag == "" {
			tag, own = "test-"+randomHex(4), true
		}
		env := cleanEnv(map[string]string{"FANOUT_TAG": tag})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		if !own {
			// Only learn the NATS image name: the fanout images exist.
			out, err := run(ctx, root, env, "go", "list", "-m", "-f", "{{.Version}}", "github.com/nats-io/nats-server/v2")
			if err != nil {
				built.err = err
				return
			}
			built.img = images{tag: tag, nats: "fanout-nats:" + strings.TrimPrefix(strings.TrimSpace(out), "v")}
			return
		}
		out, err := run(ctx, root, env, "bash", append([]string{filepath.Join(root, "scripts", "compose.sh")}, args...)...)
		if err != nil {
			built.err = fmt.Errorf("scripts/compose.sh build-images: %w", err)
			return
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		names := strings.Fields(lines[len(lines)-1])
		if len(names) != 4 || !strings.Contains(names[3], "fanout-nats:") {
			built.err = fmt.Errorf("build-images printed %q, want four image names", lines[len(lines)-1])
			return
		}
		built.img = images{tag: tag, nats: names[3], own: true}
		t.Logf("built images %s in %s", strings.Join(names, " "), time.Since(start).Round(time.Second))
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.img
}

func removeImages() {
	if !built.img.own {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"rmi"}
	for _, name := range []string{"coordinator", "worker", "cli"} {
		args = append(args, "fanout-"+name+":"+built.img.tag)
	}
	_ = exec.CommandContext(ctx, "docker", args...).Run()
}

// cleanEnv is the test's environment without the variables that would
// change what the compose files do, plus set.
func cleanEnv(set map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		keep := name == "FANOUT_COMPOSE" || name == requireDockerEnv
		for _, p := range []string{"FANOUT_", "NATS", "COMPOSE_", "COORDINATOR_", "WORKER_", "CLIENT_"} {
			if strings.HasPrefix(name, p) && !keep {
				name = ""
			}
		}
		if name != "" {
			env = append(env, kv)
		}
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

// run runs a command and returns its standard output; the error carries
// both outputs.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n--- stdout\n%s--- stderr\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// freePorts returns n TCP ports free on 127.0.0.1 right now. Fixed for the
// stack's life: a restarted container keeps its published port.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

// stack is one compose project.
type stack struct {
	t       *testing.T
	root    string
	cluster bool
	project string
	env     []string
}

// newStack prepares a project with its own name; it is taken down with its
// volumes when the test ends, whatever happens.
func newStack(t *testing.T, cluster bool, settings map[string]string) *stack {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	img := buildImages(t)
	project := "fanoutct" + randomHex(4)
	set := map[string]string{
		"COMPOSE_PROJECT_NAME": project,
		"FANOUT_TAG":           img.tag,
		"NATS_IMAGE":           img.nats,
		// Health every second, so that waits are short.
		"FANOUT_HEALTHCHECK_INTERVAL": "1s",
		"FANOUT_UP_TIMEOUT":           "150",
		// Auth is on: one user per role, and admin for the test itself.
		"FANOUT_COORDINATOR_PASSWORD": "test-coordinator-" + randomHex(4),
		"FANOUT_WORKER_PASSWORD":      "test-worker-" + randomHex(4),
		"FANOUT_CLIENT_PASSWORD":      clientPassword,
		"FANOUT_UI_PASSWORD":          "test-ui-" + randomHex(4),
		"FANOUT_UI_TOKEN":             "test-ui-token-" + randomHex(4),
		"FANOUT_ADMIN_PASSWORD":       adminPassword,
	}
	for k, v := range settings {
		set[k] = v
	}
	s := &stack{t: t, root: root, cluster: cluster, project: project, env: cleanEnv(set)}
	t.Cleanup(s.down)
	return s
}

// script runs scripts/compose.sh for this stack.
func (s *stack) script(ctx context.Context, args ...string) (string, error) {
	full := []string{filepath.Join(s.root, "scripts", "compose.sh")}
	if s.cluster {
		full = append(full, "--cluster")
	}
	return run(ctx, s.root, s.env, "bash", append(full, args...)...)
}

// cli runs the fanout CLI in the stack's cli service and returns what it
// printed.
func (s *stack) cli(ctx context.Context, args ...string) string {
	s.t.Helper()
	return s.mustScript(ctx, append([]string{"compose", "--profile", "cli", "run", "--rm", "-T", "cli"}, args...)...)
}

func (s *stack) mustScript(ctx context.Context, args ...string) string {
	s.t.Helper()
	out, err := s.script(ctx, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *stack) down() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if s.t.Failed() {
		if out, err := s.script(ctx, "compose", "logs", "--no-color", "--tail=150"); err == nil {
			s.t.Logf("logs of %s (last 150 lines per container):\n%s", s.project, out)
		}
	}
	if _, err := s.script(ctx, "down", "-v", "-t", "5"); err != nil {
		s.t.Errorf("down -v: %v", err)
	}
}

// containers returns the ids of the service's containers, stopped ones
// too. It asks Docker for the labels every compose version sets: quicker
// than `compose ps` (docker-compose v1 takes seconds to start).
func (s *stack) containers(ctx context.Context, service string) []string {
	s.t.Helper()
	out, err := run(ctx, s.root, s.env, "docker", "ps", "-aq", "--no-trunc",
		"--filter", "label=com.docker.compose.project="+s.project,
		"--filter", "label=com.docker.compose.service="+service,
		"--filter", "label=com.docker.compose.oneoff=False")
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.Fields(out)
}

// container is the one container of a service that has one.
func (s *stack) container(ctx context.Context, service string) string {
	s.t.Helper()
	ids := s.containers(ctx, service)
	if len(ids) != 1 {
		s.t.Fatalf("service %s: %d containers, want 1", service, len(ids))
	}
	return ids[0]
}

type containerState struct {
	id, hostname, status, health string
}

func (s *stack) inspect(ctx context.Context, ids []string) []containerState {
	s.t.Helper()
	if len(ids) == 0 {
		return nil
	}
	args := append([]string{"inspect", "-f", "{{.Id}} {{.Config.Hostname}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"}, ids...)
	out, err := run(ctx, s.root, s.env, "docker", args...)
	if err != nil {
		s.t.Fatal(err)
	}
	var states []containerState
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 {
			states = append(states, containerState{id: f[0], hostname: f[1], status: f[2], health: f[3]})
		}
	}
	return states
}

// waitHealthy waits until at least want containers of the service run and
// are healthy.
func (s *stack) waitHealthy(ctx context.Context, service string, want int, timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		healthy := 0
		for _, st := range s.inspect(ctx, s.containers(ctx, service)) {
			if st.status == "running" && st.health == "healthy" {
				healthy++
			}
		}
		if healthy >= want {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("service %s: %d healthy containers after %s, want %d", service, healthy, timeout, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// docker runs a docker command.
func (s *stack) docker(ctx context.Context, args ...string) {
	s.t.Helper()
	if _, err := run(ctx, s.root, s.env, "docker", args...); err != nil {
		s.t.Fatal(err)
	}
}
