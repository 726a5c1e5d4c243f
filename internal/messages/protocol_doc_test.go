package messages_test

// These tests keep docs/protocol.md and docs/schemas/*.schema.json true to
// the Go types of the wire contract:
//
//   - every ```json block of the page is preceded by a marker comment
//     naming its schema, e.g. <!-- schema: batch-request -->;
//   - each example decodes into its Go type with unknown fields refused,
//     validates against its schema, and still validates once re-encoded by
//     the Go type; a batch request must also pass DecodeBatchRequest;
//   - every schema is valid draft 2020-12, has at least one example on the
//     page, and names exactly the JSON fields of its Go type (recursively);
//   - the names, error codes and option defaults the page states are the
//     ones the code uses.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/fanoutdev/fanout/internal/messages"
)

const (
	protocolDocPath   = "../../docs/protocol.md"
	protocolSchemaDir = "../../docs/schemas"
	// protocolNATSAPI marks a block that is a NATS server API body, not a
	// fanout message: it is only checked to be valid JSON.
	protocolNATSAPI = "nats-api"
)

// protocolTypes maps each schema name to the Go type of its message.
var protocolTypes = map[string]reflect.Type{
	"batch-request":   reflect.TypeFor[messages.BatchRequest](),
	"submit-reply":    reflect.TypeFor[messages.SubmitReply](),
	"error-reply":     reflect.TypeFor[messages.ErrorReply](),
	"batch-ref":       reflect.TypeFor[messages.BatchRef](),
	"update-request":  reflect.TypeFor[messages.UpdateRequest](),
	"redrive-request": reflect.TypeFor[messages.RedriveRequest](),
	"progress":        reflect.TypeFor[messages.Progress](),
	"work":            reflect.TypeFor[messages.WorkMessage](),
	"result":          reflect.TypeFor[messages.ResultMessage](),
	"aggregate":       reflect.TypeFor[messages.Aggregate](),
	"batch-state":     reflect.TypeFor[messages.BatchState](),
}

// protocolLimits are the coordinator's default limits.
var protocolLimits = messages.Limits{MaxItems: 1_000_000, MaxTimeout: 7 * 24 * time.Hour}

var allErrorCodes = []string{
	messages.CodeInvalidJSON, messages.CodeInvalidRequest, messages.CodeUnknownActivity,
	messages.CodeTooLarge, messages.CodeNotFound, messages.CodeUnsupported,
	messages.CodeUnavailable, messages.CodeInternal,
}

type protocolExample struct {
	schema string
	line   int // 1-based line of the opening fence
	body   string
}

func (e protocolExample) String() string {
	return fmt.Sprintf("protocol.md:%d (%s)", e.line, e.schema)
}

func readProtocolDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(protocolDocPath)
	if err != nil {
		t.Fatalf("read the protocol page: %v", err)
	}
	return string(b)
}

var schemaMarker = regexp.MustCompile(`^<!--\s*schema:\s*([a-z0-9-]+)\s*-->$`)

// protocolExamples returns the page's marked ```json blocks and fails the
// test for a json block without a marker or a marker without a json block.
func protocolExamples(t *testing.T, doc string) []protocolExample {
	t.Helper()
	var (
		out        []protocolExample
		marker     string
		markerLine int
	)
	lines := strings.Split(doc, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if m := schemaMarker.FindStringSubmatch(line); m != nil {
			if marker != "" {
				t.Errorf("protocol.md:%d: marker %q is not followed by a ```json block", markerLine, marker)
			}
			marker, markerLine = m[1], i+1
			continue
		}
		if !strings.HasPrefix(line, "```") {
			if line != "" && marker != "" {
				t.Errorf("protocol.md:%d: marker %q must be followed by a ```json block", markerLine, marker)
				marker = ""
			}
			continue
		}
		lang, start := strings.TrimPrefix(line, "```"), i
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("protocol.md:%d: code block never closed", start+1)
		}
		switch {
		case lang == "json" && marker == "":
			t.Errorf("protocol.md:%d: ```json block without a <!-- schema: NAME --> marker on the line before", start+1)
		case lang == "json":
			out = append(out, protocolExample{schema: marker, line: start + 1, body: strings.Join(body, "\n")})
		case marker != "":
			t.Errorf("protocol.md:%d: marker %q is followed by a ```%s block, not ```json", markerLine, marker, lang)
		}
		marker = ""
	}
	if marker != "" {
		t.Errorf("protocol.md:%d: marker %q at the end of the page", markerLine, marker)
	}
	return out
}

