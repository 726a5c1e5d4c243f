// Package ui is fanout's web dashboard: server-rendered pages of batches,
// workers and activities, live progress over server-sent events, and the
// cancel, redrive and update actions. It reads only what the public client
// reads (status, list, results, progress events, worker presence, stream
// and consumer information), so it works against any deployment.
package ui

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanoutdev/fanout/client"
)

//go:embed templates/*.html static/*
var assets embed.FS

// DefaultListen is where the dashboard listens unless told otherwise:
// loopback only.
const DefaultListen = "127.0.0.1:8480"

// ErrUnsafeListen is returned by New for a listen address other machines
// can reach when neither a token nor read-only mode is set.
var ErrUnsafeListen = errors.New("ui: a listen address other machines can reach needs a token or read-only mode")

// Config configures the dashboard. The zero value of each field but Client
// is a default.
type Config struct {
	// Client is how the dashboard reads and acts (required).
	Client *client.Client
	// Listen is the TCP address to serve on (default DefaultListen).
	Listen string
	// Token, if set, is required from every visitor (a login form, or an
	// "Authorization: Bearer" header). Required, unless ReadOnly, when
	// Listen is not a loopback address.
	Token string
	// ReadOnly hides and refuses the actions (cancel, redrive, update).
	ReadOnly bool
	// PageSize is the number of batches and failed items per page
	// (default 50).
	PageSize int
	// Logger logs requests that failed (default: none).
	Logger zerolog.Logger
}

// Server is a running (or ready to run) dashboard.
type Server struct {
	cfg      Config
	c        *client.Client
	log      zerolog.Logger
	loopback bool
	csrfKey  []byte
	pages    *pages
	handler  http.Handler

	mu       sync.Mutex
	http     *http.Server
	listener net.Listener
	done     chan struct{}
}

// New checks the configuration and makes the dashboard; Start serves it,
// Handler gives it to a server of one's own.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil {
		return nil, errors.New("ui: a client is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 50
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("ui: listen address %q: %w (give host:port, such as %s)", cfg.Listen, err, DefaultListen)
	}
	loopback := IsLoopback(host)
	if !loopback && cfg.Token == "" && !cfg.ReadOnly {
		return nil, fmt.Errorf("%w: %s is not a loopback address; set a token (--ui-token or $FANOUT_UI_TOKEN), or run read-only (--read-only), or listen on 127.0.0.1", ErrUnsafeListen, cfg.Listen)
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, c: cfg.Client, log: cfg.Logger, loopback: loopback, pages: p, csrfKey: make([]byte, 32)}
	if _, err := rand.Read(s.csrfKey); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// IsLoopback reports whether a listen host reaches this machine only:
// localhost, or a loopback IP. An empty host (all interfaces) is not.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Handler is the dashboard as an http.Handler, with its safety checks.
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens and serves in the background; it returns once the address
// is bound (see URL).
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http != nil {
		return errors.New("ui: already started")
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("ui: listen on %s: %w", s.cfg.Listen, err)
	}
	s.listener = ln
	// Live updates hold their requests open: they end when the server
	// shuts down, through the requests' base context.
	base, endLive := context.WithCancel(context.WithoutCancel(ctx))
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	s.http.RegisterOnShutdown(endLive)
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		defer endLive()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("ui: serve")
		}
	}()
	return nil
}

// URL is the address the dashboard serves on, once started.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return ""
	}
	addr := s.listener.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

// Stop ends the server: open pages (live updates included) are closed.
// A second Stop does nothing.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	h, done := s.http, s.done
	s.mu.Unlock()
	if h == nil {
		return nil
	}
	err := h.Shutdown(ctx)
	if err != nil {
		_ = h.Close()
	}
	<-done
	return err
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Stop(stopCtx)
}
