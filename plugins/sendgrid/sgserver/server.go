// Package sgserver is a local stand-in for SendGrid's v3 Mail Send API and
// Event Webhook, faithful to the documented contract, for tests and
// benchmarks that cannot reach SendGrid:
//
//   - POST /v3/mail/send with "Authorization: Bearer <key>": 401 with
//     SendGrid's body for a wrong key; 400 {"errors":[{message, field,
//     help}]} for a body SendGrid rejects (personalizations, recipients,
//     duplicates, from, subject, content, address syntax, categories,
//     custom_args size, reserved headers, ';' or ',' in recipient names);
//     413 with an nginx HTML page for a body of 30 MB or more; 200 with an
//     empty body in sandbox mode; otherwise 202 with an empty body and a
//     fresh X-Message-Id, and the message is recorded.
//   - Faults, changeable while it runs (SetFaults): added latency, 429
//     (with or without X-RateLimit-* headers), any error status (403, 500,
//     503...) with an optional Retry-After, and "accept then drop": the
//     message is recorded as accepted and the connection is closed without
//     an answer, the lost-response case.
//   - Accepted, CountByKey and Duplicates tell what arrived; custom_args
//     "cohort_key" identifies a message.
//   - An ECDSA P-256 key pair per server signs Event Webhook posts as
//     SendGrid does (PublicKeyBase64, SignEvents, PostEvents); EventsFor
//     makes the events SendGrid would send for what was accepted.
//
// Start a server with Start and stop it with Close. Every method is safe
// for concurrent use.
package sgserver

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SendPath is the Mail Send endpoint.
const SendPath = "/v3/mail/send"

// MaxBodyBytes is SendGrid's limit on a Mail Send body: a body of this size
// or more is answered 413.
const MaxBodyBytes = 30 << 20

// unauthorizedBody is what SendGrid answers a wrong API key with.
const unauthorizedBody = `{"errors":[{"field":null,"message":"The provided authorization grant is invalid, expired, or revoked","help":null}]}`

// tooLargeBody is the HTML page SendGrid's nginx answers a body over the
// limit with.
const tooLargeBody = "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n" +
	"<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"

// Config configures a Server. The zero Config is usable: the API key is
// then DefaultAPIKey.
type Config struct {
	// APIKey is the key requests must carry as "Authorization: Bearer
	// <key>". Default DefaultAPIKey. SetAPIKey changes it.
	APIKey string
	// Addr is the address to listen on. Default "127.0.0.1:0".
	Addr string
	// Now is the clock for X-RateLimit-Reset, ReceivedAt and event times.
	// Default time.Now.
	Now func() time.Time
	// MaxBodyBytes is the body size from which requests are answered 413.
	// Default MaxBodyBytes (30 MB); tests may lower it to stay fast.
	MaxBodyBytes int64
	// KeysOnly keeps only the count of each cohort_key and the Stats, not
	// the messages (Accepted and EventsFor then return nothing): for
	// benchmarks that send more than memory should hold.
	KeysOnly bool
	// Seed seeds the random choices of Fraction faults, so a run can be
	// repeated. 0 picks a random seed.
	Seed uint64
}

// DefaultAPIKey is the API key of a Server started without one. It is not a
// real SendGrid key.
const DefaultAPIKey = "SG.test-key.cohort-local-sendgrid"

// Server is a running local SendGrid.
type Server struct {
	// URL is the base URL, e.g. "http://127.0.0.1:41234": the plugin's
	// base_url and sendgrid.GetRequest's host.
	URL string

	now      func() time.Time
	maxBody  int64
	keysOnly bool
	http     *http.Server
	ln       net.Listener
	served   chan struct{}
	key      *ecdsa.PrivateKey
	pubB64   string

	mu       sync.Mutex // guards everything below
	apiKey   string
	faults   Faults
	rng      *mathrand.Rand
	requests int // Mail Send requests received, never reset
	acceptN  int // messages accepted, never reset
	stats    Stats
	accepted []Mail
	naccept  int            // accepted since the start or Reset
	keys     map[string]int // accepted emails by cohort_key
	changed  chan struct{}  // closed and replaced when accepted grows
}

