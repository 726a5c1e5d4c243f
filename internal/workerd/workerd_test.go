//go:build !fanout_faults

package workerd_test

import (
	"slices"
	"testing"

	"github.com/fanoutdev/fanout/internal/workerd"
)

// Without the fanout_faults tag the fault variables change nothing: the
// worker serves the built-ins only, and "crash" is not an activity.
func TestNoFaultActivities(t *testing.T) {
	t.Setenv("FANOUT_FAULT_ACTIVITIES", "1")
	w, err := workerd.New(nil, workerd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Sorted(slices.Values(w.Activities())), []string{"echo", "sha256", "sleep"}; !slices.Equal(got, want) {
		t.Fatalf("activities %v, want %v", got, want)
	}
	for _, name := range []string{"crash", "poison"} {
		if _, err := workerd.New(nil, workerd.Config{Activities: []string{name}}); err == nil {
			t.Fatalf("activity %q served by a build without the fanout_faults tag", name)
		}
	}
}
