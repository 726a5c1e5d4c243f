package coordinator_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/coordinator"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
)

// Requests are handled side by side: submits that take long (an items
// object to read through) and submits naming an items_ref outside the
// deployment's bucket do not hold up the others.
func TestSlowSubmitsDoNotHoldUpOthers(t *testing.T) {
	t.Parallel()
	const maxItems = 30_000
	env := testenv.Server(t)
	env.Coordinator(func(c *coordinator.Config) { c.MaxItems = maxItems })
	env.Worker(nil)
	ctx := ctxFor(t, 2*time.Minute)
	obs, err := jsOf(t, env).ObjectStore(ctx, names.BlobBucket())
	if err != nil {
		t.Fatal(err)
	}
	// Read to its end before it is refused: one item over the limit (2.7 MB).
	var buf bytes.Buffer
	line := `{"payload":"` + strings.Repeat("x", 80) + `"}` + "\n"
	for range maxItems + 1 {
		buf.WriteString(line)
	}
	if _, err := obs.PutBytes(ctx, "inputs/over-the-limit.jsonl", buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	// A bucket the coordinator would have to look into for nothing.
	if _, err := jsOf(t, env).CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "OTHER"}); err != nil {
		t.Fatal(err)
	}

	type answer struct {
		kind string
		err  error
		at   time.Time
	}
	answers := make(chan answer, 64)
	var wg sync.WaitGroup
	send := func(kind string, req client.BatchRequest) {
		wg.Go(func() {
			_, err := env.Client.Submit(ctx, req)
			answers <- answer{kind, err, time.Now()}
		})
	}
	for range 6 {
		send("slow", client.BatchRequest{Activity: "echo", ItemsRef: &messages.ObjectRef{Name: "inputs/over-the-limit.jsonl"}})
		send("bad", client.BatchRequest{Activity: "echo", ItemsRef: &messages.ObjectRef{Bucket: "OTHER", Name: "items.jsonl"}})
	}
	// The good ones go out once the items object is being read.
	blobs, err := jsOf(t, env).Stream(ctx, "OBJ_"+names.BlobBucket())
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := blobs.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Consumers > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	for range 6 {
		send("good", client.BatchRequest{Activity: "echo", Items: echoItems(3)})
	}
	wg.Wait()
	close(answers)

	var firstSlow time.Time
	var good []answer
	for a := range answers {
		switch a.kind {
		case "slow":
			if !isCode(a.err, client.CodeTooLarge) {
				t.Errorf("submit of %d items: %v, want %s", maxItems+1, a.err, client.CodeTooLarge)
			}
			if firstSlow.IsZero() || a.at.Before(firstSlow) {
				firstSlow = a.at
			}
		case "bad":
			if !isCode(a.err, client.CodeInvalidRequest) || !strings.Contains(a.err.Error(), "items_ref.bucket") {
				t.Errorf("submit naming another bucket: %v, want %s about items_ref.bucket", a.err, client.CodeInvalidRequest)
			}
		case "good":
			if a.err != nil {
				t.Errorf("good submit: %v", a.err)
			}
			good = append(good, a)
		}
	}
	for _, a := range good {
		if !a.at.Before(firstSlow) {
			t.Errorf("a good submit was answered %v after it was sent, after the first slow one (%v)", a.at.Sub(start), firstSlow.Sub(start))
		}
	}
	var slowest time.Duration
	for _, a := range good {
		slowest = max(slowest, a.at.Sub(start))
	}
	t.Logf("good submits answered within %v; the first slow one after %v", slowest, firstSlow.Sub(start))
}
