package sendgridchannel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendgrid/rest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/sdk"
)

// connServer is an httptest server that counts the connections it
// accepted and closed, and the requests it received.
type connServer struct {
	*httptest.Server
	opened, closed, requests atomic.Int32
}

func startConnServer(t *testing.T, tlsOn bool, h http.HandlerFunc) *connServer {
	t.Helper()
	s := &connServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		h(w, r)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.closed.Add(1)
		}
	}
	if tlsOn {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// startBlockingServer starts a connServer that reads each request and
// answers only when the client goes away or the test ends.
func startBlockingServer(t *testing.T) *connServer {
	t.Helper()
	release := make(chan struct{})
	s := startConnServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // the server then notices the client closing
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	return s
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newTestTransport(t *testing.T, timeout time.Duration) *syncTransport {
	t.Helper()
	tr := newSyncTransport(transportConfig{Parallel: 2, Timeout: timeout})
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func clientFor(tr http.RoundTripper) *http.Client {
	return &http.Client{Transport: tr, CheckRedirect: noRedirects}
}

// post sends a small POST and returns the response with its body read.
func post(t *testing.T, c *http.Client, ctx context.Context, u string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(`{"a":1}`))
	require.NoError(t, err)
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func idleCount(tr *syncTransport) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, pcs := range tr.idle {
		n += len(pcs)
	}
	return n
}

func TestNewHTTPClients(t *testing.T) {
	c := NewHTTPClient(8, 3*time.Second)
	tr, ok := c.Transport.(*syncTransport)
	require.True(t, ok, "the channel's client uses syncTransport, not %T", c.Transport)
	assert.Equal(t, 3*time.Second, tr.timeout)
	assert.Equal(t, 32, tr.maxIdlePerHost)
	assert.Zero(t, c.Timeout, "the transport enforces the timeout")
	assert.Equal(t, http.ErrUseLastResponse, c.CheckRedirect(nil, nil))

	stock := NewStockHTTPClient(8, 3*time.Second)
	st, ok := stock.Transport.(*http.Transport)
	require.True(t, ok, "the baseline keeps net/http's Transport, not %T", stock.Transport)
	assert.Equal(t, 3*time.Second, stock.Timeout)
	assert.Equal(t, 64, st.MaxIdleConns)
	assert.Equal(t, 32, st.MaxIdleConnsPerHost)
	assert.Equal(t, http.ErrUseLastResponse, stock.CheckRedirect(nil, nil))
}

// TestTransportKeepAlive: many requests, few connections.
func TestTransportKeepAlive(t *testing.T) {
	s := startConnServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Message-Id", "m-"+r.Header.Get("X-N"))
		w.WriteHeader(http.StatusAccepted)
	})
	tr := newTestTransport(t, 10*time.Second)
	client := &rest.Client{HTTPClient: clientFor(tr)}
	send := func(n int) {
		req := NewRequest("SG.k", s.URL, []byte(`{"n":1}`))
		req.Headers["X-N"] = fmt.Sprint(n)
		resp, err := client.Send(req)
		if assert.NoError(t, err) {
			assert.Equal(t, http.StatusAccepted, resp.StatusCode)
			assert.Equal(t, []string{fmt.Sprint("m-", n)}, resp.Headers["X-Message-Id"])
		}
	}
	for i := range 100 {
		send(i)
	}
	assert.Equal(t, int32(100), s.requests.Load())
	assert.Equal(t, int32(1), s.opened.Load(), "sequential requests share one connection")

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				send(1000 + g*100 + i)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int32(300), s.requests.Load())
	assert.LessOrEqual(t, s.opened.Load(), int32(1+8), "at most one connection per request in flight")
	assert.Zero(t, s.closed.Load(), "no connection was closed")
}

