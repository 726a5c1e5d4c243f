package messages

// MaxValueDepth is how deep an item, or a step's input, may nest (arrays
// and objects). Every message that carries one wraps it in at most a few
// more levels (a work message, an aggregate), and stays within the 128
// levels common JSON decoders accept: whatever is accepted can be read
// back by every reader.
const MaxValueDepth = 100

// Depth returns how deeply arrays and objects nest in a JSON text: 0 for
// a scalar, 1 for [] or {}. It only scans brackets outside strings; the
// text's validity is checked elsewhere.
func Depth(data []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range data {
		switch {
		case escaped:
			escaped = false
		case inString:
			switch c {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// checkDepth refuses a value nested deeper than MaxValueDepth; what names
// it in the error.
func checkDepth(data []byte, what string) *Error {
	if d := Depth(data); d > MaxValueDepth {
		return Errorf(CodeInvalidRequest, "%s: nested %d levels deep; items and inputs may nest at most %d levels", what, d, MaxValueDepth)
	}
	return nil
}