// protocolSchemas compiles every schema file, keyed by schema name.
func protocolSchemas(t *testing.T) (map[string]*jsonschema.Schema, map[string]map[string]any) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(protocolSchemaDir, "*.schema.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no schema files in %s (%v)", protocolSchemaDir, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	raw := map[string]map[string]any{}
	paths := map[string]string{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".schema.json")
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: not JSON: %v", f, err)
		}
		obj, ok := doc.(map[string]any)
		if !ok {
			t.Fatalf("%s: not a JSON object", f)
		}
		if got := obj["$schema"]; got != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema is %v, want draft 2020-12", f, got)
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddResource(abs, doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		raw[name], paths[name] = obj, abs
	}
	compiled := map[string]*jsonschema.Schema{}
	for name, p := range paths {
		s, err := c.Compile(p)
		if err != nil {
			t.Errorf("schema %s is not valid: %v", name, err)
			continue
		}
		compiled[name] = s
	}
	return compiled, raw
}

func TestProtocolSchemasCoverEveryMessageType(t *testing.T) {
	t.Parallel()
	compiled, _ := protocolSchemas(t)
	for name := range compiled {
		if _, ok := protocolTypes[name]; !ok {
			t.Errorf("schema %s.schema.json has no Go type in this test; add it to protocolTypes", name)
		}
	}
	for name := range protocolTypes {
		if _, ok := compiled[name]; !ok {
			t.Errorf("message type %s has no schema file %s.schema.json", name, name)
		}
	}
}

func TestProtocolDocExamples(t *testing.T) {
	t.Parallel()
	doc := readProtocolDoc(t)
	examples := protocolExamples(t, doc)
	compiled, _ := protocolSchemas(t)
	seen := map[string]int{}
	for _, ex := range examples {
		seen[ex.schema]++
		if !json.Valid([]byte(ex.body)) {
			t.Errorf("%s: not valid JSON", ex)
			continue
		}
		if ex.schema == protocolNATSAPI {
			continue
		}
		typ, ok := protocolTypes[ex.schema]
		sch := compiled[ex.schema]
		if !ok || sch == nil {
			t.Errorf("%s: no such schema (have %s)", ex, strings.Join(slices.Sorted(maps.Keys(protocolTypes)), ", "))
			continue
		}
		checkProtocolExample(t, ex, typ, sch)
	}
	for name := range protocolTypes {
		if seen[name] == 0 {
			t.Errorf("schema %s has no example on the protocol page", name)
		}
	}
}