// TestTransportFraming: Content-Length, chunked, larger than the read
// buffer, empty, and after 1xx; each connection is reused after the body
// was read.
func TestTransportFraming(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KB, 50x the read buffer
	tests := []struct {
		name string
		h    http.HandlerFunc
		want []byte
	}{
		{"content-length", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "5")
			_, _ = w.Write([]byte("hello"))
		}, []byte("hello")},
		{"chunked", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("hel"))
			w.(http.Flusher).Flush()
			_, _ = w.Write([]byte("lo"))
		}, []byte("hello")},
		{"large content-length", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			_, _ = w.Write(big)
		}, big},
		{"large chunked", func(w http.ResponseWriter, _ *http.Request) {
			for b := range slices.Chunk(big, 7000) {
				_, _ = w.Write(b)
				w.(http.Flusher).Flush()
			}
		}, big},
		{"empty 202", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusAccepted)
		}, []byte{}},
		{"after 103", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = w.Write([]byte("hello"))
		}, []byte("hello")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startConnServer(t, false, tt.h)
			tr := newTestTransport(t, 10*time.Second)
			for range 3 {
				resp, body, err := post(t, clientFor(tr), t.Context(), s.URL)
				require.NoError(t, err)
				assert.Less(t, resp.StatusCode, 300)
				assert.True(t, bytes.Equal(tt.want, body), "body of %d bytes, want %d", len(body), len(tt.want))
			}
			assert.Equal(t, int32(3), s.requests.Load())
			assert.Equal(t, int32(1), s.opened.Load(), "the connection is reused once the body was read")
			assert.Equal(t, 1, idleCount(tr))
		})
	}
}

// TestTransportBodyClosedEarly: a body closed before its end closes the
// connection; the next request gets a new one.
func TestTransportBodyClosedEarly(t *testing.T) {
	const size = 1 << 20
	s := startConnServer(t, false, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		_, _ = w.Write(bytes.Repeat([]byte("x"), size))
	})
	tr := newTestTransport(t, 10*time.Second)
	c := clientFor(tr)
	req, err := http.NewRequest(http.MethodPost, s.URL, strings.NewReader("{}"))
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	n, err := resp.Body.Read(make([]byte, 64<<10))
	require.NoError(t, err)
	require.Less(t, n, readBufSize, "one read takes what is buffered, not the whole body")
	require.NoError(t, resp.Body.Close())
	_, err = resp.Body.Read(make([]byte, 1))
	assert.ErrorIs(t, err, errBodyClosed)
	assert.Zero(t, idleCount(tr))
	waitFor(t, "the server to see the connection closed", func() bool { return s.closed.Load() == 1 })

	_, body, err := post(t, c, t.Context(), s.URL)
	require.NoError(t, err)
	assert.Len(t, body, size)
	assert.Equal(t, int32(2), s.opened.Load())
}

// TestTransportMatchesStock: every answer of the Mail Send contract
// reaches sendgrid-go, and classify, as net/http's Transport delivers it.
func TestTransportMatchesStock(t *testing.T) {
	faults := map[string]sgserver.Faults{
		"202": {},
		"403": {Error: sgserver.ErrorFault{Pick: sgserver.Pick{Every: 1}, Status: 403}},
		"429": {RateLimit: sgserver.RateLimitFault{Pick: sgserver.Pick{Every: 1}, Headers: true, Reset: 3 * time.Second}},
		"500": {Error: sgserver.ErrorFault{Pick: sgserver.Pick{Every: 1}}},
		"503": {Error: sgserver.ErrorFault{Pick: sgserver.Pick{Every: 1}, Status: 503, RetryAfter: 7 * time.Second}},
	}
	bodies := map[string]string{
		"valid": `{"from":{"email":"news@example.com"},"subject":"Hi","personalizations":[{"to":[{"email":"ada@example.com"}]}],"content":[{"type":"text/plain","value":"Hi"}]}`,
		"400":   `{"from":{"email":"news@example.com"},"subject":"Hi","personalizations":[{"to":[{"email":"ada@localhost"}]}],"content":[{"type":"text/plain","value":"Hi"}]}`,
		"413":   strings.Repeat(" ", 9<<10) + "{}",
	}
	for fname, f := range faults {
		for bname, body := range bodies {
			t.Run(fname+"/"+bname, func(t *testing.T) {
				s := startServer(t, sgserver.Config{MaxBodyBytes: 8 << 10})
				s.SetFaults(f)
				get := func(hc *http.Client) *rest.Response {
					t.Helper()
					defer hc.CloseIdleConnections()
					resp, err := (&rest.Client{HTTPClient: hc}).Send(NewRequest(s.APIKey(), s.URL, []byte(body)))
					require.NoError(t, err)
					return resp
				}
				stock := get(NewStockHTTPClient(2, 10*time.Second))
				ours := get(NewHTTPClient(2, 10*time.Second))
				assert.Equal(t, stock.StatusCode, ours.StatusCode)
				assert.Equal(t, stock.Body, ours.Body)
				for _, h := range []map[string][]string{stock.Headers, ours.Headers} {
					assert.NotEmpty(t, h["Date"])
					delete(h, "Date")
					if len(h["X-Message-Id"]) == 1 {
						h["X-Message-Id"] = []string{"<fresh>"}
					}
				}
				assert.Equal(t, stock.Headers, ours.Headers)
				assert.Equal(t, classify("k", stock, fixedNow), classify("k", ours, fixedNow))
				assert.Equal(t, 2, s.Stats().Requests)
			})
		}
	}
}

