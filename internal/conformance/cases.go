package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/objects"
)

// testCase is one case of the check. doc is the anchor of the protocol
// page's section that states the rule.
type testCase struct {
	name, title, doc string
	slow             bool // runs an item for 2.5 ack waits
	run              func(ctx context.Context, r *caseRun) error
}

// in is a conformance input (workertest.ConformanceInput).
type in map[string]any

// echoed is the conformance output of an item without "bytes".
type echoed struct {
	Echo    json.RawMessage `json:"echo"`
	Attempt int             `json:"attempt"`
	Key     string          `json:"key"`
}

var cases = []testCase{{
	name: "plain", title: "plain items: one result each, attempt 1, the idempotency key <batch>/<item>, then an ack",
	doc: "what-to-do-with-a-delivery",
	run: func(ctx context.Context, r *caseRun) error {
		for i := range 3 {
			if err := r.publish(ctx, r.item(i, in{"echo": i})); err != nil {
				return err
			}
		}
		for i := range 3 {
			if err := r.expectEcho(ctx, i, i, 1); err != nil {
				return err
			}
		}
		return r.acked(ctx)
	},
}, {
	name: "packed", title: "a packed message: one result per item, on each item's own subject, then one ack",
	doc: "packed-work-messages",
	run: func(ctx context.Context, r *caseRun) error {
		wm := r.group(5, in{"echo": "a"}, in{"echo": "b"}, in{"echo": "c"})
		if err := r.publish(ctx, wm); err != nil {
			return err
		}
		for i, want := range []string{"a", "b", "c"} {
			if err := r.expectEcho(ctx, 5+i, want, 1); err != nil {
				return err
			}
		}
		return r.acked(ctx)
	},
}, {
	name: "attempts", title: "the attempt is delivered + work.attempt - 1 (a work message published at attempt 2)",
	doc: "attempts",
	run: func(ctx context.Context, r *caseRun) error {
		wm := r.item(0, in{"echo": "second"})
		wm.Attempt = 2
		wm.msgID = messages.UnpackedMsgID(r.batch, 0)
		if err := r.publish(ctx, wm); err != nil {
			return err
		}
		if err := r.expectEcho(ctx, 0, "second", 2); err != nil {
			return err
		}
		return r.acked(ctx)
	},
}, {
	name: "retryable", title: "a retryable failure: negative ack after the backoff, success on a later attempt",
	doc: "what-to-do-with-a-delivery",
	run: func(ctx context.Context, r *caseRun) error {
		wm := r.item(0, in{"fail": "flaky", "until": 3})
		wm.BackoffMS = []int64{200, 200}
		start := time.Now()
		if err := r.publish(ctx, wm); err != nil {
			return err
		}
		if err := r.expectEcho(ctx, 0, nil, 3); err != nil {
			return err
		}
		if took := time.Since(start); took < 400*time.Millisecond {
			return fmt.Errorf("the item succeeded on attempt 3 %s after it was published: the two backoffs of 200ms (backoff_ms) were not waited", took.Round(time.Millisecond))
		}
		return r.acked(ctx)
	},
}, {
	name: "retries-exhausted", title: "a retryable failure on the last attempt: a failed result with attempts = max_attempts",
	doc: "what-to-do-with-a-delivery",
	run: func(ctx context.Context, r *caseRun) error {
		wm := r.item(0, in{"fail": "still failing", "until": 99})
		wm.MaxAttempts = 2
		if err := r.publish(ctx, wm); err != nil {
			return err
		}
		if err := r.expectFailed(ctx, 0, "still failing", 2); err != nil {
			return err
		}
		return r.acked(ctx)
	},
}, {
	name: "permanent", title: "a permanent failure: a failed result at once, attempt 1, with the handler's error",
	doc: "what-to-do-with-a-delivery",
	run: func(ctx context.Context, r *caseRun) error {
		if err := r.publish(ctx, r.item(0, in{"fail": "bad input", "permanent": true})); err != nil {
			return err
		}
		if err := r.expectFailed(ctx, 0, "bad input", 1); err != nil {
			return err
		}
		return r.acked(ctx)
	},
}, {
	name: "give-up", title: "attempt > max_attempts: no run, a failed result with attempts = max_attempts",
	doc: "what-to-do-with-a-delivery",
	run: func(ctx context.Context, r *caseRun) error {
		wm := r.item(0, in{"echo": "must not run"})
		wm.Attempt, wm.MaxAttempts = 3, 2
		wm.msgID = messages.UnpackedMsgID(r.batch, 0)
		if err := r.publish(ctx, wm); err != nil {
			return err
		}
		if err := r.expectFailed(ctx, 0, "", 2); err != nil {
			return err
		}
		return r.acked(ctx)
	},
}, {
	name: "unpack", title: "an auto-packed group delivered again: an unpack request, no second run; then the item alone",
	doc: "auto-packing",
	run: func(ctx context.Context, r *caseRun) error {
		wm := r.group(16, in{"echo": "a"}, in{"fail": "not yet", "until": 2}, in{"echo": "c"})
		wm.Unpack = true
		wm.BackoffMS = []int64{0}
		if err := r.publish(ctx, wm); err != nil {
			return err
		}
		// The first delivery runs the group: items 16 and 18 succeed, item
		// 17 asks for a retry, so the message is negatively acked.
		if err := r.expectEcho(ctx, 16, "a", 1); err != nil {
			return err
		}
		if err := r.expectEcho(ctx, 18, "c", 1); err != nil {
			return err
		}
		// The second delivery must not run: an unpack request instead.
		req, err := r.stored(ctx, r.c.names.UnpackRequest(r.batch, 16), "an unpack request for the group (the message's second delivery)")
		if err != nil {
			return err
		}
		if err := req.CheckUnpack(r.batch, 16); err != nil {
			return fmt.Errorf("unpack request: %v", err)
		}
		if req.Unpack.Attempt != 2 {
			return fmt.Errorf("unpack request: attempt %d, want 2 (the attempt of the delivery that was not run)", req.Unpack.Attempt)
		}
		if err := r.acked(ctx); err != nil {
			return err
		}
		if err := r.absent(ctx, r.c.names.Result(r.batch, 17), "item 17 has a result, but the worker should have asked to unpack its group, not run it again"); err != nil {
			return err
		}
		// As the coordinator does: the item without a result, alone, on
		// the request's attempt.
		alone := r.item(17, in{"fail": "not yet", "until": 2})
		alone.Attempt = req.Unpack.Attempt
		alone.BackoffMS = []int64{0}
		alone.msgID = messages.UnpackedMsgID(r.batch, 17)
		if err := r.publish(ctx, alone); err != nil {
			return err
		}
		if err := r.expectEcho(ctx, 17, nil, 2); err != nil {
			return err
		}
		return r.acked(ctx)
	},
}, {
	name: "step", title: "a step's work message: its result on <batch>.source, with \"step\" copied",
	doc: "source-and-reduce-steps",
	run: func(ctx context.Context, r *caseRun) error {
		wm := r.item(0, in{"echo": "source"})
		wm.Step = messages.StepSource
		wm.msgID = messages.StepMsgID(r.batch, messages.StepSource)
		if err := r.publish(ctx, wm); err != nil {
			return err
		}
		res, err := r.stored(ctx, r.c.names.StepResult(r.batch, messages.StepSource), "the source step's result")
		if err != nil {
			return err
		}
		if err := res.CheckResult(r.batch, 0, messages.StepSource); err != nil {
			return fmt.Errorf("step result: %v", err)
		}
		if err := checkEcho(res, r.batch, 0, "source", 1); err != nil {
			return err
		}
		return r.acked(ctx)
	},
}, {
	name: "heartbeat", title: "an item running 2.5 ack waits: heartbeats keep it, delivered once", slow: true,
	doc: "what-to-do-with-a-delivery",
	run: func(ctx context.Context, r *caseRun) error {
		before, err := r.delivered(ctx)
		if err != nil {
			return err
		}
		run := r.c.ackWait * 5 / 2
		if err := r.publish(ctx, r.item(0, in{"echo": "long", "sleep_ms": run.Milliseconds()})); err != nil {
			return err
		}
		if err := r.expectEcho(ctx, 0, "long", 1); err != nil {
			return err
		}
		if err := r.acked(ctx); err != nil {
			return err
		}
		after, err := r.delivered(ctx)
		if err != nil {
			return err
		}
		if n := after - before; n != 1 {
			return fmt.Errorf("the item was delivered %d times while it ran %s (ack wait %s): send +WPI every ack wait / 3 while an item runs", n, run, r.c.ackWait)
		}
		return nil
	},
}, {
	name: "claim-check-input", title: "an input by reference (input_ref): fetched from the object store and checked",
	doc: "big-payloads-claim-checks",
	run: func(ctx context.Context, r *caseRun) error {
		data, _ := json.Marshal(in{"echo": "from the object store"})
		ref, err := r.putObject(ctx, messages.PayloadObject(r.batch, 0, "in"), data)
		if err != nil {
			return err
		}
		wm := r.item(0, nil)
		wm.Input, wm.InputRef = nil, ref
		if err := r.publish(ctx, wm); err != nil {
			return err
		}
		if err := r.expectEcho(ctx, 0, "from the object store", 1); err != nil {
			return err
		}
		return r.acked(ctx)
	},
}, {
	name: "claim-check-output", title: "an output larger than max_payload: stored in the object store, output_ref in the result",
	doc: "big-payloads-claim-checks",
	run: func(ctx context.Context, r *caseRun) error {
		n := int(r.c.cfg.Conn.MaxPayload()) + 64*1024
		if err := r.publish(ctx, r.item(0, in{"bytes": n})); err != nil {
			return err
		}
		res, err := r.result(ctx, 0)
		if err != nil {
			return err
		}
		switch {
		case !res.OK:
			return fmt.Errorf("item 0 failed (%q); want its %d-byte output stored in %s and output_ref in the result", res.Error, n+2, r.c.names.BlobBucket())
		case res.OutputRef == nil:
			return errors.New("the result has no output_ref: an output larger than the claim-check threshold goes to the object store")
		}
		b, err := objects.ReadRef(ctx, r.c.js, res.OutputRef) // checks size and digest
		if err != nil {
			return fmt.Errorf("output_ref %s: %v", res.OutputRef.Name, err)
		}
		want, _ := json.Marshal(strings.Repeat("x", n))
		if string(b) != string(want) {
			return fmt.Errorf("the object %s holds %d bytes that are not the output (a JSON string of %d x)", res.OutputRef.Name, len(b), n)
		}
		return r.acked(ctx)
	},
}, {
	name: "duplicate", title: "a result already stored (a late duplicate): the publish is refused (10077) and the message acked",
	doc: "publishing-the-result-and-acking",
	run: func(ctx context.Context, r *caseRun) error {
		first := messages.ResultMessage{BatchID: r.batch, Item: 0, OK: true, Output: json.RawMessage(`"first"`), Attempts: 1, Worker: "conformance-check"}
		data, _ := json.Marshal(first)
		ack, err := r.c.js.Publish(ctx, r.c.names.Result(r.batch, 0), data)
		if err != nil {
			return fmt.Errorf("storing the first result: %v", err)
		}
		if err := r.publish(ctx, r.item(0, in{"echo": "second"})); err != nil {
			return err
		}
		if err := r.acked(ctx); err != nil {
			return fmt.Errorf("%v; the worker's result was refused as a duplicate (err_code 10077): that means the item is recorded, ack", err)
		}
		m, err := r.c.results.GetLastMsgForSubject(ctx, r.c.names.Result(r.batch, 0))
		if err != nil || m.Sequence != ack.Sequence {
			return fmt.Errorf("the item's first result was replaced (%v)", err)
		}
		return nil
	},
}, {
	name: "unreadable", title: "a work message that is not JSON: terminated (+TERM), no result",
	doc: "what-to-do-with-a-delivery",
	run: func(ctx context.Context, r *caseRun) error {
		msg := nats.NewMsg(r.c.names.Work(r.c.cfg.Activity, r.batch))
		msg.Data = []byte("this is not a work message")
		if _, err := r.c.js.PublishMsg(ctx, msg); err != nil {
			return fmt.Errorf("publishing: %v", err)
		}
		if err := r.acked(ctx); err != nil {
			return err
		}
		return r.absent(ctx, r.c.names.ResultBatchFilter(r.batch), "a result was stored for a work message that cannot be read")
	},
}}

