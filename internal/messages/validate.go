package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Defaults for options a request leaves out. max_in_flight left out is
// "auto": see aggregate.Window.
const (
	DefaultMaxInFlight = 256
	// AutoWindowGroups is the window of an auto-packed batch that left
	// max_in_flight out, in groups.
	AutoWindowGroups   = 64
	DefaultMaxAttempts = 3
	DefaultItemTimeout = 5 * time.Minute
)

// DefaultBackoff is the delay before the 2nd, 3rd, ... attempt; the last
// entry repeats.
var DefaultBackoff = []Duration{Duration(time.Second), Duration(5 * time.Second), Duration(30 * time.Second)}

// Bounds on options, so that a typo cannot ask for something absurd.
const (
	MaxMaxInFlight     = 100_000
	MaxMaxAttempts     = 100
	MaxBackoffLen      = 100
	MaxItemsPerMessage = 1000
	MaxDuration        = 30 * 24 * time.Hour
)

// Limits are a coordinator's limits on what it accepts.
type Limits struct {
	MaxItems   int           // most items in one batch
	MaxTimeout time.Duration // longest batch timeout (the retention of results)
}

// WithDefaults fills the options a request left out.
func (o Options) WithDefaults() Options {
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.Backoff == nil {
		o.Backoff = append([]Duration(nil), DefaultBackoff...)
	}
	if o.ItemTimeout == 0 {
		o.ItemTimeout = Duration(DefaultItemTimeout)
	}
	if o.FailurePolicy == "" {
		o.FailurePolicy = FailureContinue
	}
	return o
}

// DecodeBatchRequest parses and validates a submit body. Options left out
// are filled with their defaults. The error names the field at fault.
func DecodeBatchRequest(data []byte, lim Limits) (BatchRequest, *Error) {
	var req BatchRequest
	fields, e := decodeObject(data, "request")
	if e != nil {
		if e.Code == CodeInvalidRequest {
			e.Code = CodeInvalidJSON
		}
		return req, e
	}
	for _, k := range sortedKeys(fields) {
		raw := fields[k]
		var err error
		switch k {
		case "id":
			err = decodeString(raw, &req.ID)
		case "activity":
			err = decodeString(raw, &req.Activity)
		case "items":
			if d := Depth(raw) - 1; d > MaxValueDepth {
				return req, Errorf(CodeInvalidRequest, "items: an item nested %d levels deep; items may nest at most %d levels", d, MaxValueDepth)
			}
			err = decodeItems(raw, &req.Items)
		case "items_ref":
			req.ItemsRef, e = decodeObjectRef(raw, "items_ref")
		case "source":
			req.Source, e = decodeStep(raw, "source")
		case "reduce":
			req.Reduce, e = decodeStep(raw, "reduce")
		case "options":
			req.Options, e = decodeOptions(raw)
		default:
			return req, Errorf(CodeInvalidRequest, "%s: unknown field (known: id, activity, items, items_ref, source, reduce, options)", k)
		}
		if err != nil {
			return req, Errorf(CodeInvalidRequest, "%s: %v", k, err)
		}
		if e != nil {
			return req, e
		}
	}
	if req.ID != "" && !ValidToken(req.ID) {
		return req, Errorf(CodeInvalidRequest, "id: %q must be 1-64 characters of A-Z a-z 0-9 _ -", req.ID)
	}
	if req.Activity == "" {
		return req, Errorf(CodeInvalidRequest, "activity: is required (the name of the activity to run on each item)")
	}
	if !ValidToken(req.Activity) {
		return req, Errorf(CodeInvalidRequest, "activity: %q must be 1-64 characters of A-Z a-z 0-9 _ -", req.Activity)
	}
	given := 0
	for _, g := range []bool{req.Items != nil, req.ItemsRef != nil, req.Source != nil} {
		if g {
			given++
		}
	}
	switch {
	case given > 1:
		return req, Errorf(CodeInvalidRequest, "items, items_ref and source: give one of them, not several")
	case given == 0:
		return req, Errorf(CodeInvalidRequest, "items: is required when no items_ref or source is given (a JSON array of item inputs)")
	case req.Items != nil && len(req.Items) == 0:
		return req, Errorf(CodeInvalidRequest, "items: must not be empty when no source is given")
	}
	if lim.MaxItems > 0 && len(req.Items) > lim.MaxItems {
		return req, Errorf(CodeTooLarge, "items: %d items, more than this coordinator's limit of %d", len(req.Items), lim.MaxItems)
	}
	if e := req.Options.validate(lim); e != nil {
		return req, e
	}
	req.Options = req.Options.WithDefaults()
	return req, nil
}

