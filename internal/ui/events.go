package ui

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
)

// maxLiveBatches bounds the batches one live-update stream follows (a page
// of the batches list).
const maxLiveBatches = 200

// statusEvery is how often a live-update stream asks a running batch's
// status: progress events are throttled and not stored, and none says
// that a batch ended.
const statusEvery = 2 * time.Second

// liveEvent is what a page's script gets for a batch.
type liveEvent struct {
	BatchID    string        `json:"batch_id"`
	Status     client.Status `json:"status"`
	Total      int           `json:"total"`
	Succeeded  int           `json:"succeeded"`
	Failed     int           `json:"failed"`
	Done       int           `json:"done"`
	InFlight   int           `json:"in_flight"`
	Percent    float64       `json:"percent"`
	Rate       string        `json:"rate"`
	Final      bool          `json:"final"`
	UpdatedAt  time.Time     `json:"updated_at"`
	RatePerSec float64       `json:"rate_per_sec"`
}

func toLive(p client.Progress) liveEvent {
	return liveEvent{BatchID: p.BatchID, Status: p.Status, Total: p.Total, Succeeded: p.Succeeded, Failed: p.Failed,
		Done: p.Done, InFlight: p.InFlight, Percent: p.Percent, Rate: rate(p.RatePerSec), Final: p.Status.Final(),
		UpdatedAt: p.UpdatedAt, RatePerSec: p.RatePerSec}
}

// events streams the progress of the batches named by ?batch= as
// server-sent events ("progress", one JSON object each), until all have
// ended ("end") or the page goes away.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	ids := r.URL.Query()["batch"]
	if len(ids) == 0 || len(ids) > maxLiveBatches {
		http.Error(w, fmt.Sprintf("give 1 to %d batch ids as ?batch=", maxLiveBatches), http.StatusBadRequest)
		return
	}
	for _, id := range ids {
		if !messages.ValidToken(id) {
			http.Error(w, fmt.Sprintf("%q is not a batch id", id), http.StatusBadRequest)
			return
		}
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	updates := make(chan client.Progress, 64)
	running := map[string]bool{}
	for _, id := range ids {
		if running[id] {
			continue
		}
		running[id] = true
		stop, err := s.c.SubscribeProgress(id, func(p client.Progress) {
			select {
			case updates <- p:
			default: // the page is slow: the next status catches up
			}
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer stop()
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(p client.Progress) bool {
		b, _ := json.Marshal(toLive(p))
		if _, err := fmt.Fprintf(w, "event: progress\ndata: %s\n\n", b); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	poll := func() bool {
		for id := range running {
			pctx, cancel := timeout(r)
			p, err := s.c.Status(pctx, id)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return false
				}
				_, _ = io.WriteString(w, ": status of "+id+" not read\n\n")
				continue
			}
			if !send(*p) {
				return false
			}
			if p.Status.Final() {
				delete(running, id)
			}
		}
		return true
	}
	tick := time.NewTicker(statusEvery)
	defer tick.Stop()
	for ok := poll(); ok && len(running) > 0; {
		select {
		case <-ctx.Done():
			return
		case p := <-updates:
			if running[p.BatchID] {
				ok = send(p)
			}
		case <-tick.C:
			ok = poll()
		}
	}
	_, _ = io.WriteString(w, "event: end\ndata: {}\n\n")
	flusher.Flush()
}
