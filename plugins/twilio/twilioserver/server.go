// Package twilioserver is a local stand-in for Twilio's Programmable
// Messaging API, faithful to the documented contract, for tests of code that
// sends SMS through Twilio (the real twilio-go client pointed at it) and
// receives Twilio's webhooks.
//
// It serves POST /2010-04-01/Accounts/{AccountSid}/Messages.json with HTTP
// Basic auth (account SID and auth token; 401 with error 20003 otherwise),
// form parameters To, From or MessagingServiceSid, Body and StatusCallback,
// and answers 201 with the Message resource as JSON (sid "SM" + 32 hex,
// status "queued", or "accepted" when sent through a messaging service).
// Errors are Twilio's JSON error bodies {"code","message","more_info",
// "status"}:
//
//	21211 400  the To number is not a valid phone number (not E.164, or
//	           marked with Unassigned)
//	21602 400  no Body
//	21603 400  neither From nor MessagingServiceSid
//	21604 400  no To
//	21609 400  StatusCallback is not an absolute http(s) URL
//	21610 400  the recipient replied STOP (see Stop, and SendInbound)
//	21614 400  the To number is not a mobile number (see NotMobile)
//	21617 400  Body longer than 1600 characters
//	20003 401  wrong account SID or auth token
//	20404 404  another account's path, or an unknown resource
//
// Faults are injected per request (InjectFaults): 429 with error 20429 and
// an optional Retry-After header, 500, 503, and "drop": the message is
// accepted and recorded, then the connection is closed without an answer,
// the lost response that makes a sender's outcome unknown. SetLatency delays
// every answer.
//
// Every accepted message is recorded (Messages) so a test can assert that
// none was sent twice. The server also plays Twilio's side of webhooks:
// SendStatus posts a signed status callback to a message's StatusCallback
// URL and SendInbound posts a signed inbound SMS to the inbound URL; both are
// signed with X-Twilio-Signature (see Signature).
//
// Opt-outs are kept per recipient number for the whole account (Twilio keeps
// them per sender and recipient; one sender per test is the common case).
package twilioserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// APIVersion is the API version in Twilio's paths and resources.
const APIVersion = "2010-04-01"

// maxBody is the longest message body Twilio accepts, in characters.
const maxBody = 1600

// callbackTimeout bounds each webhook the server posts.
const callbackTimeout = 10 * time.Second

// e164 is what the server accepts as a To number.
var e164 = regexp.MustCompile(`^\+[1-9][0-9]{7,14}$`)

// Fault is a failure injected into one API request.
type Fault int

const (
	// FaultRateLimit answers 429 with error 20429 (and Retry-After when
	// SetRetryAfter set one).
	FaultRateLimit Fault = iota + 1
	// FaultInternal answers 500 with error 20500.
	FaultInternal
	// FaultUnavailable answers 503 with error 20503.
	FaultUnavailable
	// FaultDrop accepts and records the message, then closes the connection
	// without answering: the sender cannot know that it was accepted.
	FaultDrop
)

