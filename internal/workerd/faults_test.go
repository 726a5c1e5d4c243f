//go:build fanout_faults

package workerd_test

import (
	"slices"
	"testing"

	"github.com/fanoutdev/fanout/internal/workerd"
)

// With the fanout_faults tag, FANOUT_FAULT_ACTIVITIES=1 adds "crash" and
// "poison" to the built-ins, and nothing else does.
func TestFaultActivities(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want []string
	}{
		{"", []string{"echo", "sha256", "sleep"}},
		{"1", []string{"crash", "echo", "poison", "sha256", "sleep"}},
	} {
		t.Setenv("FANOUT_FAULT_ACTIVITIES", tc.env)
		w, err := workerd.New(nil, workerd.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(slices.Values(w.Activities())); !slices.Equal(got, tc.want) {
			t.Errorf("FANOUT_FAULT_ACTIVITIES=%q: activities %v, want %v", tc.env, got, tc.want)
		}
	}
}
