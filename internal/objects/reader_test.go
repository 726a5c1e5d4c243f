package objects_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/objects"
	"github.com/fanoutdev/fanout/internal/testenv"
)

func store(t *testing.T) (jetstream.JetStream, jetstream.ObjectStore) {
	t.Helper()
	env := testenv.Server(t)
	js, err := jetstream.New(env.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "things"})
	if err != nil {
		t.Fatal(err)
	}
	return js, obs
}

// Every size reads back byte for byte: empty, smaller than a chunk, exact
// chunk multiples and a ragged tail, through a small Read buffer.
func TestOpenReadsWholeObject(t *testing.T) {
	js, obs := store(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rng := rand.New(rand.NewPCG(1, 2))
	const chunk = 1024
	for _, size := range []int{0, 1, chunk - 1, chunk, 3 * chunk, 5*chunk + 17} {
		want := make([]byte, size)
		for i := range want {
			want[i] = byte(rng.IntN(256))
		}
		name := "obj-" + string(rune('a'+size%26))
		if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunk}}, bytes.NewReader(want)); err != nil {
			t.Fatal(err)
		}
		rc, info, err := objects.Open(ctx, js, "things", name)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		got, err := io.ReadAll(io.LimitReader(struct{ io.Reader }{rc}, int64(size)+1))
		rc.Close()
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(got, want) || info.Size != uint64(size) {
			t.Fatalf("size %d: read %d bytes (info says %d), content equal: %v", size, len(got), info.Size, bytes.Equal(got, want))
		}
	}
}

func TestOpenFollowsLink(t *testing.T) {
	js, obs := store(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := obs.PutString(ctx, "target", "hello\nworld\n")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.AddLink(ctx, "alias", info); err != nil {
		t.Fatal(err)
	}
	rc, _, err := objects.Open(ctx, js, "things", "alias")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || string(got) != "hello\nworld\n" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestOpenMissing(t *testing.T) {
	js, _ := store(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := objects.Open(ctx, js, "things", "nope"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("missing object: %v, want ErrObjectNotFound", err)
	}
	if _, _, err := objects.Open(ctx, js, "nobucket", "nope"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("missing bucket: %v, want ErrBucketNotFound", err)
	}
}

// A reader closed half way stops with an error instead of returning more.
func TestCloseStopsReading(t *testing.T) {
	js, obs := store(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data := bytes.Repeat([]byte("x"), 4096)
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: "big", Opts: &jetstream.ObjectMetaOptions{ChunkSize: 1024}}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	rc, _, err := objects.Open(ctx, js, "things", "big")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := io.ReadAll(rc); err == nil {
		t.Fatal("read after Close succeeded")
	}
}
