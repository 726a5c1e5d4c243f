// Command rawworker is a fanout worker written without fanout's worker
// SDK, with the NATS client alone: the reference for a worker in another
// language. It follows docs/protocol.md, "Writing a worker in any
// language", step by step, using only what every NATS client has (publish,
// subscribe, request) plus an object store client for claim checks, and
// serves one activity with the conformance handler, so that
// `fanout conformance --activity NAME` can prove it:
//
//	go run ./examples/rawworker -activity conformance -ack-wait 1s &
//	fanout conformance --activity conformance
//
// Each comment names the rule of the protocol page it follows.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Wire types (docs/protocol.md "Work message", "Result message").
type workItem struct {
	Item     int             `json:"item"`
	Input    json.RawMessage `json:"input,omitempty"`
	InputRef *objectRef      `json:"input_ref,omitempty"`
}

type workMessage struct {
	BatchID       string          `json:"batch_id"`
	Item          int             `json:"item"`
	Input         json.RawMessage `json:"input,omitempty"`
	InputRef      *objectRef      `json:"input_ref,omitempty"`
	Attempt       int             `json:"attempt"`
	Step          string          `json:"step,omitempty"`
	Items         []workItem      `json:"items,omitempty"`
	Unpack        bool            `json:"unpack,omitempty"`
	MaxAttempts   int             `json:"max_attempts"`
	BackoffMS     []int64         `json:"backoff_ms,omitempty"`
	ItemTimeoutMS int64           `json:"item_timeout_ms"`
}

type objectRef struct {
	Bucket string `json:"bucket,omitempty"`
	Name   string `json:"name"`
	Size   uint64 `json:"size,omitempty"`
	Digest string `json:"digest,omitempty"`
}

type result struct {
	BatchID    string          `json:"batch_id"`
	Item       int             `json:"item"`
	Step       string          `json:"step,omitempty"`
	OK         bool            `json:"ok"`
	Output     json.RawMessage `json:"output,omitempty"`
	OutputRef  *objectRef      `json:"output_ref,omitempty"`
	Error      string          `json:"error,omitempty"`
	Attempts   int             `json:"attempts"`
	Worker     string          `json:"worker,omitempty"`
	DurationMS float64         `json:"duration_ms"`
	Unpack     *unpack         `json:"unpack,omitempty"`
}

type unpack struct {
	Attempt int `json:"attempt"`
}

// claimCheckBytes: outputs larger than this go to the object store
// ("Big payloads: claim checks").
const claimCheckBytes = 256 * 1024

type worker struct {
	nc       *nats.Conn
	js       jetstream.JetStream // for the object store only
	prefix   string
	upper    string // the prefix in upper case: stream and bucket names
	activity string
	name     string
	ackWait  time.Duration
}

func main() {
	w := &worker{}
	server := flag.String("server", envOr("NATS_URL", nats.DefaultURL), "NATS server URL ($NATS_URL)")
	flag.StringVar(&w.prefix, "prefix", envOr("FANOUT_PREFIX", "fanout"), "fanout subject prefix ($FANOUT_PREFIX)")
	flag.StringVar(&w.activity, "activity", "conformance", "activity to serve with the conformance handler")
	flag.StringVar(&w.name, "name", "rawworker", "worker name, in results")
	flag.DurationVar(&w.ackWait, "ack-wait", 30*time.Second, "ack wait of the activity's consumer")
	flag.Parse()
	w.upper = strings.ToUpper(w.prefix)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(*server, nats.Name("fanout rawworker"), nats.MaxReconnects(-1))
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	w.nc = nc
	if w.js, err = jetstream.New(nc); err != nil {
		log.Fatal(err)
	}
	if err := w.createConsumer(); err != nil {
		log.Fatalf("consumer: %v", err)
	}
	log.Printf("serving activity %q on %s", w.activity, *server)
	if err := w.pull(ctx); err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// createConsumer creates (or updates) the activity's shared durable pull
// consumer with a request to the JetStream API ("The consumer").
func (w *worker) createConsumer() error {
	durable := "work-" + w.activity
	filter := w.prefix + ".work." + w.activity + ".>"
	body, _ := json.Marshal(map[string]any{
		"stream_name": w.upper + "_WORK",
		"config": map[string]any{
			"durable_name":    durable,
			"filter_subject":  filter,
			"ack_policy":      "explicit",
			"ack_wait":        w.ackWait.Nanoseconds(),
			"max_deliver":     -1,
			"max_ack_pending": 20000,
			"deliver_policy":  "all",
			"replay_policy":   "instant",
		},
	})
	reply, err := w.nc.Request("$JS.API.CONSUMER.CREATE."+w.upper+"_WORK."+durable+"."+filter, body, 5*time.Second)
	if err != nil {
		return err
	}
	var r struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &r); err != nil {
		return err
	}
	if r.Error != nil {
		return errors.New(r.Error.Description)
	}
	return nil
}

