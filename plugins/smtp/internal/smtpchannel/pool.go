package smtpchannel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
)

// trackConn is the raw TCP connection under the SMTP client (and under TLS,
// when there is TLS). It bounds every write with the command timeout and
// caps the deadlines set on it (the TLS handshake's, say) to that timeout.
type trackConn struct {
	net.Conn
	timeout time.Duration
}

func (c *trackConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// cap brings a deadline later than the timeout from now down to it; the
// zero time (no deadline) stays.
func (c *trackConn) cap(t time.Time) time.Time {
	if limit := time.Now().Add(c.timeout); !t.IsZero() && t.After(limit) {
		return limit
	}
	return t
}

func (c *trackConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.cap(t)) }
func (c *trackConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.cap(t)) }
func (c *trackConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.cap(t)) }

// conn is one SMTP connection of the pool.
type conn struct {
	c      *client
	raw    *trackConn
	sent   int  // transactions started on it
	reused bool // it carried a transaction before the current one
}

// close quits politely within the timeout, then closes.
func (c *conn) close() { _ = c.c.quit() }

// pool holds up to Connections persistent connections. A connection is used
// by one transaction at a time.
type pool struct {
	s     *settings
	slots chan struct{} // a token per connection that may exist
	idle  chan *conn
	// connect opens the TCP connection (a net.Dialer's; tests wrap it).
	connect func(ctx context.Context, network, addr string) (net.Conn, error)

	mu     sync.Mutex
	closed bool
}

func newPool(s *settings) *pool {
	d := &net.Dialer{Timeout: s.Timeout}
	return &pool{
		s:       s,
		slots:   make(chan struct{}, s.Connections),
		idle:    make(chan *conn, s.Connections),
		connect: d.DialContext,
	}
}

// get returns an idle connection or dials a new one. The caller must put
// it back.
func (p *pool) get(ctx context.Context) (*conn, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case c := <-p.idle:
		c.reused = true
		return c, nil
	default:
	}
	c, err := p.dial(ctx)
	if err != nil {
		<-p.slots
		return nil, err
	}
	return c, nil
}

// put returns c to the pool when healthy and not used up, else closes it:
// with QUIT when healthy, which ctx cuts short (a relay that does not
// answer must not hold the caller past its deadline).
func (p *pool) put(ctx context.Context, c *conn, healthy bool) {
	defer func() { <-p.slots }()
	p.mu.Lock()
	keep := healthy && !p.closed && c.sent < p.s.MaxPerConnection
	if keep {
		p.idle <- c // never blocks: at most Connections conns exist
	}
	p.mu.Unlock()
	if keep {
		return
	}
	if healthy {
		stop := context.AfterFunc(ctx, func() { _ = c.raw.Close() })
		c.close()
		stop()
	} else {
		_ = c.c.close()
	}
}

// close closes the idle connections; connections in use are closed when
// put back.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	for {
		select {
		case c := <-p.idle:
			c.close()
		default:
			return
		}
	}
}

// setupError is a failure to open a usable connection: nothing of a
// message was sent.
type setupError struct {
	step string
	err  error
}

func (e *setupError) Error() string { return e.step + ": " + e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

// dial connects, greets, starts TLS and authenticates.
func (p *pool) dial(ctx context.Context) (*conn, error) {
	s := p.s
	nc, err := p.connect(ctx, "tcp", s.addr)
	if err != nil {
		return nil, &setupError{"connect to " + s.addr, err}
	}
	raw := &trackConn{Conn: nc, timeout: s.Timeout}
	// Until the connection is set up, ctx ends it.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	fail := func(step string, err error) (*conn, error) {
		_ = nc.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, &setupError{step, err}
	}

	var sc net.Conn = raw // what the session speaks over
	if s.TLS == TLSImplicit {
		tc := tls.Client(raw, s.tlsConfig)
		hctx, cancel := context.WithTimeout(ctx, s.Timeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return fail("TLS handshake with "+s.addr, err)
		}
		sc = tc
	}
	c := newClient(sc, s.Timeout)
	if err := c.greet(); err != nil {
		return fail("greeting from "+s.addr, err)
	}
	if err := c.hello(s.HELO); err != nil {
		return fail("EHLO to "+s.addr, err)
	}
	if s.TLS == TLSStartTLS {
		if !c.has("STARTTLS") {
			return fail("STARTTLS with "+s.addr, fmt.Errorf("%s does not offer STARTTLS: use tls: tls if it speaks TLS from the start (port 465), or tls: none only for a trusted local relay", s.addr))
		}
		if err := c.startTLS(ctx, s.tlsConfig); err != nil {
			return fail("STARTTLS with "+s.addr, err)
		}
		if err := c.hello(s.HELO); err != nil {
			return fail("EHLO to "+s.addr+" over TLS", err)
		}
	}
	if s.Username != "" {
		if !c.supportsAuth(sasl.Plain) {
			return fail("AUTH at "+s.addr, errors.New("the server does not offer AUTH PLAIN: remove username and password, or use a relay that offers it"))
		}
		if err := c.auth(sasl.NewPlainClient("", s.Username, s.Password)); err != nil {
			return fail("AUTH PLAIN as "+s.Username+" at "+s.addr, fmt.Errorf("%w: check username and password", err))
		}
	}
	return &conn{c: c, raw: raw}, nil
}
