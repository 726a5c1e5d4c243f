package observe_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/internal/workerd"
)

const (
	dashboardPath = "../../deploy/grafana/fanout-dashboard.json"
	rulesPath     = "../../deploy/prometheus/fanout-alerts.yml"
	rulesTestPath = "../../deploy/prometheus/fanout-alerts.test.yml"
)

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func get(url string) (*http.Response, error) {
	c := http.Client{Timeout: 5 * time.Second}
	return c.Get(url)
}

// awaitReady polls a /readyz until it answers 200.
func awaitReady(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 20s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scrape returns the names of the samples /metrics at addr serves
// (histograms with their _bucket, _sum and _count).
func scrape(t *testing.T, addr string) map[string]bool {
	t.Helper()
	resp, err := get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics of %s: %v", addr, err)
	}
	out := map[string]bool{}
	for name, f := range fams {
		if len(f.GetMetric()) == 0 {
			continue
		}
		out[name] = true
		if f.GetType().String() == "HISTOGRAM" {
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		}
	}
	return out
}

// dashboardExprs returns every query of the Grafana dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					out = append(out, s)
				} else if q, ok := x.(map[string]any); ok && k == "query" {
					if s, ok := q["query"].(string); ok {
						out = append(out, s) // a template variable's query
					}
				} else {
					walk(x)
				}
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	return out
}

// ruleExprs returns the alerts' names and expressions.
func ruleExprs(t *testing.T) (alerts []string, exprs []string) {
	t.Helper()
	b, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", rulesPath, err)
	}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			exprs = append(exprs, r.Expr)
		}
	}
	return alerts, exprs
}

var (
	quoted     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// metricNames returns the fanout, Go and process metric names a PromQL
// expression uses (label values and strings left out).
func metricNames(expr string) []string {
	var out []string
	for _, id := range identifier.FindAllString(quoted.ReplaceAllString(expr, `""`), -1) {
		if strings.HasPrefix(id, "fanout_") || strings.HasPrefix(id, "go_") || strings.HasPrefix(id, "process_") {
			out = append(out, id)
		}
	}
	return out
}

// TestOperationsFilesUseExportedMetrics runs a coordinator and a worker as
// their binaries do (coordinator.Run, workerd.Run with --http), runs a
// batch, scrapes both, and checks that every metric the Grafana dashboard
// and the Prometheus alert rules use is one of theirs.
func TestOperationsFilesUseExportedMetrics(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	ctx, cancel := context.WithCancel(context.Background())
	coordAddr, workerAddr := freeAddr(t), freeAddr(t)
	stopped := make(chan error, 2)
	go func() {
		stopped <- coordinator.Run(ctx, coordinator.Config{Conn: env.Connect(), HTTPAddr: coordAddr, Logger: env.Logger(), Lease: 2 * time.Second})
	}()
	go func() {
		stopped <- workerd.Run(ctx, workerd.Config{URL: env.Server.ClientURL(), HTTPAddr: workerAddr, Concurrency: 4, Logger: env.Logger()})
	}()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-stopped; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("run: %v", err)
			}
		}
	})
	awaitReady(t, coordAddr)
	awaitReady(t, workerAddr)

	r := env.Submit(client.BatchRequest{Activity: "sleep", Items: []json.RawMessage{
		json.RawMessage(`{"ms":1}`), json.RawMessage(`{"ms":1,"fail":"on purpose"}`),
	}})
	if agg := env.Wait(r.BatchID, 20*time.Second); agg.Succeeded != 1 || agg.Failed != 1 {
		t.Fatalf("aggregate: %+v", agg)
	}
	// A refused request, and the work queue seen while a worker lives.
	if _, err := env.Client.Status(ctx, "no-such-batch"); err == nil {
		t.Fatal("status of a batch that does not exist answered")
	}

	exported := scrape(t, coordAddr)
	for name := range scrape(t, workerAddr) {
		exported[name] = true
	}
	for _, want := range []string{"fanout_build_info", "fanout_batch_duration_seconds_bucket", "fanout_worker_item_queue_wait_seconds_bucket",
		"fanout_requests_refused_total", "fanout_batch_takeovers_total", "fanout_workers", "fanout_stream_max_bytes"} {
		if !exported[want] {
			t.Errorf("%s is not exported", want)
		}
	}

	alerts, ruleQueries := ruleExprs(t)
	for _, want := range []string{"FanoutBatchesFailing", "FanoutItemsWaitingWithoutWorkers", "FanoutCoordinatorTakeovers", "FanoutStreamNearLimit"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("%s has no alert %s", rulesPath, want)
		}
	}
	used := map[string][]string{}
	for _, q := range append(dashboardExprs(t), ruleQueries...) {
		for _, name := range metricNames(q) {
			used[name] = append(used[name], q)
		}
	}
	if len(used) < 15 {
		t.Fatalf("only %d metric names found in the dashboard and rules: %v", len(used), used)
	}
	for name, queries := range used {
		if !exported[name] {
			t.Errorf("%s is used (%q) but neither the coordinator nor the worker exports it", name, queries[0])
		}
	}
	t.Logf("%d metrics used by the dashboard and the rules, all exported", len(used))
}

// TestAlertRules checks the rules with promtool and runs their unit tests
// (deploy/prometheus/fanout-alerts.test.yml), when promtool is installed
// (Debian: apt-get install prometheus); FANOUT_REQUIRE_PROMTOOL=1 makes
// its absence a failure.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("FANOUT_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("promtool not found and FANOUT_REQUIRE_PROMTOOL=1")
		}
		t.Skip("promtool not installed")
	}
	for _, args := range [][]string{{"check", "rules", filepath.Base(rulesPath)}, {"test", "rules", filepath.Base(rulesTestPath)}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Dir(rulesPath)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
