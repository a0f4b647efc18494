package sendgridchannel

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// syncTransport is the channel's http.RoundTripper: HTTP/1.1 with
// keep-alive, where each request is written and its response read in the
// calling goroutine. net/http's Transport runs a read goroutine and a write
// goroutine per connection and hands every request to them over channels,
// two goroutine wake-ups or more per request, which cost more than the
// request's own syscalls on the small VMs the daemon runs on. Here a
// request is one flushed write of a bufio.Writer (one write syscall for a
// Mail Send request) and http.ReadResponse on the connection's
// bufio.Reader.
//
// It never retries: an error is returned as it is, and the request's
// httptrace hooks tell the caller what reached the server. WroteRequest is
// called once, after the whole request was flushed (Err nil) or when
// writing it failed (Err set); attempt relies on it to tell "not sent"
// from "SendGrid may have it". (net/http's Transport reports it when the
// request is in its bufio.Writer, before the flush, so a failed flush is
// reported as written there.) GetConn, ConnectStart/ConnectDone,
// TLSHandshakeStart/TLSHandshakeDone, GotConn, Got1xxResponse and
// GotFirstResponseByte are called too; the others (WroteHeaderField,
// WroteHeaders, PutIdleConn, DNS...) are not.
//
// A response's connection goes back to the idle pool when its body has
// been read to the end (or closed after the last byte); it is closed when
// the body is closed early, on any error, after "Connection: close" (sent
// or received), after a body delimited by the end of the connection, and
// when bytes are left over after the response.
//
// Stale connections: net/http notices a server closing an idle
// connection because its read goroutine is always reading. Without one, a
// connection idle for checkIdleAfter or more is checked before reuse with
// a non-blocking MSG_PEEK read (one syscall, no wait): readable data or
// EOF or an error means the server has closed it or will, and it is
// discarded for another. An unchecked request on a connection the server
// has closed either fails while writing (not sent) or gets no answer
// (unknown to the caller), never a retry. Idle connections are closed
// after idleTimeout.
//
// Requests it does not handle go to fallback, a clone of
// http.DefaultTransport with the stock pool sizes: a proxy from the
// environment (proxy returns a URL or an error for the request), a scheme
// other than http and https, CONNECT, a body of unknown length, a body
// over maxDirectBody, Transfer-Encoding or trailers set by the caller,
// Upgrade and "Expect: 100-continue". The timeout applies to them too.
type syncTransport struct {
	timeout        time.Duration // per request, from the dial to the end of the body
	maxIdlePerHost int
	idleTimeout    time.Duration
	// checkIdleAfter: idle connections idle this long or more are checked
	// before reuse; a negative value checks none.
	checkIdleAfter time.Duration
	tlsConfig      *tls.Config // cloned per connection with its ServerName
	dialer         net.Dialer
	proxy          func(*http.Request) (*url.URL, error)
	fallback       *http.Transport

	mu         sync.Mutex
	idle       map[connKey][]*persistConn // per host, oldest first
	sweep      *time.Timer                // closes connections idle too long
	sweepArmed bool
}

var _ http.RoundTripper = (*syncTransport)(nil)

// transportConfig configures a syncTransport.
type transportConfig struct {
	// Parallel is the requests in flight the channel allows in one Send.
	Parallel int
	// Timeout bounds each request: dial, TLS handshake, write, response
	// and body.
	Timeout time.Duration
	// RootCAs verifies HTTPS servers; nil uses the system's roots.
	RootCAs *x509.CertPool
}

// Defaults of syncTransport.
const (
	// defaultIdleTimeout is http.DefaultTransport's IdleConnTimeout.
	defaultIdleTimeout = 90 * time.Second
	// defaultCheckIdleAfter: connections that were idle for less are
	// reused unchecked. See newSyncTransport.
	defaultCheckIdleAfter = time.Millisecond
	// maxDirectBody is the largest request body syncTransport writes
	// itself. A server that answers before reading a larger body (413,
	// 401...) may reset the connection while it is still being written;
	// net/http reads the answer concurrently with the write and returns
	// it, where syncTransport would only see the write fail. 256 KB is
	// what a Go server drains of an unread body to keep a connection.
	maxDirectBody = 256 << 10
	writeBufSize  = 8 << 10
	readBufSize   = 4 << 10
	// maxResponseHeaderBytes bounds each response header, as net/http's
	// Transport does by default.
	maxResponseHeaderBytes = 10 << 20
)

