package ui

import (
	"context"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/messages"
)

// requestTimeout bounds the NATS work of one page.
const requestTimeout = 15 * time.Second

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/batches", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	mux.HandleFunc("GET /batches", s.batchesPage)
	mux.HandleFunc("GET /go", s.goToBatch)
	mux.HandleFunc("GET /batches/{id}", s.batchPage)
	mux.HandleFunc("GET /batches/{id}/charts", s.chartsFragment)
	mux.HandleFunc("GET /batches/{id}/results.jsonl", s.downloadResults)
	mux.HandleFunc("GET /batches/{id}/aggregate.json", s.downloadAggregate)
	mux.HandleFunc("GET /batches/{id}/{action}", s.confirmPage)
	mux.HandleFunc("POST /batches/{id}/{action}", s.act)
	mux.HandleFunc("GET /workers", s.workersPage)
	mux.HandleFunc("GET /activities", s.activitiesPage)
	mux.HandleFunc("GET /events", s.events)
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "Not found", errors.New("no page at this address"))
	})
	return s.secure(mux)
}

func timeout(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), requestTimeout)
}

// status maps a client error to an HTTP status.
func status(err error) int {
	var ce *client.Error
	switch {
	case errors.As(err, &ce) && ce.Code == client.CodeNotFound:
		return http.StatusNotFound
	case errors.As(err, &ce) && (ce.Code == client.CodeInvalidRequest || ce.Code == client.CodeUnsupported):
		return http.StatusBadRequest
	case errors.As(err, &ce) && ce.Code == client.CodeUnavailable, errors.Is(err, client.ErrNoCoordinator):
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}

// batchesData is the batches page.
type batchesData struct {
	Page       *client.BatchPage
	Status     string
	Activity   string
	Statuses   []string
	Activities []string
	NewerURL   string
	OlderURL   string
	IDs        []string // the running batches, for live updates
}

func (s *Server) batchesPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := timeout(r)
	defer cancel()
	q := r.URL.Query()
	query := client.ListQuery{Limit: s.cfg.PageSize, Status: client.Status(q.Get("status")), Activity: q.Get("activity")}
	for _, c := range []struct {
		key string
		to  **client.ListCursor
	}{{"before", &query.Before}, {"after", &query.After}} {
		if v := q.Get(c.key); v != "" {
			cur, err := client.ParseListCursor(v)
			if err != nil {
				s.fail(w, r, http.StatusBadRequest, "Bad page link", err)
				return
			}
			*c.to = &cur
		}
	}
	if query.Activity != "" && !messages.ValidToken(query.Activity) {
		s.fail(w, r, http.StatusBadRequest, "Bad filter", messages.Errorf(messages.CodeInvalidRequest, "activity %q: not an activity name", query.Activity))
		return
	}
	page, err := s.c.ListPage(ctx, query)
	if err != nil {
		s.fail(w, r, status(err), "Batches could not be listed", err)
		return
	}
	d := batchesData{Page: page, Status: string(query.Status), Activity: query.Activity,
		Statuses: []string{"running", "completed", "failed", "canceled", "timed_out"}}
	if acts, err := s.c.Activities(ctx); err == nil {
		for _, a := range acts {
			d.Activities = append(d.Activities, a.Activity)
		}
	}
	if query.Activity != "" && !slices.Contains(d.Activities, query.Activity) {
		d.Activities = append(d.Activities, query.Activity)
	}
	link := func(key string, b client.Progress) string {
		v := r.URL.Query()
		v.Del("before")
		v.Del("after")
		v.Set(key, client.ListCursor{CreatedAt: b.CreatedAt, BatchID: b.BatchID}.String())
		return "/batches?" + v.Encode()
	}
	if n := len(page.Batches); n > 0 {
		if page.Newer {
			d.NewerURL = link("after", page.Batches[0])
		}
		if page.Older {
			d.OlderURL = link("before", page.Batches[n-1])
		}
	}
	for _, b := range page.Batches {
		if !b.Status.Final() {
			d.IDs = append(d.IDs, b.BatchID)
		}
	}
	s.render(w, r, http.StatusOK, "batches", view{Title: "Batches", Nav: "batches", Data: d})
}

func (s *Server) goToBatch(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	if !messages.ValidToken(id) {
		s.fail(w, r, http.StatusBadRequest, "Not a batch id", messages.Errorf(messages.CodeInvalidRequest, "%q is not a batch id: 1-64 letters, digits, _ or -", id))
		return
	}
	http.Redirect(w, r, "/batches/"+id, http.StatusSeeOther)
}

// batchData is a batch's page.
type batchData struct {
	P          *client.Progress
	Aggregate  *client.Aggregate
	Workers    []client.WorkerPresence
	Failed     *client.ResultsPage
	FailedNext string // link to the next page of failed items
	FailedFrom uint64
	Item       *client.StoredResult
	ItemQuery  string
	ItemError  string
	Charts     template.HTML
	Duration   float64 // ms, so far for a running batch
	Redrive    *client.RedriveRef
}

