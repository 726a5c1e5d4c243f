package coordinator

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// countingFile counts the bytes read from an items file; Seek is the file's.
type countingFile struct {
	*os.File
	read *int64
}

func (f countingFile) Read(p []byte) (int, error) {
	n, err := f.File.Read(p)
	*f.read += int64(n)
	return n, err
}

// Going back in an items object (unpacking a group of a batch with
// items_ref) reads from the closest kept offset, not from the start.
func TestItemReaderGoesBackToTheClosestMark(t *testing.T) {
	t.Parallel()
	const n, pad = 5000, 200
	item := func(i int) string { return fmt.Sprintf(`{"n":%d,"pad":%q}`, i, strings.Repeat("x", pad)) }
	var b strings.Builder
	for i := range n {
		if i%700 == 0 {
			b.WriteString("\n") // blank lines are skipped, and may precede a mark
		}
		b.WriteString(item(i) + "\n")
	}
	path := filepath.Join(t.TempDir(), "items.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var read int64
	r := &itemReader{open: func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return countingFile{f, &read}, nil
	}}
	defer r.Close()
	check := func(i int) {
		t.Helper()
		got, err := r.Item(i)
		if err != nil || string(got) != item(i) {
			t.Fatalf("item %d: %.40s…, %v", i, got, err)
		}
	}
	for i := range n {
		check(i)
	}
	for _, i := range []int{3000, 3001, 2048, 10, 4999, 1024, 1023} {
		read = 0
		check(i)
		// From the mark at or before i: at most a mark's worth of items
		// and one buffer. From the start it would be i items.
		if limit := int64(itemMarkEvery*(pad+20) + 64*1024); read > limit {
			t.Fatalf("item %d: read %d bytes going back, more than %d", i, read, limit)
		}
	}
}
