package procs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
)

// ErrExited is returned by Output.Await when the process exited (its output
// ended) before a matching line appeared.
var ErrExited = errors.New("process exited")

// Output is a process's stdout and stderr, line by line, as it arrives.
// It is safe for concurrent use.
type Output struct {
	mu      sync.Mutex
	lines   []string
	partial []byte
	changed chan struct{} // closed and replaced on each new line and at the end
	ended   bool
}

func newOutput() *Output { return &Output{changed: make(chan struct{})} }

// Write implements io.Writer for exec.Cmd.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.partial = append(o.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		o.lines = append(o.lines, string(o.partial[:i]))
		o.partial = o.partial[i+1:]
		added = true
	}
	if added {
		close(o.changed)
		o.changed = make(chan struct{})
	}
	return len(p), nil
}

// end marks the output complete (the process exited and its pipes closed).
func (o *Output) end() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ended {
		return
	}
	if len(o.partial) > 0 {
		o.lines = append(o.lines, string(o.partial))
		o.partial = nil
	}
	o.ended = true
	close(o.changed)
}

// Lines returns a copy of the lines so far.
func (o *Output) Lines() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.lines...)
}

// Len is the number of complete lines so far: a position to Await from.
func (o *Output) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.lines)
}

// String is the whole output so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := strings.Join(o.lines, "\n")
	if len(o.partial) > 0 {
		s += "\n" + string(o.partial)
	}
	return s
}

// Contains reports whether any line so far contains substr.
func (o *Output) Contains(substr string) bool {
	return o.Count(func(l string) bool { return strings.Contains(l, substr) }) > 0
}

// Count is the number of lines so far that match.
func (o *Output) Count(match func(line string) bool) int {
	n := 0
	for _, l := range o.Lines() {
		if match(l) {
			n++
		}
	}
	return n
}

// Await waits for the first line at index >= from that matches, and
// returns its index and text. It returns ErrExited if the output ends
// first, or ctx's error.
func (o *Output) Await(ctx context.Context, from int, match func(line string) bool) (int, string, error) {
	for {
		o.mu.Lock()
		for i := from; i < len(o.lines); i++ {
			if match(o.lines[i]) {
				l := o.lines[i]
				o.mu.Unlock()
				return i, l, nil
			}
		}
		from = max(from, len(o.lines))
		ended, changed := o.ended, o.changed
		o.mu.Unlock()
		if ended {
			return -1, "", ErrExited
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return -1, "", ctx.Err()
		}
	}
}

// LogLine is one JSON log line of a fanout binary (zerolog's format).
type LogLine struct {
	Raw    string
	Fields map[string]any
}

// Message is the line's "message" field.
func (l LogLine) Message() string { s, _ := l.Fields["message"].(string); return s }

// Level is the line's "level" field.
func (l LogLine) Level() string { s, _ := l.Fields["level"].(string); return s }

// Str is a string field ("" when missing).
func (l LogLine) Str(key string) string { s, _ := l.Fields[key].(string); return s }

// ParseLog parses a JSON log line; ok is false for other lines.
func ParseLog(line string) (LogLine, bool) {
	if !strings.HasPrefix(line, "{") {
		return LogLine{}, false
	}
	var f map[string]any
	if json.Unmarshal([]byte(line), &f) != nil {
		return LogLine{}, false
	}
	return LogLine{Raw: line, Fields: f}, true
}

// IsLog matches JSON log lines whose message is msg and, when given, whose
// fields equal kv (pairs of key and string value).
func IsLog(msg string, kv ...string) func(string) bool {
	return func(line string) bool {
		l, ok := ParseLog(line)
		if !ok || l.Message() != msg {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if l.Str(kv[i]) != kv[i+1] {
				return false
			}
		}
		return true
	}
}

// AwaitLog waits for a JSON log line with message msg (and fields kv) at
// index >= from.
func (o *Output) AwaitLog(ctx context.Context, from int, msg string, kv ...string) (LogLine, error) {
	_, line, err := o.Await(ctx, from, IsLog(msg, kv...))
	if err != nil {
		return LogLine{}, err
	}
	l, _ := ParseLog(line)
	return l, nil
}