// newSyncTransport returns a syncTransport that keeps up to
// max(4*Parallel, 16) idle connections per host, as NewStockHTTPClient's
// Transport does: the host may run several Sends at once, each with
// Parallel requests in flight.
//
// It checks an idle connection before reuse when it was idle for 1 ms or
// more (defaultCheckIdleAfter). The check is a syscall, about 1.7 µs on
// the 2-core VMs, 4% of the plugin's CPU per message when made on every
// reuse; during a campaign 98% of reuses come less than 100 µs after the
// previous response, and skipping the check for those leaves a blind
// window shorter than the time the server's FIN takes to cross the
// network to the client, which net/http's read goroutine has too. Slower
// traffic, where the check costs nothing that matters, is always checked.
func newSyncTransport(cfg transportConfig) *syncTransport {
	tlsConfig := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    cfg.RootCAs,
		NextProtos: []string{"http/1.1"},
		// Full-size records: a request is one record and one write
		// rather than several MSS-sized ones while a connection is new.
		DynamicRecordSizingDisabled: true,
	}
	fb := stockTransport(cfg.Parallel)
	if cfg.RootCAs != nil {
		fb.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs}
	}
	return &syncTransport{
		timeout:        cfg.Timeout,
		maxIdlePerHost: maxIdlePerHost(cfg.Parallel),
		idleTimeout:    defaultIdleTimeout,
		checkIdleAfter: defaultCheckIdleAfter,
		tlsConfig:      tlsConfig,
		dialer:         net.Dialer{KeepAlive: 30 * time.Second},
		proxy:          http.ProxyFromEnvironment,
		fallback:       fb,
		idle:           make(map[connKey][]*persistConn),
	}
}

// connKey names the connections that can carry a request.
type connKey struct {
	scheme string // "http" or "https"
	host   string // URL.Host, as in the request
}

// persistConn is a connection that carries one request at a time.
type persistConn struct {
	key    connKey
	nc     net.Conn        // requests go here: the TCP connection, or TLS over it
	tcp    net.Conn        // the TCP connection
	raw    syscall.RawConn // the TCP connection's, for the idle check; may be nil
	tls    *tls.ConnectionState
	cw     connWriter // under bw
	cr     connReader // under br
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time // when it last went idle
	used   bool      // it carried a request before
}

// abort closes the connection at once. Under TLS it closes the TCP
// connection: tls.Conn.Close first writes a close_notify alert with a
// deadline of its own, 5 s, which a server that stopped reading makes it
// wait for in full, past the request's timeout and ctx. Every close on a
// request's path is an abort; only idle connections closed by the sweep
// and CloseIdleConnections get a close_notify.
func (pc *persistConn) abort() { _ = pc.tcp.Close() }

// connReader is what a connection's bufio.Reader reads from: the
// connection, with a limit on the bytes read while a response header is
// read, so that a server sending an endless header cannot fill the memory
// until the timeout. http.ReadResponse has no limit of its own; net/http's
// Transport has this one (MaxResponseHeaderBytes, 10 MB by default).
type connReader struct {
	nc    net.Conn
	limit int64 // bytes left; noLimit while a body is read
}

const noLimit = math.MaxInt64

// errHeaderTooLarge ends a response header over maxResponseHeaderBytes.
var errHeaderTooLarge = fmt.Errorf("response header over %d bytes", maxResponseHeaderBytes)

func (r *connReader) Read(p []byte) (int, error) {
	if r.limit <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > r.limit {
		p = p[:r.limit]
	}
	n, err := r.nc.Read(p)
	r.limit -= int64(n)
	return n, err
}

// connWriter is what a connection's bufio.Writer writes to: the connection,
// keeping the first error. Request.Write returns an error writing the body
// as an error reading it (an unexported type without Unwrap), which would
// hide a timeout or a cancelled ctx; RoundTrip returns this one instead.
type connWriter struct {
	nc  net.Conn
	err error
}