// rawServer is a bare HTTP/1.1 server for what net/http's server does not
// do: it reads each request and calls answer, which writes the response
// and may close the connection (keep false).
type rawServer struct {
	URL      string
	accepted atomic.Int32 // connections
	requests atomic.Int32 // requests read in full
	closed   chan struct{}
}

const answer202 = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nX-Message-Id: raw-1\r\n\r\n"

func startRawServer(t *testing.T, answer func(c net.Conn, n int) (keep bool)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &rawServer{URL: "http://" + ln.Addr().String(), closed: make(chan struct{}, 100)}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if _, err := io.Copy(io.Discard, req.Body); err != nil {
						return
					}
					if !answer(c, int(s.requests.Add(1))) {
						_ = c.Close() // waitClosed returns once it is closed
						s.closed <- struct{}{}
						return
					}
				}
			})
		}
	})
	return s
}

func (s *rawServer) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-s.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not close the connection")
	}
}

func write(c net.Conn, s string) bool {
	_, err := io.WriteString(c, s)
	return err == nil
}

// channelTransport returns the transport of a configured channel.
func channelTransport(t *testing.T, c *Channel) *syncTransport {
	t.Helper()
	st, err := c.state()
	require.NoError(t, err)
	tr, ok := st.client.HTTPClient.Transport.(*syncTransport)
	require.True(t, ok)
	return tr
}

func rawChannel(t *testing.T, s *rawServer) (*Channel, *syncTransport) {
	t.Helper()
	c, _ := newChannel(t)
	configure(t, c, "api_key: SG.k\nbase_url: "+s.URL+"\n")
	return c, channelTransport(t, c)
}

// TestTransportServerCloses: a server that closes the connection after a
// response, announced or not, or later while it is idle. The next request
// goes on a new connection and is sent once.
func TestTransportServerCloses(t *testing.T) {
	tests := []struct {
		name   string
		pooled int // idle connections after the response
		answer func(c net.Conn, n int) bool
	}{
		{"Connection: close", 0, func(c net.Conn, _ int) bool {
			return write(c, "HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n") && false
		}},
		{"body to the end of the connection", 0, func(c net.Conn, _ int) bool {
			return write(c, "HTTP/1.1 202 Accepted\r\n\r\n{}") && false
		}},
		{"abrupt close after the response", 1, func(c net.Conn, _ int) bool {
			return write(c, answer202) && false
		}},
		{"close while idle", 1, func(c net.Conn, _ int) bool {
			if !write(c, answer202) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
			return false
		}},
		{"reset while idle", 1, func(c net.Conn, _ int) bool {
			if !write(c, answer202) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
			_ = c.(*net.TCPConn).SetLinger(0)
			return false
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.pooled > 0 && !idleCheckSupported {
				t.Skip("no idle connection check on this platform")
			}
			s := startRawServer(t, tt.answer)
			c, tr := rawChannel(t, s)
			for i := range 3 {
				r := sendMsg(t, c, msg(fmt.Sprint("k", i), "ada@example.com"))
				assert.Equal(t, sdk.Accepted, r.Status, "%+v", r)
				assert.Equal(t, tt.pooled, idleCount(tr))
				s.waitClosed(t)
				time.Sleep(2 * defaultCheckIdleAfter)
			}
			assert.Equal(t, int32(3), s.requests.Load(), "each request reached the server once")
			assert.Equal(t, int32(3), s.accepted.Load())
		})
	}
}

// TestTransportBytesAfterResponse: bytes after a response break the
// framing: the connection is not reused.
func TestTransportBytesAfterResponse(t *testing.T) {
	s := startRawServer(t, func(c net.Conn, _ int) bool {
		return write(c, answer202+"HTTP/1.1 200 OK\r\n")
	})
	c, tr := rawChannel(t, s)
	for i := range 2 {
		r := sendMsg(t, c, msg(fmt.Sprint("k", i), "ada@example.com"))
		assert.Equal(t, sdk.Accepted, r.Status, "%+v", r)
		assert.Zero(t, idleCount(tr))
	}
	assert.Equal(t, int32(2), s.accepted.Load())
}