// pull asks for one message at a time and handles what the server sends
// to the request's inbox ("Pull requests and their status messages"): a
// work message, or a status message with no body and a Status header.
func (w *worker) pull(ctx context.Context) error {
	const expires, idle = 5 * time.Second, time.Second
	inbox := w.nc.NewInbox()
	msgs := make(chan *nats.Msg, 16)
	sub, err := w.nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	next := "$JS.API.CONSUMER.MSG.NEXT." + w.upper + "_WORK.work-" + w.activity
	req := fmt.Sprintf(`{"batch":1,"expires":%d,"idle_heartbeat":%d}`, expires.Nanoseconds(), idle.Nanoseconds())
	for ctx.Err() == nil {
		if err := w.nc.PublishRequest(next, inbox, []byte(req)); err != nil {
			return err
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(2*idle + time.Second):
				break wait // no heartbeat: the request was lost (a reconnect); ask again
			case m := <-msgs:
				switch status := m.Header.Get("Status"); {
				case status == "" || len(m.Data) > 0:
					w.handle(m) // the one message asked for: the request is done
					break wait
				case status == "100":
					continue // idle heartbeat: the request still waits
				case status == "404", status == "408":
					break wait // no messages / the request expired: ask again
				case status == "409":
					// The server ended the request (consumer deleted,
					// leadership change, too many waiting requests...).
					log.Printf("pull request ended: %s", m.Header.Get("Description"))
					if strings.Contains(m.Header.Get("Description"), "Consumer Deleted") {
						return errors.New("the activity's consumer was deleted")
					}
					time.Sleep(time.Second)
					break wait
				default:
					log.Printf("pull request: status %s %s", status, m.Header.Get("Description"))
					break wait
				}
			}
		}
	}
	return nil
}

// delivered is the delivery count from a message's ack subject ("Attempts"):
// $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp>.<pending>
// or, with a domain and account hash, 11 or more tokens with it 7th.
func delivered(ackSubject string) (int, bool) {
	t := strings.Split(ackSubject, ".")
	i := 4
	switch {
	case len(t) < 9 || t[0] != "$JS" || t[1] != "ACK":
		return 0, false
	case len(t) >= 11:
		i = 6
	}
	n, err := strconv.Atoi(t[i])
	return n, err == nil
}

