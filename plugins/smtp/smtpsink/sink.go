// Package smtpsink runs a real SMTP server (github.com/emersion/go-smtp) in
// the test process, on 127.0.0.1 and a free port. It accepts messages and
// discards them, counting every arrival and, when asked, recording each one
// (envelope, headers, body), so a test can assert exactly what arrived and
// count duplicates by the X-Cohort-Key header.
//
// Faults are set while the sink runs (SetFaults): a 550 5.1.1 for chosen
// recipients (a hard bounce), 451/452 temporary failures for a fraction of
// transactions or chosen recipients, a 554 after DATA for chosen recipients,
// a connection dropped right after the DATA terminator arrived (the message
// is recorded as arrived, the client gets no reply: the lost-response case),
// and added latency. Options turn on AUTH PLAIN and STARTTLS or implicit TLS
// with a throwaway self-signed certificate. It is for tests and benchmarks
// only.
//
// Replies leave as Postfix's smtpd sends them: each waits until the sink
// must read more input, so the replies to pipelined commands (RFC 2920)
// share one write (see batchingListener).
//
// BareSend is the baseline a sending benchmark puts its figure beside: a
// bare go-smtp client with nothing of Cohort in it.
package smtpsink

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/mail"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Options configure a Sink at Start.
type Options struct {
	// Record keeps every message that arrives (see Messages). Without it the
	// sink only counts, which is what a benchmark wants.
	Record bool
	// Username and Password, when Username is set, make AUTH PLAIN
	// required before MAIL.
	Username string
	Password string
	// StartTLS offers STARTTLS with a self-signed certificate for 127.0.0.1
	// and localhost (see CertPEM). AUTH is then refused before STARTTLS.
	StartTLS bool
	// ImplicitTLS serves TLS from the first byte (SMTPS, port 465 style)
	// with the same certificate.
	ImplicitTLS bool
}

// Faults are the failures the sink injects. The zero Faults injects none.
// Addresses are compared case-insensitively.
type Faults struct {
	// RejectRcpt: RCPT TO these addresses is answered
	// "550 5.1.1 mailbox does not exist" (a hard bounce).
	RejectRcpt []string
	// TempFailRate is the fraction (0..1) of transactions that fail
	// temporarily with TempFailCode. The choice is deterministic: with
	// rate r, transaction i (counting from 0 at MAIL) fails when
	// ⌊(i+1)·r⌋ > ⌊i·r⌋, so 0.5 fails every second one and 1 all of them.
	TempFailRate float64
	// TempFailRcpt: transactions to these recipients always fail
	// temporarily with TempFailCode.
	TempFailRcpt []string
	// TempFailCode is 452 ("452 4.3.1 insufficient system storage",
	// answered to RCPT) or 451 ("451 4.3.0 ...", answered after the DATA
	// terminator; the message does not count as arrived). Default 451.
	TempFailCode int
	// RejectData: messages to these recipients are answered
	// "554 5.6.0 message refused" after the DATA terminator.
	RejectData []string
	// DropRate is the fraction of transactions (chosen as for
	// TempFailRate) whose connection is closed right after the DATA
	// terminator arrived, without a reply. The message counts as arrived.
	DropRate float64
	// DropRcpt: the same for messages to these recipients.
	DropRcpt []string
	// Latency is added before the reply to every MAIL, RCPT and DATA.
	Latency time.Duration
	// DataLatency is added before the reply to the DATA terminator only.
	DataLatency time.Duration
}

// Message is one message that arrived.
type Message struct {
	// From and To are the envelope (MAIL FROM and RCPT TO).
	From string
	To   []string
	// Raw is the message as received, dot-unstuffed, with CRLF line ends.
	Raw []byte
	// Header and Body are Raw parsed by net/mail.
	Header mail.Header
	Body   []byte
	// Key is the X-Cohort-Key header ("" without one).
	Key string
	// Dropped says the sink closed the connection after the DATA
	// terminator instead of replying: the client saw no answer.
	Dropped bool
	// TLS says the message came over TLS; User is the AUTH user, if any.
	TLS  bool
	User string
	// QueueID is the id in the sink's 250 reply ("" when dropped).
	QueueID string
}

// Sink is a running SMTP sink. Its methods are safe for concurrent use.
type Sink struct {
	opts    Options
	srv     *smtp.Server
	ln      net.Listener
	certPEM []byte
	pool    *x509.CertPool
	done    chan struct{}
	served  chan struct{}

	mu       sync.Mutex
	faults   Faults
	txns     uint64 // transactions started (MAIL accepted)
	arrived  int    // messages fully received (accepted or dropped)
	accepted int    // messages answered 250
	keys     map[string]int
	messages []Message
	sessions int // sessions opened
	live     map[*session]bool
	closed   bool
}

