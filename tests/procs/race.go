//go:build race

package procs

// RaceEnabled reports whether this test binary was built with -race; Build
// then builds the fanout binaries with -race too.
const RaceEnabled = true