func checkProtocolExample(t *testing.T, ex protocolExample, typ reflect.Type, sch *jsonschema.Schema) {
	t.Helper()
	// Into the Go type, unknown fields refused.
	v := reflect.New(typ)
	dec := json.NewDecoder(strings.NewReader(ex.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v.Interface()); err != nil {
		t.Errorf("%s: does not decode into %s: %v", ex, typ, err)
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Errorf("%s: more than one JSON value in the block", ex)
	}
	// Against the schema.
	validateAgainst(t, ex.String(), sch, ex.body)
	// What the Go type writes for it is valid too.
	again, err := json.Marshal(v.Interface())
	if err != nil {
		t.Errorf("%s: re-encode: %v", ex, err)
		return
	}
	validateAgainst(t, ex.String()+" re-encoded by "+typ.String(), sch, string(again))

	switch ex.schema {
	case "batch-request":
		if _, e := messages.DecodeBatchRequest([]byte(ex.body), protocolLimits); e != nil {
			t.Errorf("%s: the coordinator would refuse it: %v", ex, e)
		}
	case "batch-ref":
		if _, e := messages.DecodeBatchRef([]byte(ex.body)); e != nil {
			t.Errorf("%s: the coordinator would refuse it: %v", ex, e)
		}
	case "update-request":
		if _, e := messages.DecodeUpdateRequest([]byte(ex.body)); e != nil {
			t.Errorf("%s: the coordinator would refuse it: %v", ex, e)
		}
	case "redrive-request":
		if _, e := messages.DecodeRedriveRequest([]byte(ex.body)); e != nil {
			t.Errorf("%s: the coordinator would refuse it: %v", ex, e)
		}
	case "error-reply":
		r := v.Interface().(*messages.ErrorReply)
		if r.Error == nil || !slices.Contains(allErrorCodes, r.Error.Code) {
			t.Errorf("%s: not an error code of internal/messages: %+v", ex, r.Error)
		}
	case "aggregate":
		a := v.Interface().(*messages.Aggregate)
		if a.NotRun != a.Total-a.Succeeded-a.Failed {
			t.Errorf("%s: not_run %d, want total - succeeded - failed = %d", ex, a.NotRun, a.Total-a.Succeeded-a.Failed)
		}
		if a.Results != nil && len(a.Results) != a.Total {
			t.Errorf("%s: %d results for %d items", ex, len(a.Results), a.Total)
		}
		for i, r := range a.Results {
			if r.Item != i {
				t.Errorf("%s: results[%d] is item %d; results are in item order", ex, i, r.Item)
			}
		}
	case "progress":
		p := v.Interface().(*messages.Progress)
		if p.Done != p.Succeeded+p.Failed {
			t.Errorf("%s: done %d, want succeeded + failed = %d", ex, p.Done, p.Succeeded+p.Failed)
		}
	}
}

func validateAgainst(t *testing.T, what string, sch *jsonschema.Schema, body string) {
	t.Helper()
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(body))
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("%s: does not validate against its schema:\n%v", what, err)
	}
}

// TestProtocolSchemasMatchGoTypes compares each schema's properties with the
// JSON fields of its Go type, recursively: a field added to one and not the
// other fails here. Fields the Go type always writes must be required.
func TestProtocolSchemasMatchGoTypes(t *testing.T) {
	t.Parallel()
	_, raw := protocolSchemas(t)
	for name, typ := range protocolTypes {
		root, ok := raw[name]
		if !ok {
			continue // reported by TestProtocolSchemasCoverEveryMessageType
		}
		compareSchemaWithType(t, name, name, root, root, typ)
	}
}

var (
	rawMessageType = reflect.TypeFor[json.RawMessage]()
	timeType       = reflect.TypeFor[time.Time]()
)

func compareSchemaWithType(t *testing.T, schema, path string, root, node map[string]any, typ reflect.Type) {
	t.Helper()
	node = resolveSchemaNode(t, schema, path, root, node)
	if node == nil {
		return
	}
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch {
	case typ == rawMessageType || typ == timeType:
		return
	case typ.Kind() == reflect.Slice:
		if items, ok := node["items"].(map[string]any); ok {
			compareSchemaWithType(t, schema, path+"[]", root, items, typ.Elem())
		}
		return
	case typ.Kind() != reflect.Struct:
		return
	}
	props, _ := node["properties"].(map[string]any)
	fields := jsonFields(typ)
	for name := range props {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s: schema property %s.%s is not a field of %s", schema, path, name, typ)
		}
	}
	required := map[string]bool{}
	if req, ok := node["required"].([]any); ok {
		for _, r := range req {
			required[r.(string)] = true
		}
	}
	for name := range required {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s: %s requires %q, which %s does not have", schema, path, name, typ)
		}
	}
	for name, f := range fields {
		if props[name] == false {
			continue // a field the schema forbids here (a request refuses it)
		}
		sub, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("%s: field %s of %s (%s.%s) is missing from the schema", schema, f.Name, typ, path, name)
			continue
		}
		if !f.omitEmpty && !required[name] {
			t.Errorf("%s: %s.%s is always written by %s, so the schema should require it", schema, path, name, typ)
		}
		compareSchemaWithType(t, schema, path+"."+name, root, sub, f.Type)
	}
}