func (w *connWriter) Write(p []byte) (int, error) {
	n, err := w.nc.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// aLongTimeAgo is a deadline in the past: it makes blocked reads and
// writes return at once.
var aLongTimeAgo = time.Unix(1, 0)

// errBodyClosed is returned by a Read after Close.
var errBodyClosed = errors.New("sendgrid transport: read on closed response body")

// RoundTrip sends req on a pooled connection and reads the response. It
// never retries.
func (t *syncTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.useFallback(req) {
		return t.fallbackRoundTrip(req)
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeRequestBody(req)
		return nil, err
	}
	deadline := time.Now().Add(t.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	trace := httptrace.ContextClientTrace(ctx)
	key := connKey{scheme: req.URL.Scheme, host: req.URL.Host}
	if trace != nil && trace.GetConn != nil {
		trace.GetConn(key.host)
	}
	pc, idleFor, err := t.getConn(ctx, key, req.URL, deadline, trace)
	if err != nil {
		closeRequestBody(req)
		return nil, fmt.Errorf("sendgrid transport: connect to %s: %w", key.host, t.explain(ctx, err))
	}
	if trace != nil && trace.GotConn != nil {
		trace.GotConn(httptrace.GotConnInfo{Conn: pc.nc, Reused: pc.used, WasIdle: pc.used, IdleTime: idleFor})
	}
	pc.used = true

	// Deadlines bound the request; a cancelled ctx moves them to the past,
	// which unblocks a write or a read at once.
	if err := pc.nc.SetDeadline(deadline); err != nil {
		closeRequestBody(req)
		pc.abort()
		return nil, fmt.Errorf("sendgrid transport: %w", err)
	}
	stop := alwaysStopped
	if ctx.Done() != nil {
		nc := pc.nc
		stop = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(aLongTimeAgo) })
	}

	// Request.Write reports WroteRequest itself once the request is in
	// pc.bw, before the flush that can still fail; it is given a request
	// without the trace so that WroteRequest comes once, after the flush.
	wreq := req
	if trace != nil {
		wreq = req.WithContext(context.Background())
	}
	err = wreq.Write(pc.bw) // closes req.Body
	if err == nil {
		err = pc.bw.Flush()
	}
	if err != nil && pc.cw.err != nil {
		err = pc.cw.err // the connection's error, not Request.Write's wrapping
	}
	if trace != nil && trace.WroteRequest != nil {
		trace.WroteRequest(httptrace.WroteRequestInfo{Err: err})
	}
	if err != nil {
		stop()
		pc.abort()
		return nil, fmt.Errorf("sendgrid transport: write request: %w", t.explain(ctx, err))
	}

	resp, err := pc.readResponse(req, trace)
	if err != nil {
		stop()
		pc.abort()
		return nil, fmt.Errorf("sendgrid transport: read response: %w", t.explain(ctx, err))
	}
	resp.TLS = pc.tls
	reuse := !resp.Close && !wantsClose(req)
	if resp.Body == http.NoBody {
		t.release(pc, stop, reuse)
		return resp, nil
	}
	resp.Body = &connBody{t: t, rc: resp.Body, pc: pc, stop: stop, reuse: reuse, length: resp.ContentLength}
	return resp, nil
}

// wantsClose reports whether req asks for its connection to be closed after
// it: Close, or a "Connection: close" header, which Request.Write sends as
// it is. net/http's Transport checks both.
func wantsClose(req *http.Request) bool {
	return req.Close || httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close")
}

// alwaysStopped is the stop function when ctx cannot be cancelled.
func alwaysStopped() bool { return true }

// useFallback reports whether req goes to the stock transport.
func (t *syncTransport) useFallback(req *http.Request) bool {
	switch {
	case req.URL == nil || req.URL.Host == "" || (req.URL.Scheme != "http" && req.URL.Scheme != "https"):
		return true // other schemes, and the stock transport's error for no host
	case req.Method == http.MethodConnect:
		return true
	case req.ContentLength < 0 || (req.ContentLength == 0 && req.Body != nil && req.Body != http.NoBody):
		return true // unknown length: chunked
	case req.ContentLength > maxDirectBody:
		return true
	case len(req.TransferEncoding) > 0 || len(req.Trailer) > 0:
		return true
	case req.Header.Get("Upgrade") != "" || strings.EqualFold(req.Header.Get("Expect"), "100-continue"):
		return true
	}
	u, err := t.proxy(req)
	return u != nil || err != nil
}