// Start runs a sink on 127.0.0.1 and a free port. Close it when done.
func Start(opts Options) (*Sink, error) {
	s := &Sink{
		opts:   opts,
		done:   make(chan struct{}),
		served: make(chan struct{}),
		keys:   map[string]int{},
		live:   map[*session]bool{},
	}
	s.srv = smtp.NewServer(smtp.BackendFunc(s.newSession))
	s.srv.Domain = "sink.example.com"
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	s.srv.MaxRecipients = 100
	s.srv.MaxMessageBytes = 32 << 20
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.AllowInsecureAuth = !opts.StartTLS

	var tlsConfig *tls.Config
	if opts.StartTLS || opts.ImplicitTLS {
		cert, certPEM, err := selfSigned()
		if err != nil {
			return nil, fmt.Errorf("smtp sink: %w", err)
		}
		s.certPEM = certPEM
		s.pool = x509.NewCertPool()
		s.pool.AppendCertsFromPEM(certPEM)
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if opts.StartTLS {
			s.srv.TLSConfig = tlsConfig
		}
	}

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("smtp sink: listen: %w", err)
	}
	var ln net.Listener = batchingListener{tcp}
	if opts.ImplicitTLS {
		ln = tls.NewListener(ln, tlsConfig)
	}
	s.ln = ln
	go func() {
		defer close(s.served)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// Addr is the sink's host:port.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Host and Port split Addr.
func (s *Sink) Host() string { h, _, _ := net.SplitHostPort(s.Addr()); return h }

// Port is the sink's TCP port.
func (s *Sink) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// CertPEM is the sink's self-signed certificate in PEM (nil without TLS),
// to write to a CA file for a client that must trust it.
func (s *Sink) CertPEM() []byte { return slices.Clone(s.certPEM) }

// CertPool holds the sink's certificate (nil without TLS).
func (s *Sink) CertPool() *x509.CertPool { return s.pool }

// Close stops the sink and closes every connection. It waits for the
// server's accept loop to end.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	err := s.srv.Close()
	<-s.served
	if err != nil && !errors.Is(err, smtp.ErrServerClosed) {
		return fmt.Errorf("smtp sink: close: %w", err)
	}
	return nil
}

// SetFaults replaces the faults injected from now on.
func (s *Sink) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Arrived is the number of messages that arrived whole: answered 250 or
// dropped after the DATA terminator.
func (s *Sink) Arrived() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.arrived
}

// Accepted is the number of messages answered 250.
func (s *Sink) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Sessions is the number of SMTP sessions opened (one per EHLO; STARTTLS
// starts a new one), which tells a test how many connections a client made.
func (s *Sink) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// KeyCounts maps each X-Cohort-Key to the number of arrivals carrying it;
// a count above 1 is a duplicate. Messages without the header are not
// counted.
func (s *Sink) KeyCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.keys))
	for k, n := range s.keys {
		out[k] = n
	}
	return out
}

// Duplicates lists, sorted, the keys that arrived more than once.
func (s *Sink) Duplicates() []string {
	var dups []string
	for k, n := range s.KeyCounts() {
		if n > 1 {
			dups = append(dups, k)
		}
	}
	slices.Sort(dups)
	return dups
}

// Messages returns the recorded messages in arrival order (none unless
// Options.Record).
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.messages)
}

// Message returns the last recorded message with the given X-Cohort-Key.
func (s *Sink) Message(key string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.messages) - 1; i >= 0; i-- {
		if s.messages[i].Key == key {
			return s.messages[i], true
		}
	}
	return Message{}, false
}

// Reset forgets the counts and recorded messages (faults are kept).
func (s *Sink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txns, s.arrived, s.accepted, s.sessions = 0, 0, 0, 0
	s.keys = map[string]int{}
	s.messages = nil
}

// sleep waits d or until the sink closes.
func (s *Sink) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.done:
	}
}

func (s *Sink) newSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	ss := &session{sink: s, conn: c, tls: isTLS}
	s.mu.Lock()
	s.sessions++
	s.live[ss] = true
	s.mu.Unlock()
	return ss, nil
}

// CloseConnections closes every open connection at once, without a word
// to the clients, as a relay restarting or timing out idle clients does.
func (s *Sink) CloseConnections() {
	s.mu.Lock()
	live := make([]*session, 0, len(s.live))
	for ss := range s.live {
		live = append(live, ss)
	}
	s.mu.Unlock()
	for _, ss := range live {
		_ = ss.conn.Conn().Close()
	}
}