// resolveSchemaNode follows a local $ref and picks the non-null branch of
// an anyOf, as in {"anyOf": [{"type": "null"}, {"$ref": ...}]}.
func resolveSchemaNode(t *testing.T, schema, path string, root, node map[string]any) map[string]any {
	t.Helper()
	for range 10 {
		if ref, ok := node["$ref"].(string); ok {
			name, found := strings.CutPrefix(ref, "#/$defs/")
			defs, _ := root["$defs"].(map[string]any)
			def, ok := defs[name].(map[string]any)
			if !found || !ok {
				t.Errorf("%s: %s: $ref %q does not name a local definition", schema, path, ref)
				return nil
			}
			node = def
			continue
		}
		if branches, ok := node["anyOf"].([]any); ok {
			var next map[string]any
			for _, b := range branches {
				if bm, ok := b.(map[string]any); ok && bm["type"] != "null" {
					next = bm
				}
			}
			if next == nil {
				return node
			}
			node = next
			continue
		}
		return node
	}
	t.Errorf("%s: %s: $ref chain too long", schema, path)
	return nil
}

type jsonField struct {
	reflect.StructField
	omitEmpty bool
}

func jsonFields(typ reflect.Type) map[string]jsonField {
	out := map[string]jsonField{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		omit := slices.ContainsFunc(strings.Split(opts, ","), func(o string) bool { return o == "omitempty" || o == "omitzero" })
		out[name] = jsonField{StructField: f, omitEmpty: omit}
	}
	return out
}

// TestProtocolDocNames checks that the page states the names the code
// builds, with the default prefix.
func TestProtocolDocNames(t *testing.T) {
	t.Parallel()
	doc := readProtocolDoc(t)
	n := messages.MustNames(messages.DefaultPrefix)
	for _, name := range []string{
		n.Submit(), n.Status(), n.Cancel(), n.Update(), n.Redrive(), n.CoordinatorQueue(),
		n.Work("<activity>", "<batch>"), n.WorkActivityFilter("<activity>"), n.WorkAll(), n.WorkKeeper(),
		n.ResultBatchFilter("<batch>"), n.ResultAll(), n.Prefix + ".result.<batch>.<item>",
		n.Progress("<batch>"), n.Done("<batch>"), n.DoneAll(),
		n.Token("<batch>"), n.TokenAll(), n.ControlAll(), n.Poke("<batch>"),
		n.WorkStream(), n.ResultsStream(), n.DoneStream(), n.ControlStream(),
		n.BatchesBucket(), n.BlobBucket(),
		n.CoordinatorConsumer(), n.WorkConsumer("<activity>"),
		messages.WorkMsgID("<batch>", 0)[:len("<batch>/")] + "<item>",
		n.StepResult("<batch>", messages.StepSource), n.StepResult("<batch>", messages.StepReduce),
		n.PurgeBatchWork("<batch>"),
		messages.StepMsgID("<batch>", messages.StepSource), messages.StepMsgID("<batch>", messages.StepReduce),
		messages.TokenMsgID("<batch>"), messages.DoneMsgID("<batch>"),
		messages.IdempotencyKey("<batch>", 0)[:len("<batch>/")] + "<item>",
	} {
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("protocol.md does not mention `%s`", name)
		}
	}
	// The prefix rule for store names.
	p := messages.MustNames("acme_prod")
	if !strings.Contains(doc, "`"+p.Prefix+".submit`") || !strings.Contains(doc, "`"+p.WorkStream()+"`") {
		t.Errorf("protocol.md should show the prefix rule with acme_prod: `%s`, `%s`", p.Submit(), p.WorkStream())
	}
}