// fallbackRoundTrip sends req with the stock transport, bounded by the
// timeout until its body is closed or read to the end.
func (t *syncTransport) fallbackRoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.fallback.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Request = req
	resp.Body = &cancelBody{rc: resp.Body, cancel: cancel}
	return resp, nil
}

// CloseIdleConnections closes the idle connections, the fallback's too.
// Connections carrying a request are not affected.
func (t *syncTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = make(map[connKey][]*persistConn)
	if t.sweep != nil {
		t.sweep.Stop()
		t.sweepArmed = false
	}
	t.mu.Unlock()
	for _, pcs := range idle {
		for _, pc := range pcs {
			_ = pc.nc.Close()
		}
	}
	t.fallback.CloseIdleConnections()
}

// getConn returns an idle connection for key, checked if it was idle for
// checkIdleAfter or more, or a new one, and how long it was idle.
func (t *syncTransport) getConn(ctx context.Context, key connKey, u *url.URL, deadline time.Time,
	trace *httptrace.ClientTrace) (*persistConn, time.Duration, error) {
	for {
		pc := t.popIdle(key)
		if pc == nil {
			break
		}
		idleFor := time.Since(pc.idleAt)
		if idleFor >= t.idleTimeout || (t.checkIdleAfter >= 0 && idleFor >= t.checkIdleAfter && !idleConnUsable(pc.raw)) {
			pc.abort()
			continue
		}
		return pc, idleFor, nil
	}
	pc, err := t.dial(ctx, key, u, deadline, trace)
	return pc, 0, err
}

func (t *syncTransport) popIdle(key connKey) *persistConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	pcs := t.idle[key]
	if len(pcs) == 0 {
		return nil
	}
	pc := pcs[len(pcs)-1] // the most recently used: hot connections stay hot
	pcs[len(pcs)-1] = nil
	t.idle[key] = pcs[:len(pcs)-1]
	return pc
}

// dial opens a connection for key, with TLS for https.
func (t *syncTransport) dial(ctx context.Context, key connKey, u *url.URL, deadline time.Time,
	trace *httptrace.ClientTrace) (*persistConn, error) {
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
		if key.scheme == "https" {
			port = "443"
		}
	}
	addr := net.JoinHostPort(host, port)
	d := t.dialer
	d.Deadline = deadline
	if trace != nil && trace.ConnectStart != nil {
		trace.ConnectStart("tcp", addr)
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if trace != nil && trace.ConnectDone != nil {
		trace.ConnectDone("tcp", addr, err)
	}
	if err != nil {
		return nil, err
	}
	pc := &persistConn{key: key, nc: nc, tcp: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		pc.raw, _ = sc.SyscallConn()
	}
	if key.scheme == "https" {
		cfg := t.tlsConfig.Clone()
		cfg.ServerName = host
		tc := tls.Client(nc, cfg)
		if err := nc.SetDeadline(deadline); err != nil {
			_ = nc.Close()
			return nil, err
		}
		if trace != nil && trace.TLSHandshakeStart != nil {
			trace.TLSHandshakeStart()
		}
		err := tc.HandshakeContext(ctx)
		state := tc.ConnectionState()
		if trace != nil && trace.TLSHandshakeDone != nil {
			trace.TLSHandshakeDone(state, err)
		}
		if err != nil {
			_ = nc.Close()
			return nil, err
		}
		pc.nc, pc.tls = tc, &state
	}
	pc.cw.nc = pc.nc
	pc.cr = connReader{nc: pc.nc, limit: noLimit}
	pc.br = bufio.NewReaderSize(&pc.cr, readBufSize)
	pc.bw = bufio.NewWriterSize(&pc.cw, writeBufSize)
	return pc, nil
}