// Stats counts Mail Send requests by how they were answered.
type Stats struct {
	Requests     int // every request to /v3/mail/send
	Accepted     int // 202, including dropped ones
	Sandbox      int // 200: valid, sandbox mode, not recorded
	Dropped      int // accepted, then the connection was closed unanswered
	BadRequest   int // 400
	Unauthorized int // 401
	TooLarge     int // 413
	RateLimited  int // 429
	Errors       int // injected error statuses (ErrorFault)
}

// Faults are injected into Mail Send requests. The zero Faults injects
// nothing. Checks run in this order: Latency, the announced body size
// (413), the API key, RateLimit, Error, the body (413, 400), then Drop for
// an accepted message.
type Faults struct {
	// Latency is added before each request is handled (ended early if the
	// client goes away).
	Latency time.Duration
	// RateLimit answers chosen requests 429.
	RateLimit RateLimitFault
	// Error answers chosen requests with an error status.
	Error ErrorFault
	// Drop records chosen accepted messages, then closes the connection
	// without answering. Every counts accepted messages, not requests.
	Drop Pick
}

// Pick chooses requests: every Every-th one (the Every-th, 2·Every-th...,
// counted from the server's start) and, independently, a random Fraction
// of them. The zero Pick chooses none.
type Pick struct {
	Every    int
	Fraction float64
}

func (p Pick) active() bool { return p.Every > 0 || p.Fraction > 0 }

// RateLimitFault is a 429 answer: {"errors":[{"field":null,"message":"too
// many requests"}]}.
type RateLimitFault struct {
	Pick
	// Headers adds X-RateLimit-Limit, X-RateLimit-Remaining (0) and
	// X-RateLimit-Reset (epoch seconds); SendGrid sometimes leaves them out.
	Headers bool
	// Limit is the X-RateLimit-Limit value. Default 600.
	Limit int
	// Reset is how far ahead X-RateLimit-Reset is. Default 1s.
	Reset time.Duration
}

// ErrorFault is an error answer with a JSON errors body.
type ErrorFault struct {
	Pick
	// Status is the HTTP status. Default 500.
	Status int
	// RetryAfter, if positive, is sent as Retry-After in whole seconds
	// (at least 1).
	RetryAfter time.Duration
}

// Start starts a server listening on cfg.Addr.
func Start(cfg Config) (*Server, error) {
	if cfg.APIKey == "" {
		cfg.APIKey = DefaultAPIKey
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = MaxBodyBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = mathrand.Uint64()
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sgserver: webhook signing key: %w", err)
	}
	pub, err := marshalPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("sgserver: webhook public key: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("sgserver: listen on %s: %w", cfg.Addr, err)
	}
	s := &Server{
		URL:      "http://" + ln.Addr().String(),
		now:      cfg.Now,
		maxBody:  cfg.MaxBodyBytes,
		keysOnly: cfg.KeysOnly,
		keys:     map[string]int{},
		ln:       ln,
		served:   make(chan struct{}),
		key:      key,
		pubB64:   pub,
		apiKey:   cfg.APIKey,
		rng:      mathrand.New(mathrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		changed:  make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc(SendPath, s.handleSend)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeErrors(w, http.StatusNotFound, nil, apiError{Message: "not found"})
	})
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() {
		defer close(s.served)
		_ = s.http.Serve(ln)
	}()
	return s, nil
}

// Close stops the server, closing open connections.
func (s *Server) Close() error {
	err := s.http.Close()
	<-s.served
	if err != nil {
		return fmt.Errorf("sgserver: close: %w", err)
	}
	return nil
}

// SetAPIKey changes the API key requests must carry.
func (s *Server) SetAPIKey(key string) {
	s.mu.Lock()
	s.apiKey = key
	s.mu.Unlock()
}

// APIKey returns the API key requests must carry.
func (s *Server) APIKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiKey
}