func (s *Server) batchPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := timeout(r)
	defer cancel()
	id := r.PathValue("id")
	p, err := s.c.Status(ctx, id)
	if err != nil {
		s.fail(w, r, status(err), "Batch "+id, err)
		return
	}
	d := batchData{P: p}
	if p.Status.Final() {
		if d.Aggregate, err = s.c.Aggregate(ctx, id); err != nil {
			s.fail(w, r, status(err), "Batch "+id, err)
			return
		}
	}
	d.Duration = float64(time.Since(p.CreatedAt).Milliseconds())
	if d.Aggregate != nil {
		d.Duration = d.Aggregate.DurationMS
		d.Redrive = d.Aggregate.RedriveOf
	} else if p.Status.Final() {
		d.Duration = float64(p.UpdatedAt.Sub(p.CreatedAt).Milliseconds())
	}
	if ws, err := s.c.Workers(ctx); err == nil {
		for _, wp := range ws {
			if slices.Contains(wp.Activities, p.Activity) {
				d.Workers = append(d.Workers, wp)
			}
		}
	}
	q := r.URL.Query()
	if p.Failed > 0 {
		after, _ := strconv.ParseUint(q.Get("failed_after"), 10, 64)
		d.FailedFrom = after
		d.Failed, err = s.c.ResultsPage(ctx, id, client.ResultsQuery{AfterSeq: after, Limit: s.cfg.PageSize, FailedOnly: true})
		if err != nil {
			s.fail(w, r, status(err), "Failed items of "+id, err)
			return
		}
		if !d.Failed.End {
			d.FailedNext = "/batches/" + id + "?failed_after=" + strconv.FormatUint(d.Failed.NextSeq, 10) + "#failed"
		}
	}
	if d.ItemQuery = q.Get("item"); d.ItemQuery != "" {
		n, err := strconv.Atoi(d.ItemQuery)
		if err != nil || n < 0 || n >= p.Total {
			d.ItemError = "item " + strconv.Quote(d.ItemQuery) + ": give an item number from 0 to " + strconv.Itoa(p.Total-1)
		} else if d.Item, err = s.c.Result(ctx, id, n); err != nil {
			d.ItemError = err.Error()
		}
	}
	d.Charts = s.charts(ctx, p)
	s.render(w, r, http.StatusOK, "batch", view{Title: "Batch " + id, Nav: "batches", Notice: notice(q.Get("done")), Data: d})
}

// notice is the message shown after an action: fixed texts, never what
// the address says.
func notice(done string) string {
	return map[string]string{
		"cancel":  "Cancel requested: the batch ends and its queued work is removed.",
		"redrive": "Redriven: this batch runs the failed and not-run items again.",
		"update":  "max_in_flight changed.",
	}[done]
}

func (s *Server) chartsFragment(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := timeout(r)
	defer cancel()
	p, err := s.c.Status(ctx, r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), status(err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(s.charts(ctx, p)))
}

