// Package messages is the fanout wire contract, version 1: the JSON types
// exchanged over NATS, every subject / stream / bucket name, request
// validation and the error codes. Everything that crosses the wire is
// defined here and nowhere else.
package messages

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ContractVersion is the wire contract version this package implements.
const ContractVersion = 1

// DefaultPrefix is the subject prefix used when none is configured.
const DefaultPrefix = "fanout"

// ValidToken reports whether s can be used as an activity name or batch
// id: 1-64 characters of A-Z a-z 0-9 _ -, one NATS subject token that is
// also a valid KV key and consumer name. (A loop, not a regexp: workers
// check every message.)
func ValidToken(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Names builds every subject, stream, consumer and bucket name for one
// deployment prefix. Two deployments with different prefixes can share one
// NATS account without seeing each other.
type Names struct {
	Prefix string
	upper  string
}

// prefixPattern keeps the map from prefix to stream names one-to-one
// (they are the prefix upper-cased): lower case, digits and _ only.
var prefixPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// NewNames validates prefix and returns the names for it.
func NewNames(prefix string) (Names, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !prefixPattern.MatchString(prefix) {
		return Names{}, fmt.Errorf("prefix %q: must be 1-32 characters of a-z 0-9 _, starting with a letter (stream names are the prefix in upper case)", prefix)
	}
	return Names{Prefix: prefix, upper: strings.ToUpper(prefix)}, nil
}

// MustNames is NewNames for prefixes known to be valid.
func MustNames(prefix string) Names {
	n, err := NewNames(prefix)
	if err != nil {
		panic(err)
	}
	return n
}

// Request/reply subjects served by the coordinators (queue group Coordinators).
func (n Names) Submit() string  { return n.Prefix + ".submit" }
func (n Names) Status() string  { return n.Prefix + ".status" }
func (n Names) Cancel() string  { return n.Prefix + ".cancel" }
func (n Names) Update() string  { return n.Prefix + ".update" }
func (n Names) Redrive() string { return n.Prefix + ".redrive" }

// Requests are the requests the coordinators answer, by the last token of
// their subjects.
var Requests = []string{"submit", "status", "cancel", "update", "redrive"}

// Request returns the request a request subject names ("submit" for
// fanout.submit), or "".
func (n Names) Request(subject string) string {
	r, ok := strings.CutPrefix(subject, n.Prefix+".")
	if !ok {
		return ""
	}
	return r
}

// CoordinatorQueue is the queue group the coordinators answer requests in.
func (n Names) CoordinatorQueue() string { return n.Prefix + "-coordinators" }

// Work is the subject of one batch's work messages for an activity.
func (n Names) Work(activity, batch string) string {
	return n.Prefix + ".work." + activity + "." + batch
}

// WorkActivityFilter matches all work of one activity.
func (n Names) WorkActivityFilter(activity string) string {
	return n.Prefix + ".work." + activity + ".>"
}

// WorkAll matches all work subjects (the FANOUT_WORK stream's subjects).
func (n Names) WorkAll() string { return n.Prefix + ".work.>" }

// WorkKeeper is the subject of the work stream's keeper: a message no
// worker takes (an activity's filter needs two more tokens), which keeps
// the stream from ever emptying (see coordinator/keeper.go).
func (n Names) WorkKeeper() string { return n.Prefix + ".work._keeper" }

// Result is the subject of one item's result.
func (n Names) Result(batch string, item int) string {
	return n.Prefix + ".result." + batch + "." + strconv.Itoa(item)
}

// StepResult is the subject of a source or reduce step's result.
func (n Names) StepResult(batch string, step Step) string {
	return n.Prefix + ".result." + batch + "." + string(step)
}

// ParseStepResult returns the batch and step of a step result subject.
func (n Names) ParseStepResult(subject string) (batch string, step Step, ok bool) {
	rest, found := strings.CutPrefix(subject, n.Prefix+".result.")
	if !found {
		return "", "", false
	}
	batch, s, found := strings.Cut(rest, ".")
	switch Step(s) {
	case StepSource, StepReduce:
		return batch, Step(s), found && batch != ""
	}
	return "", "", false
}

// PurgeBatchWork matches the work of a batch for every activity (its items
// and its steps).
func (n Names) PurgeBatchWork(batch string) string { return n.Prefix + ".work.*." + batch }

// UnpackRequest is the subject of a request to unpack the auto-packed
// group of a batch that starts at item first. It is in the results stream,
// whose one-message-per-subject rule makes the request once per group.
func (n Names) UnpackRequest(batch string, first int) string {
	return n.Result(batch, first) + ".unpack"
}

// ParseUnpackRequest returns the batch and first item of an unpack
// request's subject.
func (n Names) ParseUnpackRequest(subject string) (batch string, first int, ok bool) {
	rest, found := strings.CutSuffix(subject, ".unpack")
	if !found {
		return "", 0, false
	}
	return n.ParseResultSubject(rest)
}

// ResultBatchFilter matches all results of one batch.
func (n Names) ResultBatchFilter(batch string) string { return n.Prefix + ".result." + batch + ".>" }

// ResultItemsFilter matches the results of one batch's items and steps,
// not its unpack requests.
func (n Names) ResultItemsFilter(batch string) string { return n.Prefix + ".result." + batch + ".*" }

// ResultAll matches all result subjects.
func (n Names) ResultAll() string { return n.Prefix + ".result.>" }

// ParseResultSubject returns the batch id and item index of a result subject.
func (n Names) ParseResultSubject(subject string) (batch string, item int, ok bool) {
	rest, found := strings.CutPrefix(subject, n.Prefix+".result.")
	if !found {
		return "", 0, false
	}
	batch, idx, found := strings.Cut(rest, ".")
	if !found || batch == "" {
		return "", 0, false
	}
	item, err := strconv.Atoi(idx)
	if err != nil || item < 0 || strconv.Itoa(item) != idx {
		return "", 0, false
	}
	return batch, item, true
}

// Progress is the (core NATS, not stored) subject of a batch's progress events.
func (n Names) Progress(batch string) string { return n.Prefix + ".progress." + batch }

// Done is the subject of a batch's aggregate, kept in the done stream.
func (n Names) Done(batch string) string { return n.Prefix + ".done." + batch }

// DoneAll matches all aggregates.
func (n Names) DoneAll() string { return n.Prefix + ".done.>" }

// Aggregate is where the done stream republishes a batch's aggregate once
// it has stored it (stream RePublish). A subscriber to Done gets the
// aggregate as the server routes the publish, which can be before the
// stream has stored it; one to Aggregate gets it only once it is stored,
// so that what it then asks (status, redrive) finds it.
func (n Names) Aggregate(batch string) string { return n.Prefix + ".aggregate." + batch }

// AggregateAll matches all republished aggregates.
func (n Names) AggregateAll() string { return n.Prefix + ".aggregate.>" }

// Token is the control-stream subject holding a batch's ownership token: the
// stored batch request, held un-acked by the coordinator driving the batch.
func (n Names) Token(batch string) string { return n.Prefix + ".control.batch." + batch }

// TokenAll matches all batch tokens.
func (n Names) TokenAll() string { return n.Prefix + ".control.batch.>" }

// Poke is a core NATS subject that tells the coordinator driving a batch to
// re-read its state now (after a cancel request, say) rather than at its
// next periodic check.
func (n Names) Poke(batch string) string { return n.Prefix + ".coordinator.poke." + batch }

// PokeAll matches every poke.
func (n Names) PokeAll() string { return n.Prefix + ".coordinator.poke.*" }

// ControlAll matches all control subjects (the control stream's subjects).
func (n Names) ControlAll() string { return n.Prefix + ".control.>" }

// BatchFromToken returns the batch id of a token subject.
func (n Names) BatchFromToken(subject string) (string, bool) {
	b, ok := strings.CutPrefix(subject, n.Prefix+".control.batch.")
	return b, ok && ValidToken(b)
}

// Stream and bucket names. With the default prefix these are FANOUT_WORK,
// FANOUT_RESULTS, FANOUT_DONE, FANOUT_CONTROL, FANOUT_BATCHES and
// FANOUT_BLOBS.
func (n Names) WorkStream() string          { return n.upper + "_WORK" }
func (n Names) ResultsStream() string       { return n.upper + "_RESULTS" }
func (n Names) DoneStream() string          { return n.upper + "_DONE" }
func (n Names) ControlStream() string       { return n.upper + "_CONTROL" }
func (n Names) BatchesBucket() string       { return n.upper + "_BATCHES" }
func (n Names) BlobBucket() string          { return n.upper + "_BLOBS" }
func (n Names) CoordinatorConsumer() string { return "coordinators" }

// WorkersBucket is the KV bucket of worker heartbeats (FANOUT_WORKERS): one
// key per running worker, expiring when its heartbeats stop.
func (n Names) WorkersBucket() string { return n.upper + "_WORKERS" }

// WorkConsumer is the durable consumer shared by all workers of an activity.
func (n Names) WorkConsumer(activity string) string { return "work-" + activity }

// MsgIDs used for JetStream de-duplication.
func WorkMsgID(batch string, item int) string  { return batch + "/" + strconv.Itoa(item) }
func StepMsgID(batch string, step Step) string { return batch + "/" + string(step) }
func DoneMsgID(batch string) string            { return "done/" + batch }

// UnpackedMsgID is the id of an item's own work message once its
// auto-packed group is unpacked (the group's id is WorkMsgID of its first
// item, so the first item needs another).
func UnpackedMsgID(batch string, item int) string { return WorkMsgID(batch, item) + "/unpacked" }
func TokenMsgID(batch string) string              { return "batch/" + batch }

// IdempotencyKey is the stable key a handler gets for an item: "<batch>/<item>".
func IdempotencyKey(batch string, item int) string { return batch + "/" + strconv.Itoa(item) }

// LastSeqHeader, on an aggregate, is the results-stream sequence its
// counts reach (the batch state's last_seq when it was decided).
const LastSeqHeader = "Fanout-Last-Seq"