// caseRun is one case's batch.
type caseRun struct {
	c     *checker
	batch string
}

// work is a work message and the Nats-Msg-Id it goes out with.
type work struct {
	messages.WorkMessage
	msgID string
}

func (r *caseRun) item(item int, input in) work {
	wm := messages.WorkMessage{BatchID: r.batch, Item: item, Activity: r.c.cfg.Activity, Attempt: 1,
		MaxAttempts: 3, BackoffMS: []int64{50}, ItemTimeoutMS: 30_000}
	if input != nil {
		wm.Input, _ = json.Marshal(input)
	}
	return work{WorkMessage: wm, msgID: messages.WorkMsgID(r.batch, item)}
}

func (r *caseRun) group(first int, inputs ...in) work {
	w := r.item(first, nil)
	for i, input := range inputs {
		data, _ := json.Marshal(input)
		w.Items = append(w.Items, messages.WorkItem{Item: first + i, Input: data})
	}
	return w
}

func (r *caseRun) publish(ctx context.Context, w work) error {
	msg := nats.NewMsg(r.c.names.Work(r.c.cfg.Activity, r.batch))
	msg.Data, _ = json.Marshal(w.WorkMessage)
	msg.Header.Set(jetstream.MsgIDHeader, w.msgID)
	if _, err := r.c.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publishing the work message: %v", err)
	}
	return nil
}