func (s *Server) downloadResults(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	agg, err := s.c.Aggregate(r.Context(), id)
	if err == nil && agg == nil {
		err = messages.Errorf(messages.CodeNotFound, "batch %s has no aggregate: it is running, or does not exist", id)
	}
	if err != nil {
		s.fail(w, r, status(err), "Results of "+id, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.results.jsonl"`)
	enc := newLineEncoder(w)
	for res, err := range s.c.Results(r.Context(), id) {
		if err != nil {
			// The status line is gone: end the body visibly wrong.
			_, _ = w.Write([]byte("\n{\"error\":" + strconv.Quote(err.Error()) + "}\n"))
			return
		}
		if err := enc.Encode(res); err != nil {
			return
		}
	}
}

func (s *Server) downloadAggregate(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := timeout(r)
	defer cancel()
	id := r.PathValue("id")
	agg, err := s.c.Aggregate(ctx, id)
	if err == nil && agg == nil {
		err = messages.Errorf(messages.CodeNotFound, "batch %s has no aggregate: it is running, or does not exist", id)
	}
	if err != nil {
		s.fail(w, r, status(err), "Aggregate of "+id, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.aggregate.json"`)
	_ = newLineEncoder(w).Encode(agg)
}

// action is what a confirmation page and its POST do.
type action struct {
	Name, Verb, Question string
}

var actions = map[string]action{
	"cancel":  {"cancel", "Cancel batch", "Cancel this batch? Running items finish; queued work is removed and the batch ends canceled."},
	"redrive": {"redrive", "Redrive failed items", "Run this batch's failed and not-run items again, as a new batch?"},
	"update":  {"update", "Change max_in_flight", "Change how many items of this batch may be out at once?"},
}

type confirmData struct {
	P           *client.Progress
	Action      action
	MaxInFlight int
}

func (s *Server) confirmPage(w http.ResponseWriter, r *http.Request) {
	a, ok := actions[r.PathValue("action")]
	if !ok {
		s.fail(w, r, http.StatusNotFound, "Not found", errors.New("no page at this address"))
		return
	}
	if s.cfg.ReadOnly {
		s.fail(w, r, http.StatusForbidden, "Read-only", errors.New("this dashboard runs read-only: it cannot cancel, redrive or update batches"))
		return
	}
	ctx, cancel := timeout(r)
	defer cancel()
	p, err := s.c.Status(ctx, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, status(err), a.Verb, err)
		return
	}
	d := confirmData{P: p, Action: a}
	if a.Name == "update" {
		n, err := strconv.Atoi(r.URL.Query().Get("max_in_flight"))
		if err != nil || n < 1 {
			s.fail(w, r, http.StatusBadRequest, a.Verb, messages.Errorf(messages.CodeInvalidRequest, "max_in_flight %q: give a whole number of at least 1", r.URL.Query().Get("max_in_flight")))
			return
		}
		d.MaxInFlight = n
	}
	s.render(w, r, http.StatusOK, "confirm", view{Title: a.Verb, Nav: "batches", Data: d})
}

func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	a, ok := actions[r.PathValue("action")]
	if !ok {
		s.fail(w, r, http.StatusNotFound, "Not found", errors.New("no such action"))
		return
	}
	if s.cfg.ReadOnly {
		s.fail(w, r, http.StatusForbidden, "Read-only", errors.New("this dashboard runs read-only: it cannot cancel, redrive or update batches"))
		return
	}
	if !s.checkCSRF(r) {
		s.fail(w, r, http.StatusForbidden, "Refused", errors.New("the form's CSRF token is missing or wrong: reload the page and try again"))
		return
	}
	ctx, cancel := timeout(r)
	defer cancel()
	id := r.PathValue("id")
	next := id
	var err error
	switch a.Name {
	case "cancel":
		_, err = s.c.Cancel(ctx, id)
	case "redrive":
		var rep *client.SubmitReply
		if rep, err = s.c.Redrive(ctx, id, ""); err == nil {
			next = rep.BatchID
		}
	case "update":
		n, perr := strconv.Atoi(r.PostFormValue("max_in_flight"))
		if perr != nil || n < 1 {
			err = messages.Errorf(messages.CodeInvalidRequest, "max_in_flight %q: give a whole number of at least 1", r.PostFormValue("max_in_flight"))
			break
		}
		_, err = s.c.Update(ctx, id, client.OptionsUpdate{MaxInFlight: &n})
	}
	if err != nil {
		s.fail(w, r, status(err), a.Verb+" refused", err)
		return
	}
	http.Redirect(w, r, "/batches/"+next+"?done="+a.Name, http.StatusSeeOther)
}

func (s *Server) workersPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := timeout(r)
	defer cancel()
	ws, err := s.c.Workers(ctx)
	if err != nil {
		s.fail(w, r, status(err), "Workers could not be listed", err)
		return
	}
	s.render(w, r, http.StatusOK, "workers", view{Title: "Workers", Nav: "workers", Data: ws})
}

// activityRow is a line of the activities page.
type activityRow struct {
	client.ActivityQueue
	Workers     int
	Concurrency int
	Stranded    bool // work queued and no live worker
}

func (s *Server) activitiesPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := timeout(r)
	defer cancel()
	qs, err := s.c.Activities(ctx)
	if err != nil {
		s.fail(w, r, status(err), "Activities could not be listed", err)
		return
	}
	ws, err := s.c.Workers(ctx)
	if err != nil {
		s.fail(w, r, status(err), "Workers could not be listed", err)
		return
	}
	rows := make([]activityRow, 0, len(qs))
	stranded := 0
	for _, q := range qs {
		row := activityRow{ActivityQueue: q, Workers: client.LiveWorkers(ws, q.Activity)}
		for _, wp := range ws {
			if slices.Contains(wp.Activities, q.Activity) && !wp.Draining {
				row.Concurrency += wp.Concurrency
			}
		}
		row.Stranded = q.Unserved(row.Workers)
		if row.Stranded {
			stranded++
		}
		rows = append(rows, row)
	}
	s.render(w, r, http.StatusOK, "activities", view{Title: "Activities", Nav: "activities", Data: struct {
		Rows     []activityRow
		Stranded int
	}{rows, stranded}})
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Token == "" {
		http.Redirect(w, r, "/batches", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "login", view{Title: "Log in", Data: safeNext(r.URL.Query().Get("next"))})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Token == "" {
		http.Redirect(w, r, "/batches", http.StatusSeeOther)
		return
	}
	if !s.checkCSRF(r) {
		s.fail(w, r, http.StatusForbidden, "Refused", errors.New("the form's CSRF token is missing or wrong: reload the page and try again"))
		return
	}
	next := safeNext(r.PostFormValue("next"))
	if !hmacEqual(r.PostFormValue("token"), s.cfg.Token) {
		s.render(w, r, http.StatusUnauthorized, "login", view{Title: "Log in", Notice: "Wrong token.", Data: next})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: authCookie, Value: s.session(), Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if !s.checkCSRF(r) {
		s.fail(w, r, http.StatusForbidden, "Refused", errors.New("the form's CSRF token is missing or wrong: reload the page and try again"))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: authCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
