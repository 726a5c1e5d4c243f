// Package conformance proves that a live worker, in any language, keeps
// fanout's worker contract (docs/protocol.md, "Writing a worker"): it
// drives the worker through the protocol's cases against a real
// deployment and reports each case as passed or failed, with what was
// wrong.
//
// The check acts as the coordinator for batches of its own: it publishes
// their work messages to the activity's subject in the work stream and
// reads the results (and unpack requests) the worker stores. No
// coordinator drives these batches (a coordinator reads only the results
// of batches it accepted), so the check works on any deployment, and each
// case controls exactly what the worker receives: a packed group, a
// message on its third attempt, a result already stored. The worker under
// test serves the check's activity with the conformance handler
// (workertest.Conformance in Go; the contract is ConformanceInput): an
// item's input says what the handler does, so every case is the worker's
// own behaviour, not the handler's.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
)

// Config is what the check needs.
type Config struct {
	Conn     *nats.Conn
	Prefix   string
	Activity string
	// CaseTimeout bounds one case (default 30s, plus the heartbeat case's
	// item time).
	CaseTimeout time.Duration
	// Only runs the named cases (all when empty).
	Only []string
	// Progress, if set, gets one line per case as it ends.
	Progress io.Writer
}

// Outcome is one case's verdict.
type Outcome struct {
	Case   string
	Title  string
	Passed bool
	// Problem says what was wrong, when the case failed.
	Problem string
	Took    time.Duration
}

// Report is the verdict of a run.
type Report struct {
	Activity string
	AckWait  time.Duration
	Outcomes []Outcome
}

// Passed counts the cases that passed; Failed those that did not.
func (r *Report) Passed() int {
	n := 0
	for _, o := range r.Outcomes {
		if o.Passed {
			n++
		}
	}
	return n
}

// Failed counts the cases that failed.
func (r *Report) Failed() int { return len(r.Outcomes) - r.Passed() }

// Write writes the report for people: one line per case, then the counts.
func (r *Report) Write(w io.Writer) {
	for _, o := range r.Outcomes {
		fmt.Fprintln(w, o.line())
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", r.Passed(), r.Failed())
}

func (o Outcome) line() string {
	if o.Passed {
		return fmt.Sprintf("PASS  %-22s %s (%s)", o.Case, o.Title, o.Took.Round(time.Millisecond))
	}
	return fmt.Sprintf("FAIL  %-22s %s (%s)\n      %s", o.Case, o.Title, o.Took.Round(time.Millisecond), strings.ReplaceAll(o.Problem, "\n", "\n      "))
}

// ErrSetup is wrapped by the errors of a check that could not start: no
// consumer for the activity, streams missing.
var ErrSetup = errors.New("conformance check cannot start")

// checker runs the cases of one run.
type checker struct {
	cfg     Config
	names   messages.Names
	js      jetstream.JetStream
	work    jetstream.Stream
	results jetstream.Stream
	blobs   jetstream.ObjectStore
	cons    jetstream.Consumer
	ackWait time.Duration
	run     string   // this run's id, part of every batch id
	batches []string // made so far, removed at the end
}

// Run checks the worker serving cfg.Activity. It fails with ErrSetup when
// the check cannot start; otherwise its report says which cases passed.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	names, err := messages.NewNames(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	if !messages.ValidToken(cfg.Activity) {
		return nil, fmt.Errorf("%w: activity %q is not an activity name", ErrSetup, cfg.Activity)
	}
	if cfg.CaseTimeout <= 0 {
		cfg.CaseTimeout = 30 * time.Second
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, err
	}
	c := &checker{cfg: cfg, names: names, js: js, run: uuid.NewString()[:8]}
	if err := c.setUp(ctx); err != nil {
		return nil, err
	}
	defer c.cleanUp()
	rep := &Report{Activity: cfg.Activity, AckWait: c.ackWait}
	for _, k := range cases {
		if len(cfg.Only) > 0 && !slices.Contains(cfg.Only, k.name) {
			continue
		}
		o := c.runCase(ctx, k)
		rep.Outcomes = append(rep.Outcomes, o)
		if cfg.Progress != nil {
			fmt.Fprintln(cfg.Progress, o.line())
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	return rep, nil
}

// CaseNames lists the cases, in the order they run.
func CaseNames() []string {
	out := make([]string, len(cases))
	for i, k := range cases {
		out[i] = k.name
	}
	return out
}

func (c *checker) setUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	if c.work, err = c.js.Stream(ctx, c.names.WorkStream()); err != nil {
		return fmt.Errorf("%w: stream %s: %v (has a worker or coordinator started on this deployment, with this prefix?)", ErrSetup, c.names.WorkStream(), err)
	}
	if c.results, err = c.js.Stream(ctx, c.names.ResultsStream()); err != nil {
		return fmt.Errorf("%w: stream %s: %v", ErrSetup, c.names.ResultsStream(), err)
	}
	consumer := c.names.WorkConsumer(c.cfg.Activity)
	if c.cons, err = c.work.Consumer(ctx, consumer); err != nil {
		return fmt.Errorf("%w: no consumer %q on %s: start the worker under test, serving activity %q, first (%v)", ErrSetup, consumer, c.names.WorkStream(), c.cfg.Activity, err)
	}
	info := c.cons.CachedInfo()
	c.ackWait = info.Config.AckWait
	if info.NumPending > 0 {
		return fmt.Errorf("%w: activity %q has %d work messages queued already: give the check an activity of its own", ErrSetup, c.cfg.Activity, info.NumPending)
	}
	if c.blobs, err = c.js.ObjectStore(ctx, c.names.BlobBucket()); errors.Is(err, jetstream.ErrBucketNotFound) {
		c.blobs, err = c.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: c.names.BlobBucket()})
	}
	if err != nil {
		return fmt.Errorf("%w: object store %s: %v", ErrSetup, c.names.BlobBucket(), err)
	}
	return nil
}

// cleanUp removes what the run's batches left: work, results, objects.
func (c *checker) cleanUp() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, b := range c.batches {
		_ = c.work.Purge(ctx, jetstream.WithPurgeSubject(c.names.PurgeBatchWork(b)))
		_ = c.results.Purge(ctx, jetstream.WithPurgeSubject(c.names.ResultBatchFilter(b)))
		if objs, err := c.blobs.List(ctx); err == nil {
			for _, o := range objs {
				if strings.HasPrefix(o.Name, "payloads/"+b+"/") {
					_ = c.blobs.Delete(ctx, o.Name)
				}
			}
		}
	}
}

func (c *checker) runCase(ctx context.Context, k testCase) Outcome {
	start := time.Now()
	timeout := c.cfg.CaseTimeout
	if k.slow {
		timeout += 3 * c.ackWait
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	batch := "conformance-" + c.run + "-" + k.name
	c.batches = append(c.batches, batch)
	err := k.run(ctx, &caseRun{c: c, batch: batch})
	o := Outcome{Case: k.name, Title: k.title, Passed: err == nil, Took: time.Since(start)}
	if err != nil {
		o.Problem = err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			o.Problem = fmt.Sprintf("%v (the case's time, %s, ran out)", err, timeout)
		}
		if k.doc != "" {
			o.Problem += "\nsee docs/protocol.md#" + k.doc
		}
	}
	return o
}