// SetFaults replaces the faults injected from the next request on.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// Faults returns the faults being injected.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Stats returns the request counts so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Reset forgets the accepted messages and the counts (not the faults, the
// key or the Every-th positions).
func (s *Server) Reset() {
	s.mu.Lock()
	s.accepted = nil
	s.naccept = 0
	s.keys = map[string]int{}
	s.stats = Stats{}
	s.mu.Unlock()
}

// picked says whether p chooses the n-th item. s.mu is held.
func (s *Server) picked(p Pick, n int) bool {
	if p.Every > 0 && n%p.Every == 0 {
		return true
	}
	return p.Fraction > 0 && s.rng.Float64() < p.Fraction
}

// verdict is what the fault checks decided for one request.
type verdict int

const (
	pass verdict = iota
	unauthorized
	rateLimited
	failed
)

func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	s.stats.Requests++
	f := s.faults
	s.mu.Unlock()

	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeErrors(w, http.StatusMethodNotAllowed, nil, apiError{Message: "method not allowed"})
		return
	}

	// SendGrid's nginx refuses an announced oversized body before the API
	// sees the request, whatever its key.
	if r.ContentLength >= s.maxBody {
		_, _ = io.CopyN(io.Discard, r.Body, 2*s.maxBody)
		s.count(func(st *Stats) { st.TooLarge++ })
		writeRaw(w, http.StatusRequestEntityTooLarge, "text/html", tooLargeBody)
		return
	}

	s.mu.Lock()
	v := pass
	n := s.requests
	switch {
	case r.Header.Get("Authorization") != "Bearer "+s.apiKey:
		v = unauthorized
		s.stats.Unauthorized++
	case f.RateLimit.active() && s.picked(f.RateLimit.Pick, n):
		v = rateLimited
		s.stats.RateLimited++
	case f.Error.active() && s.picked(f.Error.Pick, n):
		v = failed
		s.stats.Errors++
	}
	s.mu.Unlock()

	switch v {
	case unauthorized:
		writeRaw(w, http.StatusUnauthorized, "application/json", unauthorizedBody)
		return
	case rateLimited:
		if f.RateLimit.Headers {
			limit := f.RateLimit.Limit
			if limit <= 0 {
				limit = 600
			}
			reset := f.RateLimit.Reset
			if reset <= 0 {
				reset = time.Second
			}
			w.Header().Set("X-RateLimit-Limit", strconv.Itoa(limit))
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(s.now().Add(reset).Unix(), 10))
		}
		writeErrors(w, http.StatusTooManyRequests, nil, apiError{Message: "too many requests"})
		return
	case failed:
		status := f.Error.Status
		if status == 0 {
			status = http.StatusInternalServerError
		}
		if f.Error.RetryAfter > 0 {
			secs := max(int64((f.Error.RetryAfter+time.Second-1)/time.Second), 1)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		}
		writeErrors(w, status, nil, apiError{Message: strings.ToLower(http.StatusText(status))})
		return
	}

	body, tooLarge, err := readBody(r, s.maxBody)
	switch {
	case tooLarge:
		s.count(func(st *Stats) { st.TooLarge++ })
		writeRaw(w, http.StatusRequestEntityTooLarge, "text/html", tooLargeBody)
		return
	case err != nil:
		s.count(func(st *Stats) { st.BadRequest++ })
		writeErrors(w, http.StatusBadRequest, nil, apiError{Message: "Bad Request", Help: nil})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeErrors(w, http.StatusUnsupportedMediaType, nil, apiError{Message: "Content-Type should be application/json."})
		return
	}
	var req sendRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		s.count(func(st *Stats) { st.BadRequest++ })
		writeErrors(w, http.StatusBadRequest, nil, apiError{Message: "Bad Request"})
		return
	}
	if errs := validate(&req, s.now()); len(errs) > 0 {
		s.count(func(st *Stats) { st.BadRequest++ })
		writeErrors(w, http.StatusBadRequest, errs)
		return
	}
	if req.sandbox() {
		s.count(func(st *Stats) { st.Sandbox++ })
		w.WriteHeader(http.StatusOK)
		return
	}

	id := newID()
	s.mu.Lock()
	m := req.mail(id, s.now())
	s.stats.Accepted++
	s.naccept++
	s.acceptN++
	drop := f.Drop.active() && s.picked(f.Drop, s.acceptN)
	if drop {
		s.stats.Dropped++
		m.Dropped = true
	}
	for _, k := range m.Keys() {
		s.keys[k]++
	}
	if !s.keysOnly {
		s.accepted = append(s.accepted, m)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()

	if drop {
		dropConnection(w)
		return
	}
	w.Header().Set("X-Message-Id", id)
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// dropConnection closes the request's connection without a response.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Cannot hijack (HTTP/2): abort the handler, which resets the stream.
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		// Reset rather than FIN, so the client cannot mistake it for a
		// server closing an idle connection.
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// readBody reads a request body, gunzipping it when Content-Encoding is
// gzip. tooLarge is set when it is limit bytes or more; the rest is then
// drained (up to a bound) so that the client reads the 413.
func readBody(r *http.Request, limit int64) (body []byte, tooLarge bool, err error) {
	if r.ContentLength >= limit {
		_, _ = io.CopyN(io.Discard, r.Body, 2*limit)
		return nil, true, nil
	}
	body, err = io.ReadAll(io.LimitReader(r.Body, limit))
	if err != nil {
		return nil, false, fmt.Errorf("read body: %w", err)
	}
	if int64(len(body)) >= limit {
		_, _ = io.CopyN(io.Discard, r.Body, 2*limit)
		return nil, true, nil
	}
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, false, fmt.Errorf("gunzip body: %w", err)
		}
		body, err = io.ReadAll(io.LimitReader(zr, limit))
		if err != nil {
			return nil, false, fmt.Errorf("gunzip body: %w", err)
		}
		if int64(len(body)) >= limit {
			return nil, true, nil
		}
	}
	return body, false, nil
}

