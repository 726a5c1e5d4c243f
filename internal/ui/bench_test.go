package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/testenv"
	"github.com/fanoutdev/fanout/internal/ui"
)

// The dashboard with much history: BenchmarkBatchesPage lists the newest
// page of 10,000 stored batches, BenchmarkBatchPage draws the page of a
// 1,000,000-item batch with 1% of its items failed. The fixtures are
// written the way a coordinator and workers write them (batch states in
// the batch-state bucket, one result per item in the results stream), so
// that setting up takes seconds, not the hour of running them.
//
//	go test -run '^$' -bench 'Page' -benchtime 20x ./internal/ui/
//
// Besides time per page it reports B/op (allocated per page) and
// retained-MB: the heap that stays in use after the pages and a GC, which
// would grow if the dashboard kept what it read.

func BenchmarkBatchesPage(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("batches=%d", n), func(b *testing.B) {
			env, srv := benchSetup(b)
			kv, err := jetstream.New(env.Conn)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			bucket, err := kv.KeyValue(ctx, messages.MustNames(messages.DefaultPrefix).BatchesBucket())
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now().Add(-time.Duration(n) * time.Second)
			for i := range n {
				id := uuid.NewString()
				created := t0.Add(time.Duration(i) * time.Second)
				st := messages.BatchState{BatchID: id, Activity: "sha256", Status: messages.StatusCompleted,
					Total: 1000, Succeeded: 990, Failed: 10, Published: 1000, TokenSeq: uint64(i + 1), Epoch: 1,
					CreatedAt: created, StartedAt: created, UpdatedAt: created.Add(900 * time.Millisecond), FinishedAt: created.Add(900 * time.Millisecond)}
				data, _ := json.Marshal(st)
				if _, err := bucket.Put(ctx, id, data); err != nil {
					b.Fatal(err)
				}
			}
			benchPage(b, srv, "/batches", "sha256")
		})
	}
}

func BenchmarkBatchPage(b *testing.B) {
	const n, failEvery = 1_000_000, 100
	env, srv := benchSetup(b)
	js, err := jetstream.New(env.Conn)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	names := messages.MustNames(messages.DefaultPrefix)
	id := uuid.NewString()
	created := time.Now().Add(-time.Hour)
	for i := range n {
		r := messages.ResultMessage{BatchID: id, Item: i, OK: i%failEvery != 0, Attempts: 1, Worker: "bench-worker", DurationMS: float64(i%50) + 1}
		if r.OK {
			r.Output = json.RawMessage(`{"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`)
		} else {
			r.Error = fmt.Sprintf("item %d: upstream refused the request", i)
		}
		data, _ := json.Marshal(r)
		if _, err := js.PublishAsync(names.Result(id, i), data); err != nil {
			b.Fatal(err)
		}
		if i%10_000 == 9_999 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	st := messages.BatchState{BatchID: id, Activity: "sha256", Status: messages.StatusCompleted,
		Total: n, Succeeded: n - n/failEvery, Failed: n / failEvery, Published: n, TokenSeq: 1, Epoch: 1,
		CreatedAt: created, StartedAt: created, UpdatedAt: created.Add(time.Minute), FinishedAt: created.Add(time.Minute)}
	data, _ := json.Marshal(st)
	bucket, err := js.KeyValue(ctx, names.BatchesBucket())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bucket.Put(ctx, id, data); err != nil {
		b.Fatal(err)
	}
	benchPage(b, srv, "/batches/"+id+"?item=777777", "upstream refused the request")
}

// benchSetup starts a server, a coordinator and the dashboard.
func benchSetup(b *testing.B) (*testenv.Env, string) {
	env := testenv.Server(b)
	env.Coordinator(nil)
	s, err := ui.New(ui.Config{Client: env.Client})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Stop(context.Background()) })
	return env, s.URL()
}

// benchPage loads a page b.N times, checking it shows want.
func benchPage(b *testing.B, url, path, want string) {
	get := func() {
		resp, err := http.Get(url + path)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytesContain(body, want) {
			b.Fatalf("%s: %d, without %q:\n%s", path, resp.StatusCode, want, body)
		}
	}
	get() // warm: connections, stream lookups
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		get()
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "retained-MB")
}

func bytesContain(b []byte, s string) bool { return len(s) == 0 || indexOf(b, s) >= 0 }

func indexOf(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}
