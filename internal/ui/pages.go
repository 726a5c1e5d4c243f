package ui

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/fanoutdev/fanout/client"
)

// pages holds one template set per page, each with the shared layout.
type pages struct {
	byName map[string]*template.Template
}

var funcs = template.FuncMap{
	"age":      age,
	"duration": duration,
	"rate":     rate,
	"percent":  func(p float64) string { return strconv.FormatFloat(p, 'f', 1, 64) },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"d":  func(d client.Duration) string { return time.Duration(d).String() },
	"ms": func(from, to time.Time) float64 { return float64(to.Sub(from).Milliseconds()) },
}

func parsePages() (*pages, error) {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, name := range names {
		if name == "templates/layout.html" || name == "templates/partials.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/partials.html", name)
		if err != nil {
			return nil, fmt.Errorf("ui: template %s: %w", name, err)
		}
		p.byName[name[len("templates/"):len(name)-len(".html")]] = t
	}
	return p, nil
}

// view is what every page's layout needs.
type view struct {
	Title    string
	Nav      string
	CSRF     string
	ReadOnly bool
	Token    bool // a token protects the dashboard (a log-out link)
	Notice   string
	Data     any
}

// render writes a page, or a plain error if the template fails (before
// anything was written: pages render into a buffer).
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	v.CSRF = s.csrfToken(w, r)
	v.ReadOnly = s.cfg.ReadOnly
	v.Token = s.cfg.Token != ""
	var buf bytes.Buffer
	if err := s.pages.byName[page].Execute(&buf, v); err != nil {
		s.log.Error().Err(err).Str("page", page).Msg("ui: render")
		http.Error(w, "the page could not be drawn: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail shows an error page; the message is escaped like everything else.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, title string, err error) {
	if status >= 500 {
		s.log.Warn().Err(err).Str("path", r.URL.Path).Msg("ui: request failed")
	}
	s.render(w, r, status, "error", view{Title: title, Data: err.Error()})
}

func age(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return duration(float64(time.Since(t).Milliseconds())) + " ago"
}

// duration formats milliseconds for a person: 850ms, 12.3s, 4m05s, 2h10m, 3d4h.
func duration(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	switch {
	case ms < 0:
		return "—"
	case d < time.Second:
		return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// rate formats items per second.
func rate(r float64) string {
	switch {
	case r <= 0 || math.IsNaN(r) || math.IsInf(r, 0):
		return "—"
	case r < 10:
		return strconv.FormatFloat(r, 'f', 2, 64) + "/s"
	case r < 10_000:
		return strconv.FormatFloat(r, 'f', 0, 64) + "/s"
	}
	return strconv.FormatFloat(r/1000, 'f', 1, 64) + "k/s"
}