// handle runs one delivery ("What to do with a delivery").
func (w *worker) handle(m *nats.Msg) {
	var wm workMessage
	n, ok := delivered(m.Reply)
	if !ok || json.Unmarshal(m.Data, &wm) != nil || !validToken(wm.BatchID) {
		_ = m.Respond([]byte("+TERM")) // 1. unreadable: terminate it
		return
	}
	items := wm.Items
	if len(items) == 0 {
		items = []workItem{{Item: wm.Item, Input: wm.Input, InputRef: wm.InputRef}}
	}
	for _, it := range items {
		if it.Item < 0 {
			_ = m.Respond([]byte("+TERM"))
			return
		}
	}
	attempt := n + max(wm.Attempt, 1) - 1
	maxAttempts := max(wm.MaxAttempts, 1)

	if attempt > maxAttempts { // 2. every earlier delivery was lost: give up, do not run
		var rs []result
		for _, it := range items {
			rs = append(rs, result{BatchID: wm.BatchID, Item: it.Item, Step: wm.Step, Attempts: attempt - 1, Worker: w.name,
				Error: fmt.Sprintf("gave up after %d attempts: the worker running the item crashed or stopped answering each time", maxAttempts)})
		}
		w.settle(m, rs, -1)
		return
	}
	if len(items) > 1 && wm.Unpack && n > 1 { // a group delivered again: ask to unpack it ("Auto packing")
		w.settle(m, []result{{BatchID: wm.BatchID, Item: wm.Item, Attempts: attempt - 1, Worker: w.name, Unpack: &unpack{Attempt: attempt}}}, -1)
		return
	}

	// 3. Run, with a heartbeat every ack wait / 3 while the items run.
	stopBeat := w.heartbeat(m)
	var rs []result
	retry := time.Duration(-1)
	for _, it := range items {
		r, again := w.run(&wm, it, attempt, maxAttempts)
		if again >= 0 {
			retry = max(retry, again)
			continue
		}
		rs = append(rs, r)
	}
	stopBeat()
	w.settle(m, rs, retry)
}

// run runs one item and returns its result, or a retry delay >= 0.
func (w *worker) run(wm *workMessage, it workItem, attempt, maxAttempts int) (result, time.Duration) {
	r := result{BatchID: wm.BatchID, Item: it.Item, Step: wm.Step, Attempts: attempt, Worker: w.name}
	timeout := time.Duration(wm.ItemTimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	input, err := w.input(ctx, it)
	var out json.RawMessage
	var permanent bool
	if err == nil {
		// The idempotency key is <batch>/<item> ("Idempotency").
		out, permanent, err = conformance(ctx, input, attempt, wm.BatchID+"/"+strconv.Itoa(it.Item))
	}
	r.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	if err == nil && len(out) > claimCheckBytes {
		r.OutputRef, err = w.storeOutput(ctx, wm, it.Item, out)
		out = nil
	}
	switch {
	case err == nil:
		r.OK, r.Output = true, out
	case permanent || attempt >= maxAttempts: // 4. fail now
		r.Error = err.Error()
	default: // retry after the batch's backoff for this attempt
		delay := time.Duration(0)
		if len(wm.BackoffMS) > 0 {
			delay = time.Duration(wm.BackoffMS[min(attempt, len(wm.BackoffMS))-1]) * time.Millisecond
		}
		return r, delay
	}
	return r, -1
}

// heartbeat sends +WPI every ack wait / 3 until stopped.
func (w *worker) heartbeat(m *nats.Msg) (stop func()) {
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(w.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = m.Respond([]byte("+WPI"))
			}
		}
	}()
	return func() { close(done); <-ended }
}

// settle publishes the results, then acks once all are stored; with retry
// >= 0, it negatively acks with that delay instead, after storing the
// results of the items that finished ("Publishing the result, and acking").
func (w *worker) settle(m *nats.Msg, rs []result, retry time.Duration) {
	for _, r := range rs {
		if !w.publish(r) {
			_ = m.Respond([]byte(`-NAK {"delay": 1000000000}`)) // not stored: again in 1 s
			return
		}
	}
	if retry >= 0 {
		_ = m.Respond([]byte(fmt.Sprintf(`-NAK {"delay": %d}`, retry.Nanoseconds())))
		return
	}
	_ = m.Respond([]byte("+ACK"))
}