// apiError is one entry of SendGrid's {"errors": [...]} body. Field and
// Help are null when absent.
type apiError struct {
	Message string  `json:"message"`
	Field   *string `json:"field"`
	Help    *string `json:"help"`
}

func writeErrors(w http.ResponseWriter, status int, errs []apiError, more ...apiError) {
	errs = append(slices.Clip(errs), more...)
	b, _ := json.Marshal(struct {
		Errors []apiError `json:"errors"`
	}{errs})
	writeRaw(w, status, "application/json", string(b))
}

func writeRaw(w http.ResponseWriter, status int, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// newID returns an id like SendGrid's X-Message-Id: 16 random bytes in
// unpadded URL-safe base64 (22 characters).
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Accepted returns the accepted messages (dropped ones included), oldest
// first.
func (s *Server) Accepted() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.accepted)
}

// CountByKey counts accepted emails by custom_args "cohort_key": one per
// personalization (each is an email of its own), the personalization's
// custom_args overriding the message's. Emails without a key are not
// counted.
func (s *Server) CountByKey() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.keys)
}

// Duplicates returns the cohort_keys accepted more than once, sorted.
func (s *Server) Duplicates() []string {
	var dups []string
	for k, n := range s.CountByKey() {
		if n > 1 {
			dups = append(dups, k)
		}
	}
	slices.Sort(dups)
	return dups
}

// WaitAccepted waits until at least n messages have been accepted (since
// the start or the last Reset) or ctx is done, and returns the accepted
// messages (none with KeysOnly).
func (s *Server) WaitAccepted(ctx context.Context, n int) ([]Mail, error) {
	for {
		s.mu.Lock()
		if s.naccept >= n {
			out := slices.Clone(s.accepted)
			s.mu.Unlock()
			return out, nil
		}
		ch, have := s.changed, s.naccept
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("sgserver: %d of %d messages accepted: %w", have, n, ctx.Err())
		}
	}
}