func (f Fault) String() string {
	switch f {
	case FaultRateLimit:
		return "rate-limit"
	case FaultInternal:
		return "internal"
	case FaultUnavailable:
		return "unavailable"
	case FaultDrop:
		return "drop"
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// Message is an accepted message as the server recorded it.
type Message struct {
	SID                 string
	AccountSID          string
	To                  string
	From                string
	MessagingServiceSID string
	Body                string
	StatusCallback      string
	// Status is the last status: "queued" or "accepted" at first, then
	// whatever SendStatus reported.
	Status  string
	Created time.Time
}

// Reply is the answer a webhook receiver gave the server.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// Server is a running stand-in for Twilio. Its methods are safe for
// concurrent use.
type Server struct {
	accountSID string
	authToken  string
	srv        *httptest.Server
	client     *http.Client
	now        func() time.Time

	mu         sync.Mutex
	messages   []Message
	bySID      map[string]int // index into messages
	stopped    map[string]bool
	notMobile  map[string]bool
	unassigned map[string]bool
	faults     []Fault
	latency    time.Duration
	retryAfter time.Duration
	requests   int
	inFlight   int
	peak       int
	inboundURL string
}

// New starts a server on a loopback port for the account accountSID
// (e.g. "AC" + 32 hex digits) with auth token authToken. Close it when done.
func New(accountSID, authToken string) *Server {
	s := &Server{
		accountSID: accountSID,
		authToken:  authToken,
		client:     &http.Client{Timeout: callbackTimeout},
		now:        time.Now,
		bySID:      map[string]int{},
		stopped:    map[string]bool{},
		notMobile:  map[string]bool{},
		unassigned: map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /"+APIVersion+"/Accounts/{account}/Messages.json", s.createMessage)
	mux.HandleFunc("/", s.notFound)
	s.srv = httptest.NewServer(mux)
	return s
}

// URL is the server's base URL, e.g. "http://127.0.0.1:40123": what
// twilio-go would reach as https://api.twilio.com.
func (s *Server) URL() string { return s.srv.URL }

// AccountSID is the account the server serves.
func (s *Server) AccountSID() string { return s.accountSID }

// AuthToken is the account's auth token, which also signs webhooks.
func (s *Server) AuthToken() string { return s.authToken }

// Close shuts the server down, closing open connections.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Stop marks numbers as having replied STOP: sending to them fails with
// error 21610 until Unstop.
func (s *Server) Stop(numbers ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range numbers {
		s.stopped[n] = true
	}
}

// Unstop clears the STOP of numbers, as a START reply does.
func (s *Server) Unstop(numbers ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range numbers {
		delete(s.stopped, n)
	}
}

// Stopped reports whether number is opted out.
func (s *Server) Stopped(number string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped[number]
}

// NotMobile marks numbers as landlines: sending to them fails with 21614.
func (s *Server) NotMobile(numbers ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range numbers {
		s.notMobile[n] = true
	}
}

// Unassigned marks well-formed numbers as not valid phone numbers (no such
// number exists): sending to them fails with 21211 like a malformed To.
func (s *Server) Unassigned(numbers ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range numbers {
		s.unassigned[n] = true
	}
}

// InjectFaults queues faults: each following authenticated API request
// takes the next one, in order, until the queue is empty. A FaultDrop taken
// by a request that fails validation (21211, 21610...) is used up, and the
// error is answered as usual.
func (s *Server) InjectFaults(faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, faults...)
}

// PendingFaults is how many injected faults no request has taken yet.
func (s *Server) PendingFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.faults)
}

// SetLatency delays every API answer by d, after the request is processed
// (an accepted message is recorded before the wait). A client that gives up
// waiting has still had its message accepted, as with the real service.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetRetryAfter sets the Retry-After header of 429 answers, in whole
// seconds (rounded up); 0, the default, sends none.
func (s *Server) SetRetryAfter(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retryAfter = d
}

// SetInboundURL sets where SendInbound posts inbound messages: the
// "A message comes in" webhook of the receiving number.
func (s *Server) SetInboundURL(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inboundURL = u
}

// Requests counts the requests the API received, answered or not,
// authenticated or not.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// PeakInFlight is the most Messages requests the server was handling at
// once since it started: a check of a sender's concurrency bound.
func (s *Server) PeakInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// Messages returns the accepted messages in the order they were accepted.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Message returns the accepted message with the given SID.
func (s *Server) Message(sid string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.bySID[sid]
	if !ok {
		return Message{}, false
	}
	return s.messages[i], true
}

// apiError is Twilio's JSON error body.
type apiError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

func writeError(w http.ResponseWriter, status, code int, format string, args ...any) {
	body, _ := json.Marshal(apiError{
		Code:     code,
		Message:  fmt.Sprintf(format, args...),
		MoreInfo: "https://www.twilio.com/docs/errors/" + strconv.Itoa(code),
		Status:   status,
	})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	s.mu.Unlock()
	writeError(w, http.StatusNotFound, 20404, "The requested resource %s was not found", r.URL.Path)
}

func (s *Server) authenticated(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	return ok &&
		subtle.ConstantTimeCompare([]byte(user), []byte(s.accountSID)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pass), []byte(s.authToken)) == 1
}

