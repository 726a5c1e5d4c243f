package coordinator_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/testenv"
)

func sha256Items(n int) ([]json.RawMessage, []string) {
	items := make([]json.RawMessage, n)
	want := make([]string, n)
	for i := range items {
		data := fmt.Sprintf("item-%d-%s", i, "ü✓")
		items[i], _ = json.Marshal(map[string]string{"data": data})
		sum := sha256.Sum256([]byte(data))
		want[i] = hex.EncodeToString(sum[:])
	}
	return items, want
}

// Invariant 1 (exact accounting), on the happy path: 1,000 sha256 items over
// four workers, every output right and in item order.
func TestSHA256BatchOverFourWorkers(t *testing.T) {
	t.Parallel()
	env := testenv.Server(t)
	env.Coordinator(nil)
	for range 4 {
		env.Worker(nil)
	}
	items, want := sha256Items(1000)
	r := env.Submit(client.BatchRequest{Activity: "sha256", Items: items})
	if r.Total != 1000 || r.Status != client.StatusRunning {
		t.Fatalf("submit reply %+v", r)
	}
	agg := env.Wait(r.BatchID, 60*time.Second)
	if agg.Status != client.StatusCompleted || agg.Total != 1000 || agg.Succeeded != 1000 || agg.Failed != 0 {
		t.Fatalf("aggregate: status %s total %d succeeded %d failed %d", agg.Status, agg.Total, agg.Succeeded, agg.Failed)
	}
	if len(agg.Results) != 1000 {
		t.Fatalf("%d results, want 1000", len(agg.Results))
	}
	for i, res := range agg.Results {
		var out struct{ SHA256 string }
		if err := json.Unmarshal(res.Output, &out); err != nil || res.Item != i || !res.OK || out.SHA256 != want[i] {
			t.Fatalf("result %d: %+v (output %s), want item %d sha256 %s", i, res, res.Output, i, want[i])
		}
	}
}
