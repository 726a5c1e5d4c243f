//go:build fanout_faults

package workerd

import (
	"context"
	"encoding/json"

	"github.com/fanoutdev/fanout/internal/faults"
	"github.com/fanoutdev/fanout/worker"
)

func init() { extraActivities = faultActivities }

// faultActivities serves "crash" and "poison" when FANOUT_FAULT_ACTIVITIES
// is 1 (see package faults).
func faultActivities() map[string]worker.Handler {
	if !faults.ActivitiesEnabled() {
		return nil
	}
	return map[string]worker.Handler{
		"crash": worker.HandlerFunc(faults.Crash),
		"poison": worker.HandlerFunc(func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
			info, _ := worker.InfoFrom(ctx)
			return faults.Poison(info.Attempt, input)
		}),
	}
}