// createMessage is POST /2010-04-01/Accounts/{AccountSid}/Messages.json.
func (s *Server) createMessage(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	s.inFlight++
	s.peak = max(s.peak, s.inFlight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()

	if !s.authenticated(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		writeError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if r.PathValue("account") != s.accountSID {
		writeError(w, http.StatusNotFound, 20404, "The requested resource %s was not found", r.URL.Path)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, 20001, "Could not parse the request body: %v", err)
		return
	}

	s.mu.Lock()
	var fault Fault
	if len(s.faults) > 0 {
		fault = s.faults[0]
		s.faults = s.faults[1:]
	}
	latency, retryAfter := s.latency, s.retryAfter
	s.mu.Unlock()

	switch fault {
	case FaultRateLimit:
		if retryAfter > 0 {
			secs := int((retryAfter + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
		}
		s.wait(r.Context(), latency)
		writeError(w, http.StatusTooManyRequests, 20429, "Too Many Requests")
		return
	case FaultInternal:
		s.wait(r.Context(), latency)
		writeError(w, http.StatusInternalServerError, 20500, "An internal server error has occurred")
		return
	case FaultUnavailable:
		s.wait(r.Context(), latency)
		writeError(w, http.StatusServiceUnavailable, 20503, "Service is unavailable. Please try again")
		return
	}

	form := r.PostForm
	to := form.Get("To")
	from := form.Get("From")
	service := form.Get("MessagingServiceSid")
	body := form.Get("Body")
	callback := form.Get("StatusCallback")
	switch {
	case to == "":
		writeError(w, http.StatusBadRequest, 21604, "A 'To' phone number is required.")
		return
	case !e164.MatchString(to):
		writeError(w, http.StatusBadRequest, 21211, "Invalid 'To' Phone Number: %s", to)
		return
	case from == "" && service == "":
		writeError(w, http.StatusBadRequest, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message.")
		return
	case body == "":
		writeError(w, http.StatusBadRequest, 21602, "Message body is required.")
		return
	case utf8.RuneCountInString(body) > maxBody:
		writeError(w, http.StatusBadRequest, 21617, "The concatenated message body exceeds the %d character limit.", maxBody)
		return
	case callback != "" && !absoluteHTTP(callback):
		writeError(w, http.StatusBadRequest, 21609, "Invalid StatusCallback url: %s", callback)
		return
	}

	s.mu.Lock()
	stopped, notMobile, unassigned := s.stopped[to], s.notMobile[to], s.unassigned[to]
	s.mu.Unlock()
	switch {
	case unassigned:
		writeError(w, http.StatusBadRequest, 21211, "Invalid 'To' Phone Number: %s", to)
		return
	case stopped:
		writeError(w, http.StatusBadRequest, 21610, "Attempt to send to unsubscribed recipient")
		return
	case notMobile:
		writeError(w, http.StatusBadRequest, 21614, "'To' number %s is not a valid mobile number", to)
		return
	}

	m := Message{
		SID:                 newSID("SM"),
		AccountSID:          s.accountSID,
		To:                  to,
		From:                from,
		MessagingServiceSID: service,
		Body:                body,
		StatusCallback:      callback,
		Status:              "queued",
		Created:             s.now().UTC().Truncate(time.Second),
	}
	if service != "" && from == "" {
		m.Status = "accepted"
	}
	s.mu.Lock()
	s.bySID[m.SID] = len(s.messages)
	s.messages = append(s.messages, m)
	s.mu.Unlock()

	if fault == FaultDrop {
		// The request has been read (ParseForm) and the message kept: hang
		// up without a word.
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}

	s.wait(r.Context(), latency)
	out, _ := json.Marshal(resource(m))
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(out)
}

// wait sleeps for d or until ctx is done.
func (s *Server) wait(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func absoluteHTTP(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// messageResource is the Message resource as Twilio returns it.
type messageResource struct {
	AccountSID          string            `json:"account_sid"`
	APIVersion          string            `json:"api_version"`
	Body                string            `json:"body"`
	DateCreated         string            `json:"date_created"`
	DateSent            *string           `json:"date_sent"`
	DateUpdated         string            `json:"date_updated"`
	Direction           string            `json:"direction"`
	ErrorCode           *int              `json:"error_code"`
	ErrorMessage        *string           `json:"error_message"`
	From                *string           `json:"from"`
	MessagingServiceSID *string           `json:"messaging_service_sid"`
	NumMedia            string            `json:"num_media"`
	NumSegments         string            `json:"num_segments"`
	Price               *string           `json:"price"`
	PriceUnit           string            `json:"price_unit"`
	SID                 string            `json:"sid"`
	Status              string            `json:"status"`
	SubresourceURIs     map[string]string `json:"subresource_uris"`
	To                  string            `json:"to"`
	URI                 string            `json:"uri"`
}

func resource(m Message) messageResource {
	date := m.Created.Format(time.RFC1123Z)
	base := "/" + APIVersion + "/Accounts/" + m.AccountSID + "/Messages/" + m.SID
	r := messageResource{
		AccountSID:      m.AccountSID,
		APIVersion:      APIVersion,
		Body:            m.Body,
		DateCreated:     date,
		DateUpdated:     date,
		Direction:       "outbound-api",
		NumMedia:        "0",
		NumSegments:     strconv.Itoa(segments(m.Body)),
		PriceUnit:       "USD",
		SID:             m.SID,
		Status:          m.Status,
		SubresourceURIs: map[string]string{"media": base + "/Media.json"},
		To:              m.To,
		URI:             base + ".json",
	}
	if m.From != "" {
		r.From = &m.From
	}
	if m.MessagingServiceSID != "" {
		r.MessagingServiceSID = &m.MessagingServiceSID
		r.NumSegments = "0" // no sender assigned yet
	}
	return r
}

// segments estimates how many SMS segments body takes: 153 GSM characters
// per segment, 67 when the body needs UCS-2 (any non-ASCII character, a
// simplification of the GSM 03.38 alphabet).
func segments(body string) int {
	n := utf8.RuneCountInString(body)
	single, multi := 160, 153
	for _, r := range body {
		if r > 0x7f {
			single, multi = 70, 67
			break
		}
	}
	if n <= single {
		return 1
	}
	return (n + multi - 1) / multi
}

// newSID returns prefix + 32 random hex digits.
func newSID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// SendStatus posts a status callback for the message sid to its
// StatusCallback URL, signed, as Twilio does when the message changes
// status: status is queued, sent, delivered, undelivered or failed;
// errorCode, when not 0, goes in ErrorCode (e.g. 30003 unreachable, 21610).
// It records the status on the message.
func (s *Server) SendStatus(ctx context.Context, sid, status string, errorCode int) (Reply, error) {
	s.mu.Lock()
	i, ok := s.bySID[sid]
	var m Message
	if ok {
		s.messages[i].Status = status
		m = s.messages[i]
	}
	s.mu.Unlock()
	if !ok {
		return Reply{}, fmt.Errorf("status callback: no message %s", sid)
	}
	if m.StatusCallback == "" {
		return Reply{}, fmt.Errorf("status callback: message %s was sent without a StatusCallback", sid)
	}
	form := url.Values{
		"AccountSid":    {m.AccountSID},
		"ApiVersion":    {APIVersion},
		"MessageSid":    {m.SID},
		"MessageStatus": {status},
		"SmsSid":        {m.SID},
		"SmsStatus":     {status},
		"To":            {m.To},
	}
	if m.From != "" {
		form.Set("From", m.From)
	}
	if m.MessagingServiceSID != "" {
		form.Set("MessagingServiceSid", m.MessagingServiceSID)
	}
	if errorCode != 0 {
		form.Set("ErrorCode", strconv.Itoa(errorCode))
	}
	return s.PostSigned(ctx, m.StatusCallback, form)
}

// stopWords and startWords are Twilio's default opt-out and opt-in keywords.
var (
	stopWords  = []string{"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
	startWords = []string{"START", "YES", "UNSTOP"}
)

// SendInbound posts an inbound SMS from from to to (the account's number)
// to the inbound URL (SetInboundURL), signed, as Twilio does when a message
// comes in. Like Twilio's default opt-out handling, a body that is one of
// the STOP keywords (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT) opts
// from out before the webhook is posted, and START, YES or UNSTOP opts it
// back in; the form then carries OptOutType STOP or START.
func (s *Server) SendInbound(ctx context.Context, from, to, body string) (Reply, error) {
	s.mu.Lock()
	target := s.inboundURL
	s.mu.Unlock()
	if target == "" {
		return Reply{}, errors.New("inbound message: no inbound URL: call SetInboundURL first")
	}
	sid := newSID("SM")
	form := url.Values{
		"AccountSid":    {s.accountSID},
		"ApiVersion":    {APIVersion},
		"Body":          {body},
		"From":          {from},
		"MessageSid":    {sid},
		"NumMedia":      {"0"},
		"NumSegments":   {"1"},
		"SmsMessageSid": {sid},
		"SmsSid":        {sid},
		"SmsStatus":     {"received"},
		"To":            {to},
	}
	word := strings.ToUpper(strings.TrimSpace(body))
	switch {
	case contains(stopWords, word):
		s.Stop(from)
		form.Set("OptOutType", "STOP")
	case contains(startWords, word):
		s.Unstop(from)
		form.Set("OptOutType", "START")
	}
	return s.PostSigned(ctx, target, form)
}

func contains(words []string, w string) bool {
	for _, x := range words {
		if x == w {
			return true
		}
	}
	return false
}

// PostSigned posts form to target with the X-Twilio-Signature Twilio would
// compute for it.
func (s *Server) PostSigned(ctx context.Context, target string, form url.Values) (Reply, error) {
	return s.PostWithSignature(ctx, target, form, Signature(s.authToken, target, form))
}

// PostWithSignature posts form to target with the given X-Twilio-Signature
// (empty: none), to test how a receiver treats a forged request.
func (s *Server) PostWithSignature(ctx context.Context, target string, form url.Values, signature string) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, callbackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return Reply{}, fmt.Errorf("webhook %s: %w", target, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "TwilioProxy/1.1")
	if signature != "" {
		req.Header.Set(SignatureHeader, signature)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return Reply{}, fmt.Errorf("webhook %s: %w", target, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return Reply{}, fmt.Errorf("webhook %s: reading the answer: %w", target, err)
	}
	return Reply{Status: resp.StatusCode, Header: resp.Header, Body: buf.Bytes()}, nil
}
