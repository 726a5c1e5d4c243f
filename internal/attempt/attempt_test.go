package attempt

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		name         string
		err          error
		attempt, max int
		backoff      time.Duration
		again        bool
		delay        time.Duration
		recorded     string
	}{
		{"plain error, attempts left: the batch's backoff", boom, 1, 3, 5 * time.Second, true, 5 * time.Second, ""},
		{"plain error on the last attempt", boom, 3, 3, time.Second, false, 0, "boom"},
		{"permanent with attempts left", &PermanentError{Err: boom}, 1, 3, time.Second, false, 0, "boom"},
		{"wrapped permanent", fmt.Errorf("calling: %w", &PermanentError{Err: boom}), 1, 3, time.Second, false, 0, "calling: boom"},
		{"retry after, attempts left: its own delay", &RetryAfterError{Delay: 42 * time.Millisecond, Err: boom}, 2, 3, time.Second, true, 42 * time.Millisecond, ""},
		{"retry after on the last attempt: its error, without the delay", &RetryAfterError{Delay: time.Minute, Err: boom}, 3, 3, time.Second, false, 0, "boom"},
		{"not JSON", ErrNotJSON, 1, 3, time.Second, false, 0, "handler returned output that is not JSON"},
	} {
		again, delay, recorded := Decide(c.err, c.attempt, c.max, c.backoff)
		if again != c.again || delay != c.delay || recorded != c.recorded {
			t.Errorf("%s: Decide = %v, %s, %q; want %v, %s, %q", c.name, again, delay, recorded, c.again, c.delay, c.recorded)
		}
	}
}