// DecodeBatchRef parses a status or cancel body.
func DecodeBatchRef(data []byte) (BatchRef, *Error) {
	var ref BatchRef
	fields, e := decodeObject(data, "request")
	if e != nil {
		e.Code = CodeInvalidJSON
		return ref, e
	}
	for k, raw := range fields {
		if k != "batch_id" {
			return ref, Errorf(CodeInvalidRequest, "%s: unknown field (known: batch_id)", k)
		}
		if err := decodeString(raw, &ref.BatchID); err != nil {
			return ref, Errorf(CodeInvalidRequest, "batch_id: %v", err)
		}
	}
	if ref.BatchID == "" {
		return ref, Errorf(CodeInvalidRequest, "batch_id: is required")
	}
	if !ValidToken(ref.BatchID) {
		return ref, Errorf(CodeInvalidRequest, "batch_id: %q is not a batch id", ref.BatchID)
	}
	return ref, nil
}

// DecodeUpdateRequest parses a fanout.update body. Only the options that
// can change while a batch runs are accepted.
func DecodeUpdateRequest(data []byte) (UpdateRequest, *Error) {
	var u UpdateRequest
	fields, e := decodeObject(data, "request")
	if e != nil {
		e.Code = CodeInvalidJSON
		return u, e
	}
	var opts map[string]json.RawMessage
	for _, k := range sortedKeys(fields) {
		switch k {
		case "batch_id":
			if err := decodeString(fields[k], &u.BatchID); err != nil {
				return u, Errorf(CodeInvalidRequest, "batch_id: %v", err)
			}
		case "options":
			if opts, e = decodeObject(fields[k], "options"); e != nil {
				return u, e
			}
		case "paused":
			var p bool
			if err := json.Unmarshal(fields[k], &p); err != nil || bytes.Equal(bytes.TrimSpace(fields[k]), []byte("null")) {
				return u, Errorf(CodeInvalidRequest, "paused: must be true (pause the batch) or false (resume it)")
			}
			u.Paused = &p
		default:
			return u, Errorf(CodeInvalidRequest, "%s: unknown field (known: batch_id, options, paused)", k)
		}
	}
	if !ValidToken(u.BatchID) {
		return u, Errorf(CodeInvalidRequest, "batch_id: %q is not a batch id", u.BatchID)
	}
	const nothing = "options: give at least one of max_in_flight, failure_policy, tolerated_failures, tolerated_failure_percent, or paused"
	for k, v := range opts {
		if bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			delete(opts, k) // null: leave that option as it is
			continue
		}
		switch k {
		case "max_in_flight", "failure_policy", "tolerated_failures", "tolerated_failure_percent":
		default:
			return u, Errorf(CodeInvalidRequest, "options.%s: cannot be changed while a batch runs (changeable: max_in_flight, failure_policy, tolerated_failures, tolerated_failure_percent)", k)
		}
	}
	if len(opts) == 0 {
		if u.Paused != nil {
			return u, nil
		}
		return u, Errorf(CodeInvalidRequest, nothing)
	}
	raw, _ := json.Marshal(opts)
	o, e := decodeOptions(raw)
	if e != nil {
		return u, e
	}
	if e := o.validate(Limits{}); e != nil {
		return u, e
	}
	if _, ok := opts["max_in_flight"]; ok {
		u.Options.MaxInFlight = &o.MaxInFlight
	}
	if _, ok := opts["failure_policy"]; ok {
		u.Options.FailurePolicy = &o.FailurePolicy
	}
	u.Options.ToleratedFailures = o.ToleratedFailures
	u.Options.ToleratedFailurePercent = o.ToleratedFailurePercent
	return u, nil
}

// DecodeRedriveRequest parses a fanout.redrive body.
func DecodeRedriveRequest(data []byte) (RedriveRequest, *Error) {
	var r RedriveRequest
	fields, e := decodeObject(data, "request")
	if e != nil {
		e.Code = CodeInvalidJSON
		return r, e
	}
	for _, k := range sortedKeys(fields) {
		var err error
		switch k {
		case "batch_id":
			err = decodeString(fields[k], &r.BatchID)
		case "id":
			err = decodeString(fields[k], &r.ID)
		default:
			return r, Errorf(CodeInvalidRequest, "%s: unknown field (known: batch_id, id)", k)
		}
		if err != nil {
			return r, Errorf(CodeInvalidRequest, "%s: %v", k, err)
		}
	}
	if !ValidToken(r.BatchID) {
		return r, Errorf(CodeInvalidRequest, "batch_id: %q is not a batch id", r.BatchID)
	}
	if r.ID != "" && !ValidToken(r.ID) {
		return r, Errorf(CodeInvalidRequest, "id: %q must be 1-64 characters of A-Z a-z 0-9 _ -", r.ID)
	}
	return r, nil
}