// readResponse reads the final response to req, skipping 1xx ones.
func (pc *persistConn) readResponse(req *http.Request, trace *httptrace.ClientTrace) (*http.Response, error) {
	pc.cr.limit = maxResponseHeaderBytes
	if trace != nil && trace.GotFirstResponseByte != nil {
		if _, err := pc.br.Peek(1); err != nil {
			return nil, err
		}
		trace.GotFirstResponseByte()
	}
	for n1xx := 0; ; n1xx++ {
		resp, err := http.ReadResponse(pc.br, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 {
			pc.cr.limit = noLimit
			return resp, nil
		}
		if resp.StatusCode == http.StatusSwitchingProtocols || n1xx == 5 {
			return nil, fmt.Errorf("unexpected HTTP %d response", resp.StatusCode)
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
		}
		pc.cr.limit = maxResponseHeaderBytes // each header has the limit, as in net/http
	}
}

// release returns pc to the idle pool when reuse allows it and the
// cancellation hook had not fired, and closes it otherwise.
func (t *syncTransport) release(pc *persistConn, stop func() bool, reuse bool) {
	if stop() && reuse && pc.br.Buffered() == 0 {
		t.putIdle(pc)
		return
	}
	pc.abort()
}

func (t *syncTransport) putIdle(pc *persistConn) {
	pc.idleAt = time.Now()
	var evicted *persistConn
	t.mu.Lock()
	pcs := t.idle[pc.key]
	if len(pcs) >= t.maxIdlePerHost {
		evicted = pcs[0]
		pcs = append(pcs[:0], pcs[1:]...)
	}
	t.idle[pc.key] = append(pcs, pc)
	if !t.sweepArmed {
		t.sweepArmed = true
		if t.sweep == nil {
			t.sweep = time.AfterFunc(t.idleTimeout, t.closeExpired)
		} else {
			t.sweep.Reset(t.idleTimeout)
		}
	}
	t.mu.Unlock()
	if evicted != nil {
		evicted.abort()
	}
}

// closeExpired closes the connections idle for idleTimeout or more, and
// arms the timer again for the next one to expire.
func (t *syncTransport) closeExpired() {
	now := time.Now()
	var expired []*persistConn
	var next time.Duration
	t.mu.Lock()
	for key, pcs := range t.idle {
		kept := pcs[:0]
		for _, pc := range pcs {
			left := t.idleTimeout - now.Sub(pc.idleAt)
			if left <= 0 {
				expired = append(expired, pc)
				continue
			}
			kept = append(kept, pc)
			if next == 0 || left < next {
				next = left
			}
		}
		clear(pcs[len(kept):])
		if len(kept) == 0 {
			delete(t.idle, key)
		} else {
			t.idle[key] = kept
		}
	}
	t.sweepArmed = next > 0
	if t.sweepArmed {
		t.sweep.Reset(next)
	}
	t.mu.Unlock()
	for _, pc := range expired {
		_ = pc.nc.Close()
	}
}

// explain names a deadline error: ctx's cause when ctx has ended, the
// timeout otherwise.
func (t *syncTransport) explain(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return fmt.Errorf("timeout %v exceeded: %w", t.timeout, err)
}

// connBody is a response body read from a pooled connection. The
// connection is released once: to the pool when the body was read to the
// end, closed otherwise. Close may be called while a Read is blocked: it
// closes the connection, which ends the Read.
type connBody struct {
	t      *syncTransport
	rc     io.ReadCloser // http.ReadResponse's body
	pc     *persistConn
	stop   func() bool // unregisters the cancellation hook
	reuse  bool        // the response allows keep-alive
	length int64       // Content-Length, -1 if unknown

	mu      sync.Mutex
	n       int64 // bytes read
	reading bool
	closed  bool  // Close was called
	done    bool  // the connection was released
	err     error // the error Read returned, io.EOF at the end
}

func (b *connBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, errBodyClosed
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	b.reading = true
	b.mu.Unlock()

	n, err := b.rc.Read(p)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	b.n += int64(n)
	if b.closed {
		if err == nil {
			err = errBodyClosed
		}
		return n, err
	}
	if err != nil {
		b.err = err
		b.release(err == io.EOF)
	}
	return n, err
}

func (b *connBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	switch {
	case b.done:
	case b.reading:
		b.done = true
		b.stop()
		b.pc.abort()
	default:
		b.release(b.length >= 0 && b.n == b.length)
	}
	return nil
}

// release releases the connection; complete says the body was read to
// its end.
func (b *connBody) release(complete bool) {
	b.done = true
	b.t.release(b.pc, b.stop, b.reuse && complete)
}

// cancelBody is a fallback response's body: it ends the request's timeout
// context at the end of the body or on Close.
type cancelBody struct {
	rc     io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.cancel()
	}
	return n, err
}

func (b *cancelBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
