// Package api is the daemon's HTTP surface: health and readiness probes,
// Prometheus metrics, and (added by later parts) webhooks, unsubscribe and
// the REST API.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyFunc reports whether the daemon can do its work; a non-nil error makes
// /readyz answer 503 with the error's text.
type ReadyFunc func(ctx context.Context) error

// Server serves the daemon's HTTP endpoints.
type Server struct {
	log      *slog.Logger
	mux      *http.ServeMux
	srv      *http.Server
	ready    ReadyFunc
	draining atomic.Bool
	requests *prometheus.CounterVec
}

// New builds the server; it does not listen until Serve.
func New(log *slog.Logger, reg *prometheus.Registry, ready ReadyFunc) *Server {
	s := &Server{log: log.With("component", "http"), mux: http.NewServeMux(), ready: ready}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cohort", Subsystem: "http", Name: "requests_total",
		Help: "HTTP requests served, by route and status class.",
	}, []string{"route", "code"})
	reg.MustRegister(s.requests)
	s.Handle("GET /healthz", "healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	}))
	s.Handle("GET /readyz", "readyz", http.HandlerFunc(s.readyz))
	s.Handle("GET /metrics", "metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return s
}

// Handle registers a handler under a ServeMux pattern, counted in metrics
// under route.
func (s *Server) Handle(pattern, route string, h http.Handler) {
	s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		s.requests.WithLabelValues(route, fmt.Sprintf("%dxx", sw.status/100)).Inc()
	}))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "shutting down")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", err)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Listen binds addr; errors name the address and what to change.
func (s *Server) Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http.listen: cannot listen on %s: %w; choose a free address or stop what holds it", addr, err)
	}
	return ln, nil
}

// Serve serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("listening", "addr", ln.Addr().String())
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Drain makes /readyz answer 503 so load balancers stop sending work.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops accepting connections and waits for in-flight requests.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	if s.srv == nil {
		return nil
	}
	return s.srv.Shutdown(ctx)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