func (o Options) validate(lim Limits) *Error {
	if o.MaxInFlight < 0 || o.MaxInFlight > MaxMaxInFlight {
		return Errorf(CodeInvalidRequest, "options.max_in_flight: %d is out of range (1 to %d)", o.MaxInFlight, MaxMaxInFlight)
	}
	if o.ItemsPerMessage < 0 || o.ItemsPerMessage > MaxItemsPerMessage {
		return Errorf(CodeInvalidRequest, "options.items_per_message: %d is out of range (1 to %d)", o.ItemsPerMessage, MaxItemsPerMessage)
	}
	if o.MaxAttempts < 0 || o.MaxAttempts > MaxMaxAttempts {
		return Errorf(CodeInvalidRequest, "options.max_attempts: %d is out of range (1 to %d)", o.MaxAttempts, MaxMaxAttempts)
	}
	if len(o.Backoff) > MaxBackoffLen {
		return Errorf(CodeInvalidRequest, "options.backoff: %d entries, at most %d", len(o.Backoff), MaxBackoffLen)
	}
	for i, b := range o.Backoff {
		if b < 0 || b.Std() > MaxDuration {
			return Errorf(CodeInvalidRequest, "options.backoff[%d]: %s is out of range (0 to %s)", i, b.Std(), MaxDuration)
		}
	}
	if o.ItemTimeout != 0 && o.ItemTimeout.Std() < time.Millisecond {
		return Errorf(CodeInvalidRequest, "options.item_timeout: %s is below the 1ms resolution", o.ItemTimeout.Std())
	}
	if o.Timeout != 0 && o.Timeout.Std() < time.Millisecond {
		return Errorf(CodeInvalidRequest, "options.timeout: %s is below the 1ms resolution", o.Timeout.Std())
	}
	if o.ItemTimeout < 0 || o.ItemTimeout.Std() > MaxDuration {
		return Errorf(CodeInvalidRequest, "options.item_timeout: %s is out of range (1ms to %s)", o.ItemTimeout.Std(), MaxDuration)
	}
	maxTimeout := MaxDuration
	if lim.MaxTimeout > 0 {
		maxTimeout = lim.MaxTimeout
	}
	if o.Timeout < 0 || o.Timeout.Std() > maxTimeout {
		return Errorf(CodeInvalidRequest, "options.timeout: %s is out of range (1ms to %s, the retention of results)", o.Timeout.Std(), maxTimeout)
	}
	switch o.FailurePolicy {
	case "", FailureContinue, FailureFast:
	default:
		return Errorf(CodeInvalidRequest, "options.failure_policy: %q is not one of \"continue\", \"fail_fast\"", o.FailurePolicy)
	}
	if o.ToleratedFailures != nil && *o.ToleratedFailures < 0 {
		return Errorf(CodeInvalidRequest, "options.tolerated_failures: %d must not be negative", *o.ToleratedFailures)
	}
	if p := o.ToleratedFailurePercent; p != nil && (*p < 0 || *p > 100) {
		return Errorf(CodeInvalidRequest, "options.tolerated_failure_percent: %g is out of range (0 to 100)", *p)
	}
	return nil
}

func decodeOptions(raw json.RawMessage) (Options, *Error) {
	var o Options
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return o, nil
	}
	fields, e := decodeObject(raw, "options")
	if e != nil {
		return o, e
	}
	for _, k := range sortedKeys(fields) {
		raw := fields[k]
		if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			continue // null means left out: the default
		}
		var err error
		switch k {
		case "max_in_flight":
			err = decodeInt(raw, &o.MaxInFlight, 1)
		case "max_attempts":
			err = decodeInt(raw, &o.MaxAttempts, 1)
		case "items_per_message":
			err = decodeInt(raw, &o.ItemsPerMessage, 1)
		case "backoff":
			err = json.Unmarshal(raw, &o.Backoff)
			if err != nil {
				err = fmt.Errorf("must be an array of duration strings such as [\"1s\", \"5s\"]")
			}
		case "item_timeout":
			err = decodeDuration(raw, &o.ItemTimeout)
		case "timeout":
			err = decodeDuration(raw, &o.Timeout)
		case "failure_policy":
			var s string
			err = decodeString(raw, &s)
			o.FailurePolicy = FailurePolicy(s)
		case "tolerated_failures":
			var n int
			err = decodeInt(raw, &n, 0)
			o.ToleratedFailures = &n
		case "tolerated_failure_percent":
			var f float64
			if err = json.Unmarshal(raw, &f); err != nil {
				err = fmt.Errorf("must be a number from 0 to 100")
			}
			o.ToleratedFailurePercent = &f
		default:
			return o, Errorf(CodeInvalidRequest, "options.%s: unknown option (known: max_in_flight, items_per_message, max_attempts, backoff, item_timeout, timeout, failure_policy, tolerated_failures, tolerated_failure_percent)", k)
		}
		if err != nil {
			return o, Errorf(CodeInvalidRequest, "options.%s: %v", k, err)
		}
	}
	return o, nil
}