// TestTransportHeaderLimit: a response header that does not end fails the
// request at maxResponseHeaderBytes, as in net/http, rather than growing
// in memory until the timeout.
func TestTransportHeaderLimit(t *testing.T) {
	line := "X-Filler: " + strings.Repeat("x", 1000) + "\r\n"
	s := startRawServer(t, func(c net.Conn, _ int) bool {
		if !write(c, "HTTP/1.1 202 Accepted\r\n") {
			return false
		}
		for sent := 0; sent < maxResponseHeaderBytes+2<<20; sent += len(line) {
			if !write(c, line) {
				return false // the client gave up
			}
		}
		return false // without the limit, the client sees EOF here
	})
	_, _, err := post(t, clientFor(newTestTransport(t, 10*time.Second)), t.Context(), s.URL)
	require.Error(t, err)
	assert.ErrorIs(t, err, errHeaderTooLarge)
}

// TestTransportRequestConnectionClose: a request sent with a "Connection:
// close" header does not leave its connection in the pool, even when the
// answer does not say close.
func TestTransportRequestConnectionClose(t *testing.T) {
	s := startRawServer(t, func(c net.Conn, _ int) bool { return write(c, answer202) })
	tr := newTestTransport(t, 10*time.Second)
	for _, tt := range []struct {
		connection string
		idle       int
	}{{"", 1}, {"close", 0}, {"keep-alive, Close", 0}} {
		req, err := http.NewRequest(http.MethodPost, s.URL, strings.NewReader("{}"))
		require.NoError(t, err)
		if tt.connection != "" {
			req.Header.Set("Connection", tt.connection)
		}
		resp, err := clientFor(tr).Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		require.NoError(t, resp.Body.Close())
		assert.Equal(t, tt.idle, idleCount(tr), "Connection: %q", tt.connection)
	}
	assert.Equal(t, int32(3), s.requests.Load())
	assert.Equal(t, int32(2), s.accepted.Load())
}

// TestTransportStaleUnchecked: with the idle check off, a request on a
// connection the server closed is never retried: a write that fails is
// "not sent"; a write that succeeded without an answer is unknown.
func TestTransportStaleUnchecked(t *testing.T) {
	tests := []struct {
		name   string
		reset  bool
		status sdk.ResultStatus
		code   string
	}{
		{"closed: written, no answer", false, sdk.OutcomeUnknown, "no_response"},
		{"reset: write fails", true, sdk.Retryable, "not_sent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startRawServer(t, func(c net.Conn, _ int) bool {
				if !write(c, answer202) {
					return false
				}
				if tt.reset {
					_ = c.(*net.TCPConn).SetLinger(0)
				}
				return false
			})
			c, tr := rawChannel(t, s)
			tr.checkIdleAfter = -1
			var wrote []error
			c.wrote = func(string) { wrote = append(wrote, nil) }

			require.Equal(t, sdk.Accepted, sendMsg(t, c, msg("first", "ada@example.com")).Status)
			s.waitClosed(t)
			time.Sleep(20 * time.Millisecond) // the FIN or RST has arrived
			r := sendMsg(t, c, msg("second", "ada@example.com"))
			assert.Equal(t, tt.status, r.Status, "%+v", r)
			assert.Equal(t, tt.code, r.Code)
			assert.Equal(t, int32(1), s.requests.Load(), "the server got the first request only")
			assert.Equal(t, int32(1), s.accepted.Load(), "no new connection: no retry")
			if tt.reset {
				assert.Len(t, wrote, 1, "WroteRequest reported the failed write")
			} else {
				assert.Len(t, wrote, 2)
			}
		})
	}
}

// TestTransportDropOnReusedConn: the server reads a request on a reused
// connection and closes it unanswered: unknown, sent once.
func TestTransportDropOnReusedConn(t *testing.T) {
	s := startRawServer(t, func(c net.Conn, n int) bool {
		return n == 1 && write(c, answer202)
	})
	c, _ := rawChannel(t, s)
	require.Equal(t, sdk.Accepted, sendMsg(t, c, msg("first", "ada@example.com")).Status)
	r := sendMsg(t, c, msg("second", "ada@example.com"))
	assert.Equal(t, sdk.OutcomeUnknown, r.Status, "%+v", r)
	assert.Contains(t, r.Reason, "may have the message")
	assert.Equal(t, int32(2), s.requests.Load())
	assert.Equal(t, int32(1), s.accepted.Load(), "no retry on a new connection")
}