// TestProtocolDocErrorCodes checks that the error table lists every code
// and the error-reply schema allows exactly them.
func TestProtocolDocErrorCodes(t *testing.T) {
	t.Parallel()
	doc := readProtocolDoc(t)
	for _, code := range allErrorCodes {
		if !strings.Contains(doc, "\n| `"+code+"` |") {
			t.Errorf("protocol.md: the error table has no row for `%s`", code)
		}
	}
	_, raw := protocolSchemas(t)
	props := raw["error-reply"]["properties"].(map[string]any)["error"].(map[string]any)["properties"].(map[string]any)
	var enum []string
	for _, c := range props["code"].(map[string]any)["enum"].([]any) {
		enum = append(enum, c.(string))
	}
	if !slices.Equal(slices.Sorted(slices.Values(enum)), slices.Sorted(slices.Values(allErrorCodes))) {
		t.Errorf("error-reply schema codes %v, want %v", enum, allErrorCodes)
	}
}

// TestProtocolDocOptions checks the options table and the schema's
// defaults and bounds against the constants of validate.go.
func TestProtocolDocOptions(t *testing.T) {
	t.Parallel()
	doc := readProtocolDoc(t)
	var backoff []string
	for _, b := range messages.DefaultBackoff {
		backoff = append(backoff, `"`+b.Std().String()+`"`)
	}
	rows := map[string][]string{
		"max_in_flight":     {thousands(messages.DefaultMaxInFlight), "1 – " + thousands(messages.MaxMaxInFlight)},
		"max_attempts":      {thousands(messages.DefaultMaxAttempts), "1 – " + thousands(messages.MaxMaxAttempts)},
		"items_per_message": {"| auto |", "1 – " + thousands(messages.MaxItemsPerMessage)},
		"backoff":           {"[" + strings.Join(backoff, ",") + "]", fmt.Sprintf("at most %d entries", messages.MaxBackoffLen), shortDuration(messages.MaxDuration)},
		"item_timeout":      {"`" + shortDuration(messages.DefaultItemTimeout) + "`", shortDuration(messages.MaxDuration)},
	}
	for opt, want := range rows {
		row := tableRow(doc, "`"+opt+"`")
		if row == "" {
			t.Errorf("protocol.md: no table row for option `%s`", opt)
			continue
		}
		for _, w := range want {
			if !strings.Contains(row, w) {
				t.Errorf("protocol.md: the row of `%s` should say %s:\n%s", opt, w, row)
			}
		}
	}

	_, raw := protocolSchemas(t)
	opts := raw["batch-request"]["$defs"].(map[string]any)["options"].(map[string]any)["properties"].(map[string]any)
	num := func(opt, key string) any { return opts[opt].(map[string]any)[key] }
	for _, c := range []struct {
		opt, key string
		want     int
	}{
		{"max_in_flight", "default", messages.DefaultMaxInFlight},
		{"max_in_flight", "maximum", messages.MaxMaxInFlight},
		{"max_attempts", "default", messages.DefaultMaxAttempts},
		{"max_attempts", "maximum", messages.MaxMaxAttempts},
		{"backoff", "maxItems", messages.MaxBackoffLen},
		{"items_per_message", "maximum", messages.MaxItemsPerMessage},
	} {
		if got := fmt.Sprint(num(c.opt, c.key)); got != fmt.Sprint(c.want) {
			t.Errorf("batch-request schema: options.%s %s is %s, want %d", c.opt, c.key, got, c.want)
		}
	}
	if d, err := time.ParseDuration(fmt.Sprint(num("item_timeout", "default"))); err != nil || d != messages.DefaultItemTimeout {
		t.Errorf("batch-request schema: options.item_timeout default %v, want %s", num("item_timeout", "default"), messages.DefaultItemTimeout)
	}
}

// tableRow returns the Markdown table row whose first cell is cell.
func tableRow(doc, cell string) string {
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "| "+cell+" |") {
			return line
		}
	}
	return ""
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// shortDuration writes 5m0s as 5m and 720h0m0s as 720h.
func shortDuration(d time.Duration) string {
	s := d.String()
	for _, suffix := range []string{"0s", "0m"} {
		if strings.HasSuffix(s, "m"+suffix) || strings.HasSuffix(s, "h"+suffix) {
			s = strings.TrimSuffix(s, suffix)
		}
	}
	return s
}