func decodeObjectRef(raw json.RawMessage, name string) (*ObjectRef, *Error) {
	fields, e := decodeObject(raw, name)
	if e != nil {
		return nil, e
	}
	var r ObjectRef
	for k, v := range fields {
		var err error
		switch k {
		case "bucket":
			err = decodeString(v, &r.Bucket)
		case "name":
			err = decodeString(v, &r.Name)
		default:
			return nil, Errorf(CodeInvalidRequest, "%s.%s: unknown field (known: bucket, name)", name, k)
		}
		if err != nil {
			return nil, Errorf(CodeInvalidRequest, "%s.%s: %v", name, k, err)
		}
	}
	if r.Name == "" {
		return nil, Errorf(CodeInvalidRequest, "%s.name: is required (the object's name)", name)
	}
	if r.Bucket != "" && !ValidToken(r.Bucket) {
		return nil, Errorf(CodeInvalidRequest, "%s.bucket: %q is not a bucket name", name, r.Bucket)
	}
	return &r, nil
}

func decodeStep(raw json.RawMessage, name string) (*StepSpec, *Error) {
	fields, e := decodeObject(raw, name)
	if e != nil {
		return nil, e
	}
	var s StepSpec
	for k, v := range fields {
		switch k {
		case "activity":
			if err := decodeString(v, &s.Activity); err != nil {
				return nil, Errorf(CodeInvalidRequest, "%s.activity: %v", name, err)
			}
		case "input":
			if e := checkDepth(v, name+".input"); e != nil {
				return nil, e
			}
			s.Input = v
		default:
			return nil, Errorf(CodeInvalidRequest, "%s.%s: unknown field (known: activity, input)", name, k)
		}
	}
	if !ValidToken(s.Activity) {
		return nil, Errorf(CodeInvalidRequest, "%s.activity: %q must be 1-64 characters of A-Z a-z 0-9 _ -", name, s.Activity)
	}
	return &s, nil
}

func decodeObject(raw []byte, what string) (map[string]json.RawMessage, *Error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return nil, Errorf(CodeInvalidRequest, "%s: empty body; send a JSON object", what)
	}
	if trimmed[0] != '{' {
		if !json.Valid(trimmed) {
			return nil, Errorf(CodeInvalidRequest, "%s: not valid JSON; send a JSON object", what)
		}
		return nil, Errorf(CodeInvalidRequest, "%s: must be a JSON object, got %s", what, jsonKind(trimmed))
	}
	// Decode is several times faster on a large batch; encoding/json
	// words the error (FuzzDecodeMatchesEncodingJSON: both accept the same).
	var fields map[string]json.RawMessage
	if Decode(trimmed, &fields) != nil {
		err := json.Unmarshal(trimmed, &fields)
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return nil, Errorf(CodeInvalidRequest, "%s: not valid JSON: %v", what, strings.TrimPrefix(err.Error(), "json: "))
	}
	return fields, nil
}

func decodeItems(raw json.RawMessage, items *[]json.RawMessage) error {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '[' {
		return fmt.Errorf("must be a JSON array of item inputs, got %s", jsonKind(trimmed))
	}
	if err := Decode(trimmed, items); err != nil {
		return fmt.Errorf("must be a JSON array of item inputs")
	}
	if *items == nil {
		*items = []json.RawMessage{}
	}
	return nil
}

func decodeString(raw json.RawMessage, s *string) error {
	if err := json.Unmarshal(raw, s); err != nil {
		return fmt.Errorf("must be a string, got %s", jsonKind(raw))
	}
	return nil
}

func decodeInt(raw json.RawMessage, n *int, min int) error {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return fmt.Errorf("must be a whole number, got %s", jsonKind(raw))
	}
	if f != float64(int64(f)) || f > 1<<31 || f < -(1<<31) {
		return fmt.Errorf("must be a whole number, got %s", bytes.TrimSpace(raw))
	}
	*n = int(f)
	if *n < min {
		return fmt.Errorf("%d must be at least %d", *n, min)
	}
	return nil
}

func decodeDuration(raw json.RawMessage, d *Duration) error {
	if err := d.UnmarshalJSON(raw); err != nil {
		return err
	}
	if *d <= 0 {
		return fmt.Errorf("%s must be positive", d.Std())
	}
	return nil
}

func jsonKind(raw []byte) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