// TestTransportTrace: the hooks attempt relies on come once, in order.
func TestTransportTrace(t *testing.T) {
	s := startConnServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	tr := newTestTransport(t, 10*time.Second)
	for i := range 2 {
		var events []string
		trace := &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { events = append(events, fmt.Sprint("conn reused=", info.Reused)) },
			WroteRequest: func(info httptrace.WroteRequestInfo) {
				events = append(events, fmt.Sprint("wrote err=", info.Err))
			},
			GotFirstResponseByte: func() { events = append(events, "first byte") },
		}
		_, _, err := post(t, clientFor(tr), httptrace.WithClientTrace(t.Context(), trace), s.URL)
		require.NoError(t, err)
		assert.Equal(t, []string{fmt.Sprint("conn reused=", i > 0), "wrote err=<nil>", "first byte"}, events)
	}
}

// TestTransportCancel: cancelling ctx after the request was written ends
// the wait at once and closes the connection.
func TestTransportCancel(t *testing.T) {
	s := startBlockingServer(t)
	tr := newTestTransport(t, time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	wrote := make(chan error, 1)
	trace := &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) { wrote <- info.Err }}
	done := make(chan error, 1)
	go func() {
		_, _, err := post(t, clientFor(tr), httptrace.WithClientTrace(ctx, trace), s.URL)
		done <- err
	}()
	select {
	case err := <-wrote:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the request was not written")
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
		assert.Less(t, time.Since(start), 2*time.Second)
	case <-time.After(5 * time.Second):
		t.Fatal("RoundTrip did not return after cancel")
	}
	assert.Zero(t, idleCount(tr))
	waitFor(t, "the server to see the connection closed", func() bool { return s.closed.Load() == 1 })
}

// TestTransportTimeout: the transport's timeout, and a shorter ctx
// deadline, end a request the server does not answer.
func TestTransportTimeout(t *testing.T) {
	s := startBlockingServer(t)

	t.Run("timeout", func(t *testing.T) {
		tr := newTestTransport(t, 100*time.Millisecond)
		start := time.Now()
		_, _, err := post(t, clientFor(tr), t.Context(), s.URL)
		require.Error(t, err)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.Contains(t, err.Error(), "timeout 100ms exceeded")
		assert.Less(t, time.Since(start), 3*time.Second)
	})
	t.Run("ctx deadline", func(t *testing.T) {
		tr := newTestTransport(t, time.Minute)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err := post(t, clientFor(tr), ctx, s.URL)
		require.Error(t, err)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.Less(t, time.Since(start), 3*time.Second)
	})
}

// TestTransportTLS: https with the given roots, one connection for several
// requests, TLS 1.2 or later; an unknown certificate is refused.
func TestTransportTLS(t *testing.T) {
	s := startConnServer(t, true, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Message-Id", "tls-1")
		w.WriteHeader(http.StatusAccepted)
	})
	roots := x509.NewCertPool()
	roots.AddCert(s.Certificate())
	tr := newSyncTransport(transportConfig{Parallel: 2, Timeout: 10 * time.Second, RootCAs: roots})
	t.Cleanup(tr.CloseIdleConnections)
	for range 5 {
		resp, _, err := post(t, clientFor(tr), t.Context(), s.URL)
		require.NoError(t, err)
		assert.Equal(t, http.StatusAccepted, resp.StatusCode)
		assert.Equal(t, "tls-1", resp.Header.Get("X-Message-Id"))
		require.NotNil(t, resp.TLS)
		assert.GreaterOrEqual(t, resp.TLS.Version, uint16(tls.VersionTLS12))
	}
	assert.Equal(t, int32(1), s.opened.Load())

	_, _, err := post(t, clientFor(newTestTransport(t, 10*time.Second)), t.Context(), s.URL)
	var unknown x509.UnknownAuthorityError
	assert.ErrorAs(t, err, &unknown, "the system roots do not know httptest's certificate")
}