// publish stores a result with a JetStream publish (a request answered by
// a publish acknowledgement) and reports whether the item is recorded:
// stored now, or refused because it already has a result (10077, 10071).
func (w *worker) publish(r result) bool {
	subject := w.prefix + ".result." + r.BatchID + "." + strconv.Itoa(r.Item)
	switch {
	case r.Unpack != nil:
		subject += ".unpack"
	case r.Step != "":
		subject = w.prefix + ".result." + r.BatchID + "." + r.Step
	}
	data, _ := json.Marshal(r)
	if int64(len(data)) > w.nc.MaxPayload()-1024 {
		data, _ = json.Marshal(result{BatchID: r.BatchID, Item: r.Item, Step: r.Step, Attempts: r.Attempts, Worker: r.Worker,
			Error: fmt.Sprintf("result of %d bytes is larger than the server's max_payload", len(data))})
	}
	reply, err := w.nc.Request(subject, data, 5*time.Second)
	if err != nil {
		log.Printf("publish %s: %v", subject, err)
		return false
	}
	var ack struct {
		Stream string `json:"stream"`
		Error  *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return false
	}
	if ack.Error != nil {
		if ack.Error.ErrCode == 10077 || ack.Error.ErrCode == 10071 {
			return true // already recorded: exactly once
		}
		log.Printf("publish %s: %s", subject, ack.Error.Description)
		return false
	}
	return ack.Stream != ""
}

// input returns an item's input, from the object store for an input_ref,
// checked against the reference's size and digest.
func (w *worker) input(ctx context.Context, it workItem) (json.RawMessage, error) {
	if it.InputRef == nil {
		return it.Input, nil
	}
	bucket := it.InputRef.Bucket
	if bucket == "" {
		bucket = w.upper + "_BLOBS"
	}
	obs, err := w.js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, err
	}
	b, err := obs.GetBytes(ctx, it.InputRef.Name)
	if err != nil {
		return nil, err
	}
	if uint64(len(b)) != it.InputRef.Size || digest(b) != it.InputRef.Digest {
		return nil, fmt.Errorf("claim check: object %s is not the one referred to", it.InputRef.Name)
	}
	return b, nil
}

// storeOutput puts an output too large for a result into the object store.
func (w *worker) storeOutput(ctx context.Context, wm *workMessage, item int, out []byte) (*objectRef, error) {
	bucket := w.upper + "_BLOBS"
	name := fmt.Sprintf("payloads/%s/%d.out", wm.BatchID, item)
	if wm.Step != "" {
		name = fmt.Sprintf("payloads/%s/0.%s.out", wm.BatchID, wm.Step)
	}
	obs, err := w.js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, err
	}
	info, err := obs.PutBytes(ctx, name, out)
	if err != nil {
		return nil, err
	}
	return &objectRef{Bucket: bucket, Name: name, Size: info.Size, Digest: info.Digest}, nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:])
}

func validToken(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// conformance is the conformance handler ("Proving a worker"): the input
// says what to do. It returns the output, or an error and whether it is
// permanent.
func conformance(ctx context.Context, input json.RawMessage, attempt int, key string) (json.RawMessage, bool, error) {
	var in struct {
		SleepMS   int             `json:"sleep_ms"`
		Fail      string          `json:"fail"`
		Permanent bool            `json:"permanent"`
		Until     int             `json:"until"`
		Bytes     int             `json:"bytes"`
		Echo      json.RawMessage `json:"echo"`
	}
	if err := json.Unmarshal(input, &in); err != nil {
		return nil, true, fmt.Errorf("conformance input: %v", err)
	}
	if in.SleepMS > 0 {
		select {
		case <-time.After(time.Duration(in.SleepMS) * time.Millisecond):
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	switch {
	case in.Fail != "" && in.Permanent:
		return nil, true, errors.New(in.Fail)
	case in.Fail != "" && attempt < in.Until:
		return nil, false, errors.New(in.Fail)
	case in.Bytes > 0:
		out, err := json.Marshal(strings.Repeat("x", in.Bytes))
		return out, false, err
	}
	if in.Echo == nil {
		in.Echo = json.RawMessage("null")
	}
	out, err := json.Marshal(map[string]any{"echo": in.Echo, "attempt": attempt, "key": key})
	return out, false, err
}
