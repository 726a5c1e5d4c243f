package ui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// The dashboard's safety rules, in one place:
//   - without a token it answers only requests addressed to a loopback
//     host (a page of another site that rebinds its name to 127.0.0.1
//     gets nothing), unless it was started read-only on another address;
//   - with a token, every page but the login form needs it (a cookie set
//     by the form, or "Authorization: Bearer <token>");
//   - actions are POSTs carrying a CSRF token tied to a cookie of the
//     browser's, and cross-origin POSTs are refused whatever they carry;
//   - every page forbids framing, inline scripts and outside resources.
const (
	authCookie = "fanout_ui_auth"
	csrfCookie = "fanout_ui_csrf"
	csrfField  = "csrf"
)

// secure wraps the routes with the safety rules.
func (s *Server) secure(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	guarded := cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if s.cfg.Token == "" && s.loopback && !loopbackHost(r.Host) {
			http.Error(w, "this dashboard answers only on a loopback address (localhost, 127.0.0.1, [::1]); host "+r.Host+" refused", http.StatusMisdirectedRequest)
			return
		}
		if s.cfg.Token != "" && !s.authorized(r) && r.URL.Path != "/login" && !strings.HasPrefix(r.URL.Path, "/static/") {
			if r.Method == http.MethodGet && r.URL.Path != "/events" {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "a token is required: log in at /login, or send Authorization: Bearer <token>", http.StatusUnauthorized)
			return
		}
		guarded.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether a request's Host header names this machine.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	return host == "localhost" || strings.HasSuffix(host, ".localhost") || (net.ParseIP(host) != nil && net.ParseIP(host).IsLoopback())
}

// authorized reports whether the request carries the token.
func (s *Server) authorized(r *http.Request) bool {
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return subtle.ConstantTimeCompare([]byte(bearer), []byte(s.cfg.Token)) == 1
	}
	c, err := r.Cookie(authCookie)
	return err == nil && hmac.Equal([]byte(c.Value), []byte(s.session()))
}

// session is the login cookie's value: derived from the token, so it
// outlives a restart and changes with the token, and the token itself is
// never stored in the browser.
func (s *Server) session() string {
	m := hmac.New(sha256.New, []byte(s.cfg.Token))
	m.Write([]byte("fanout ui session"))
	return hex.EncodeToString(m.Sum(nil))
}

// csrfToken returns the token forms must carry, setting the browser's
// CSRF cookie if it has none.
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(csrfCookie)
	value := ""
	if err == nil && len(c.Value) == 64 {
		value = c.Value
	} else {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		value = hex.EncodeToString(b)
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	}
	return s.sign(value)
}

func (s *Server) sign(value string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil))
}

// checkCSRF reports whether a POST carries the CSRF token of the
// browser's cookie.
func (s *Server) checkCSRF(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || c.Value == "" {
		return false
	}
	return hmac.Equal([]byte(r.PostFormValue(csrfField)), []byte(s.sign(c.Value)))
}

// safeNext keeps a login's return path on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/batches"
	}
	return next
}

// hmacEqual compares a secret in constant time.
func hmacEqual(given, want string) bool {
	return subtle.ConstantTimeCompare([]byte(given), []byte(want)) == 1
}