// TestTransportFallback: what syncTransport does not handle goes through
// net/http's Transport (which adds "Accept-Encoding: gzip"; syncTransport
// does not), with the timeout.
func TestTransportFallback(t *testing.T) {
	type seen struct{ requestURI, acceptEncoding string }
	record := func(got *[]seen, mu *sync.Mutex) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			mu.Lock()
			*got = append(*got, seen{r.RequestURI, r.Header.Get("Accept-Encoding")})
			mu.Unlock()
			w.WriteHeader(http.StatusAccepted)
		}
	}
	var mu sync.Mutex
	var atOrigin, atProxy []seen
	origin := startConnServer(t, false, record(&atOrigin, &mu))
	proxy := startConnServer(t, false, record(&atProxy, &mu))
	proxyURL, err := url.Parse(proxy.URL)
	require.NoError(t, err)

	do := func(tr *syncTransport, body io.Reader, length int64) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, origin.URL+SendPath, body)
		require.NoError(t, err)
		req.ContentLength = length
		resp, err := clientFor(tr).Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusAccepted, resp.StatusCode)
	}

	tr := newTestTransport(t, 10*time.Second)
	do(tr, strings.NewReader("{}"), 2)
	do(tr, io.NopCloser(strings.NewReader("{}")), -1)
	big := strings.Repeat("x", maxDirectBody+1)
	do(tr, strings.NewReader(big), int64(len(big)))
	assert.Equal(t, []seen{
		{SendPath, ""},     // syncTransport
		{SendPath, "gzip"}, // unknown length: net/http
		{SendPath, "gzip"}, // large body: net/http
	}, atOrigin)

	proxied := newTestTransport(t, 10*time.Second)
	proxied.proxy = func(*http.Request) (*url.URL, error) { return proxyURL, nil }
	proxied.fallback.Proxy = proxied.proxy
	do(proxied, strings.NewReader("{}"), 2)
	assert.Equal(t, []seen{{origin.URL + SendPath, "gzip"}}, atProxy, "sent through the proxy")
	assert.Len(t, atOrigin, 3, "not sent to the origin directly")

	t.Run("timeout", func(t *testing.T) {
		slow := startBlockingServer(t)
		tr := newTestTransport(t, 100*time.Millisecond)
		req, err := http.NewRequest(http.MethodPost, slow.URL, io.NopCloser(strings.NewReader("{}")))
		require.NoError(t, err)
		start := time.Now()
		_, err = clientFor(tr).Do(req)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), 3*time.Second)
	})
}

// TestTransportIdlePool: the pool's bound, its idle timeout and
// CloseIdleConnections.
func TestTransportIdlePool(t *testing.T) {
	t.Run("bound", func(t *testing.T) {
		const n = 5
		var inflight atomic.Int32
		gate := make(chan struct{})
		s := startConnServer(t, false, func(w http.ResponseWriter, _ *http.Request) {
			if inflight.Add(1) == n {
				close(gate)
			}
			<-gate
			w.WriteHeader(http.StatusAccepted)
		})
		tr := newTestTransport(t, 10*time.Second)
		tr.maxIdlePerHost = 2
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				_, _, err := post(t, clientFor(tr), t.Context(), s.URL)
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		assert.Equal(t, int32(n), s.opened.Load())
		assert.Equal(t, 2, idleCount(tr))
		waitFor(t, "the connections over the bound to close", func() bool { return s.closed.Load() == n-2 })
	})
	t.Run("idle timeout", func(t *testing.T) {
		s := startConnServer(t, false, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
		tr := newTestTransport(t, 10*time.Second)
		tr.idleTimeout = 50 * time.Millisecond
		for range 2 {
			_, _, err := post(t, clientFor(tr), t.Context(), s.URL)
			require.NoError(t, err)
		}
		assert.Equal(t, 1, idleCount(tr))
		waitFor(t, "the idle connection to close", func() bool { return s.closed.Load() == 1 })
		assert.Zero(t, idleCount(tr))
		_, _, err := post(t, clientFor(tr), t.Context(), s.URL)
		require.NoError(t, err)
		assert.Equal(t, int32(2), s.opened.Load())
		waitFor(t, "the timer to run again", func() bool { return s.closed.Load() == 2 })
	})
	t.Run("CloseIdleConnections", func(t *testing.T) {
		s := startConnServer(t, false, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
		tr := newTestTransport(t, 10*time.Second)
		_, _, err := post(t, clientFor(tr), t.Context(), s.URL)
		require.NoError(t, err)
		assert.Equal(t, 1, idleCount(tr))
		clientFor(tr).CloseIdleConnections()
		assert.Zero(t, idleCount(tr))
		waitFor(t, "the idle connection to close", func() bool { return s.closed.Load() == 1 })
	})
}

// TestTransportDialFails: nothing written, no WroteRequest, an error
// naming the host.
func TestTransportDialFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	var wrote atomic.Int32
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Add(1) }}
	_, _, err = post(t, clientFor(newTestTransport(t, time.Second)), httptrace.WithClientTrace(t.Context(), trace), "http://"+addr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "connect to "+addr)
	var opErr *net.OpError
	assert.True(t, errors.As(err, &opErr), "%v", err)
	assert.Zero(t, wrote.Load())
}
