package worker

import (
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fanoutdev/fanout/internal/topology"
)

// Pull requests: how long one waits for messages, and how often the server
// says it is still waiting.
const (
	pullExpires   = 10 * time.Second
	pullHeartbeat = 2 * time.Second
)

// puller asks the server for one activity's work messages on one inbox
// subscription: exactly as many as the worker has room for. Every message
// delivered is then in the worker's hands, kept alive with heartbeats,
// from the moment it arrives. (nats.go's Consume keeps up to a pull's worth
// of messages inside the client, where nothing can heartbeat them: items
// longer than the ack wait were delivered again while they waited there.)
type puller struct {
	w        *Worker
	activity string
	h        Handler
	next     string // the consumer's MSG.NEXT API subject
	sub      *nats.Subscription
	capacity int // messages held plus asked for, at most
	batchMin int // ask again once at least this many fit

	mu        sync.Mutex
	held      int       // delivered and not yet settled
	requested int       // asked for and neither delivered nor expired
	heard     time.Time // the server last said something about our requests

	wake chan struct{}
	quit chan struct{}
	done chan struct{}
}

func (w *Worker) startPuller(activity string, h Handler, stream, consumer string, capacity, batchMin int) (*puller, error) {
	p := &puller{
		w: w, activity: activity, h: h,
		next:     topology.APIPrefix(w.cfg.domain) + "CONSUMER.MSG.NEXT." + stream + "." + consumer,
		capacity: capacity, batchMin: batchMin,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	sub, err := w.nc.Subscribe(w.nc.NewInbox(), p.onMsg)
	if err != nil {
		return nil, err
	}
	// The worker's own limits apply, not the client's default pending
	// limits: held messages are bounded by capacity.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	p.sub = sub
	go p.run()
	return p, nil
}

// onMsg runs on the subscription's goroutine: a work message goes to the
// slots (the jobs channel has room for every held message), a status
// message settles the count of messages asked for.
func (p *puller) onMsg(m *nats.Msg) {
	if status := m.Header.Get("Status"); status != "" && len(m.Data) == 0 {
		p.onStatus(m, status)
		return
	}
	p.mu.Lock()
	p.requested = max(p.requested-1, 0)
	p.held++
	p.heard = time.Now()
	p.mu.Unlock()
	stopHeartbeat := p.w.heartbeat(m)
	p.w.jobs <- job{activity: p.activity, h: p.h, msg: m, stopHeartbeat: stopHeartbeat, done: p.release}
}

func (p *puller) onStatus(m *nats.Msg, status string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.heard = time.Now()
	switch status {
	case "100": // idle heartbeat: the request is still waiting
		return
	case "404", "408", "409":
		// A request ended (expired, or the server gave up on it) with
		// this many of its messages undelivered.
		if n, err := strconv.Atoi(m.Header.Get("Nats-Pending-Messages")); err == nil {
			p.requested = max(p.requested-n, 0)
		} else {
			p.requested = 0
		}
	default:
		p.w.log.Debug().Str("activity", p.activity).Str("status", status).Str("description", m.Header.Get("Description")).Msg("pull request")
		p.requested = 0
	}
	p.poke()
}

// release is called by a slot once a message it took is settled.
func (p *puller) release() {
	p.mu.Lock()
	p.held--
	p.mu.Unlock()
	p.poke()
}

func (p *puller) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run asks for messages whenever enough room is free, until quit. Requests
// the server stopped answering (no heartbeat for two of its intervals) or
// that a reconnect lost are forgotten and asked again.
func (p *puller) run() {
	defer close(p.done)
	tick := time.NewTicker(pullHeartbeat)
	defer tick.Stop()
	reconnected := p.w.nc.StatusChanged(nats.CONNECTED)
	defer p.w.nc.RemoveStatusListener(reconnected)
	for {
		p.ask()
		select {
		case <-p.wake:
		case <-tick.C:
			p.mu.Lock()
			if p.requested > 0 && time.Since(p.heard) > 2*pullHeartbeat+time.Second {
				p.requested = 0
			}
			p.mu.Unlock()
		case <-reconnected:
			p.mu.Lock()
			p.requested = 0
			p.mu.Unlock()
		case <-p.quit:
			return
		}
	}
}

func (p *puller) ask() {
	p.mu.Lock()
	room := p.capacity - p.held - p.requested
	if room < p.batchMin {
		p.mu.Unlock()
		return
	}
	if p.requested == 0 {
		p.heard = time.Now()
	}
	p.requested += room
	p.mu.Unlock()
	req := `{"batch":` + strconv.Itoa(room) + `,"expires":` + strconv.FormatInt(pullExpires.Nanoseconds(), 10) +
		`,"idle_heartbeat":` + strconv.FormatInt(pullHeartbeat.Nanoseconds(), 10) + `}`
	if err := p.w.nc.PublishRequest(p.next, p.sub.Subject, []byte(req)); err != nil {
		p.w.log.Debug().Err(err).Str("activity", p.activity).Msg("pull request")
		p.mu.Lock()
		p.requested = max(p.requested-room, 0)
		p.mu.Unlock()
	}
}

// stop asks for nothing more and ends the subscription once the messages
// already delivered to it are handed to the slots. Requests still waiting
// at the server are dropped by it when the subscription's interest is gone.
func (p *puller) stop() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	<-p.done
	closed := p.sub.StatusChanged(nats.SubscriptionClosed)
	if err := p.sub.Drain(); err != nil {
		_ = p.sub.Unsubscribe()
		return
	}
	select {
	case <-closed:
	case <-time.After(pullExpires):
		_ = p.sub.Unsubscribe()
	}
}

// term ends a message that can never be processed, with a reason the
// server records in its advisory.
func term(m *nats.Msg, reason string) error {
	return m.Respond([]byte("+TERM " + reason))
}
