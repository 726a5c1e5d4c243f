// Package tests holds fanout's end-to-end tests: the real coordinator,
// worker and nats-server binaries run as processes (see package procs),
// and the tests kill and restart them.
package tests

import (
	"os"
	"testing"

	"github.com/fanoutdev/fanout/tests/procs"
)

// bins are the binaries built once for this test run by TestMain.
var bins *procs.Binaries

func TestMain(m *testing.M) { os.Exit(procs.Main(m, &bins)) }