// picked reports whether transaction i is among the fraction rate.
func picked(i uint64, rate float64) bool {
	switch {
	case rate <= 0:
		return false
	case rate >= 1:
		return true
	}
	return uint64(float64(i+1)*rate) > uint64(float64(i)*rate)
}

func hasAddr(list []string, addr string) bool {
	for _, a := range list {
		if strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}

// session is one SMTP session. go-smtp calls its methods from the
// connection's goroutine, one at a time.
type session struct {
	sink *Sink
	conn *smtp.Conn
	tls  bool
	user string

	from     string
	to       []string
	txn      uint64
	tempFail bool
	drop     bool
	reject   bool
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

var (
	errNoMailbox = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "mailbox does not exist"}
	errTemp452   = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "insufficient system storage, try again later"}
	errTemp451   = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "local error in processing, try again later"}
	errRefused   = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "message refused"}
	errDropped   = errors.New("connection dropped by the sink's fault")
	// errAuthRequired is RFC 4954's reply, as Postfix gives it.
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
)

func (ss *session) AuthMechanisms() []string {
	if ss.sink.opts.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.sink.opts.Username == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return smtp.ErrAuthFailed
		}
		if username != ss.sink.opts.Username || password != ss.sink.opts.Password {
			return smtp.ErrAuthFailed
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *session) faults() Faults {
	ss.sink.mu.Lock()
	defer ss.sink.mu.Unlock()
	return ss.sink.faults
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.sink.opts.Username != "" && ss.user == "" {
		return errAuthRequired
	}
	s := ss.sink
	s.mu.Lock()
	f := s.faults
	ss.txn = s.txns
	s.txns++
	s.mu.Unlock()
	s.sleep(f.Latency)
	ss.from, ss.to = from, nil
	ss.tempFail = picked(ss.txn, f.TempFailRate)
	ss.drop = picked(ss.txn, f.DropRate)
	ss.reject = false
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	f := ss.faults()
	ss.sink.sleep(f.Latency)
	if hasAddr(f.RejectRcpt, to) {
		return errNoMailbox
	}
	if hasAddr(f.TempFailRcpt, to) {
		ss.tempFail = true
	}
	if ss.tempFail && f.TempFailCode == 452 {
		return errTemp452
	}
	if hasAddr(f.DropRcpt, to) {
		ss.drop = true
	}
	if hasAddr(f.RejectData, to) {
		ss.reject = true
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	f := ss.faults()
	raw, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read message: %w", err)
	}
	ss.sink.sleep(f.Latency)
	ss.sink.sleep(f.DataLatency)
	switch {
	case ss.drop:
		ss.sink.record(ss, raw, true)
		_ = ss.conn.Conn().Close()
		return errDropped
	case ss.reject:
		return errRefused
	case ss.tempFail:
		return errTemp451
	}
	id := ss.sink.record(ss, raw, false)
	// A 250 with Postfix's wording, so clients can parse the queue id.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id}
}

// record counts an arrival and, with Options.Record, keeps it. It returns
// the queue id.
func (s *Sink) record(ss *session, raw []byte, dropped bool) string {
	key := headerValue(raw, "X-Cohort-Key")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.arrived++
	if !dropped {
		s.accepted++
	}
	if key != "" {
		s.keys[key]++
	}
	id := fmt.Sprintf("Q%08X", s.arrived)
	if !s.opts.Record {
		return id
	}
	m := Message{From: ss.from, To: slices.Clone(ss.to), Raw: raw, Key: key, Dropped: dropped, TLS: ss.tls, User: ss.user}
	if !dropped {
		m.QueueID = id
	}
	if msg, err := mail.ReadMessage(bytes.NewReader(raw)); err == nil {
		m.Header = msg.Header
		m.Body, _ = io.ReadAll(msg.Body)
	}
	s.messages = append(s.messages, m)
	return id
}

// headerValue finds the first header name in the header section of raw,
// without parsing the whole message.
func headerValue(raw []byte, name string) string {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		line, err := tp.ReadContinuedLine()
		if err != nil || line == "" {
			return ""
		}
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
}

func (ss *session) Reset() {
	ss.from, ss.to = "", nil
	ss.tempFail, ss.drop, ss.reject = false, false, false
}

func (ss *session) Logout() error {
	ss.sink.mu.Lock()
	delete(ss.sink.live, ss)
	ss.sink.mu.Unlock()
	return nil
}

// WaitArrived waits until at least n messages arrived or ctx is done.
func (s *Sink) WaitArrived(ctx context.Context, n int) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if got := s.Arrived(); got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("smtp sink: %d of %d messages arrived: %w", s.Arrived(), n, ctx.Err())
		case <-tick.C:
		}
	}
}
