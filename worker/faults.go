//go:build fanout_faults

package worker

import "github.com/fanoutdev/fanout/internal/faults"

func init() { afterResultsStored = faults.AfterResultsStored }
