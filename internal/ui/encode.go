package ui

import (
	"encoding/json"
	"io"
)

// newLineEncoder writes one JSON value per line, with <, > and & escaped
// (a download opened in a browser stays inert).
func newLineEncoder(w io.Writer) *json.Encoder { return json.NewEncoder(w) }
