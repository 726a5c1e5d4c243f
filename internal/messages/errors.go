package messages

import "fmt"

// Error codes carried in ErrorReply. Programs switch on the code; the
// message is for a person.
const (
	CodeInvalidJSON     = "invalid_json"     // the body is not a JSON object
	CodeInvalidRequest  = "invalid_request"  // a field is missing, of the wrong type or out of range
	CodeUnknownActivity = "unknown_activity" // no worker has registered the activity
	CodeTooLarge        = "too_large"        // the batch exceeds a configured limit
	CodeNotFound        = "not_found"        // no batch with that id
	CodeUnsupported     = "unsupported"      // a valid feature this coordinator does not offer
	CodeUnavailable     = "unavailable"      // JetStream did not answer; retry
	CodeInternal        = "internal"         // a bug or an unexpected server error
)

// Codes lists every error code.
var Codes = []string{CodeInvalidJSON, CodeInvalidRequest, CodeUnknownActivity, CodeTooLarge, CodeNotFound, CodeUnsupported, CodeUnavailable, CodeInternal}

// Error is the error object of an ErrorReply.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