func (r *caseRun) putObject(ctx context.Context, name string, data []byte) (*messages.ObjectRef, error) {
	info, err := r.c.blobs.PutBytes(ctx, name, data)
	if err != nil {
		return nil, fmt.Errorf("storing %s: %v", name, err)
	}
	return &messages.ObjectRef{Bucket: r.c.names.BlobBucket(), Name: name, Size: info.Size, Digest: info.Digest}, nil
}

// poll calls fn every 20 ms until it reports done, or ctx ends.
func poll(ctx context.Context, fn func() (bool, error)) error {
	for {
		done, err := fn()
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stored waits for the message on subject in the results stream.
func (r *caseRun) stored(ctx context.Context, subject, what string) (*messages.ResultMessage, error) {
	var m *jetstream.RawStreamMsg
	err := poll(ctx, func() (bool, error) {
		var err error
		m, err = r.c.results.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, context.DeadlineExceeded) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("no %s on %s: %w", what, subject, err)
	}
	var res messages.ResultMessage
	if err := json.Unmarshal(m.Data, &res); err != nil {
		return nil, fmt.Errorf("%s on %s is not a result message: %v: %.200s", what, subject, err, m.Data)
	}
	return &res, nil
}

func (r *caseRun) result(ctx context.Context, item int) (*messages.ResultMessage, error) {
	res, err := r.stored(ctx, r.c.names.Result(r.batch, item), fmt.Sprintf("result of item %d", item))
	if err != nil {
		return nil, err
	}
	if err := res.CheckResult(r.batch, item, ""); err != nil {
		return nil, fmt.Errorf("the result on %s: %v (a result's batch_id and item must be its subject's)", r.c.names.Result(r.batch, item), err)
	}
	if res.DurationMS < 0 {
		return nil, fmt.Errorf("result of item %d: duration_ms %g is negative", item, res.DurationMS)
	}
	return res, nil
}

// expectEcho waits for item's result and checks it is the conformance
// handler's output for echo on attempt.
func (r *caseRun) expectEcho(ctx context.Context, item int, echo any, attempt int) error {
	res, err := r.result(ctx, item)
	if err != nil {
		return err
	}
	return checkEcho(res, r.batch, item, echo, attempt)
}

func checkEcho(res *messages.ResultMessage, batch string, item int, echo any, attempt int) error {
	if !res.OK {
		return fmt.Errorf("item %d failed (%q) on attempt %d; want it to succeed on attempt %d", item, res.Error, res.Attempts, attempt)
	}
	var out echoed
	if err := json.Unmarshal(res.Output, &out); err != nil {
		return fmt.Errorf("item %d: output %.200s is not the conformance handler's: %v", item, res.Output, err)
	}
	want, _ := json.Marshal(echo)
	got, _ := json.Marshal(out.Echo)
	key := messages.IdempotencyKey(batch, item)
	switch {
	case string(got) != string(want):
		return fmt.Errorf("item %d: echo %s, want %s (the item's own input)", item, got, want)
	case out.Attempt != attempt:
		return fmt.Errorf("item %d: the handler ran on attempt %d, want %d", item, out.Attempt, attempt)
	case res.Attempts != attempt:
		return fmt.Errorf("item %d: result's attempts %d, want %d", item, res.Attempts, attempt)
	case out.Key != key:
		return fmt.Errorf("item %d: idempotency key %q, want %q", item, out.Key, key)
	}
	return nil
}

func (r *caseRun) expectFailed(ctx context.Context, item int, errText string, attempts int) error {
	res, err := r.result(ctx, item)
	if err != nil {
		return err
	}
	switch {
	case res.OK:
		return fmt.Errorf("item %d succeeded (output %.100s) on attempt %d; want a failed result after %d attempts", item, res.Output, res.Attempts, attempts)
	case res.Attempts != attempts:
		return fmt.Errorf("item %d failed with attempts %d, want %d", item, res.Attempts, attempts)
	case res.Error == "":
		return fmt.Errorf("item %d failed without an error", item)
	case errText != "" && !strings.Contains(res.Error, errText):
		return fmt.Errorf("item %d failed with %q, want the handler's error %q", item, res.Error, errText)
	}
	return nil
}

// acked waits until the case's work messages are gone from the work
// stream: acked (or terminated).
func (r *caseRun) acked(ctx context.Context) error {
	subject := r.c.names.Work(r.c.cfg.Activity, r.batch)
	err := poll(ctx, func() (bool, error) {
		_, err := r.c.work.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return true, nil
		}
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			return false, nil
		}
		return false, err
	})
	if err != nil {
		return fmt.Errorf("the work message is still in %s, not acked: %w", r.c.names.WorkStream(), err)
	}
	return nil
}

// absent checks, for an ack wait (between 500 ms and 1 s), that nothing
// is stored under subject.
func (r *caseRun) absent(ctx context.Context, subject, problem string) error {
	wait := min(max(r.c.ackWait, 500*time.Millisecond), time.Second)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	err := poll(ctx, func() (bool, error) {
		m, err := r.c.results.GetLastMsgForSubject(ctx, subject)
		if err == nil {
			return false, fmt.Errorf("%s: %.200s", problem, m.Data)
		}
		return false, nil
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// delivered is how many deliveries the activity's consumer has made.
func (r *caseRun) delivered(ctx context.Context) (uint64, error) {
	info, err := r.c.cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer info: %v", err)
	}
	return info.Delivered.Consumer, nil
}
