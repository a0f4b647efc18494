//go:build unix

package sendgridchannel

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// smallBuffer returns a Control func setting a socket's buffer opt
// (SO_SNDBUF, SO_RCVBUF) to a few KB, so that a peer that stops reading
// blocks writes after a few KB rather than megabytes.
func smallBuffer(opt int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 4<<10)
		}); err != nil {
			return err
		}
		return serr
	}
}

// TestTransportTLSStuckWrite: a TLS server that stops reading in the middle
// of the request body. The write ends at the timeout (or when ctx is
// cancelled), and closing the connection does not wait: tls.Conn.Close
// would first write a close_notify alert with a deadline of its own, 5 s,
// into a connection whose send buffer is full.
func TestTransportTLSStuckWrite(t *testing.T) {
	lc := net.ListenConfig{Control: smallBuffer(syscall.SO_RCVBUF)}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	release := make(chan struct{})
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		<-release // the body is not read: the server reads no further
	}))
	_ = s.Listener.Close()
	s.Listener = ln
	s.StartTLS()
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(release) }) // before s.Close
	roots := x509.NewCertPool()
	roots.AddCert(s.Certificate())
	body := bytes.Repeat([]byte("x"), maxDirectBody-1024) // sent by syncTransport

	for _, how := range []string{"timeout", "cancel"} {
		t.Run(how, func(t *testing.T) {
			timeout := 300 * time.Millisecond
			if how == "cancel" {
				timeout = time.Minute
			}
			tr := newSyncTransport(transportConfig{Parallel: 1, Timeout: timeout, RootCAs: roots})
			tr.dialer.Control = smallBuffer(syscall.SO_SNDBUF)
			t.Cleanup(tr.CloseIdleConnections)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var wroteErr error
			trace := &httptrace.ClientTrace{
				WroteRequest: func(info httptrace.WroteRequestInfo) { wroteErr = info.Err },
				TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
					if how == "cancel" && err == nil {
						time.AfterFunc(300*time.Millisecond, cancel)
					}
				},
			}
			req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, s.URL, bytes.NewReader(body))
			require.NoError(t, err)
			start := time.Now()
			_, err = clientFor(tr).Do(req)
			elapsed := time.Since(start)
			require.Error(t, err)
			if how == "cancel" {
				assert.ErrorIs(t, err, context.Canceled)
			} else {
				assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
			}
			assert.Error(t, wroteErr, "the request was not written in full")
			assert.Less(t, elapsed, 3*time.Second, "RoundTrip returned %v after the write stopped", elapsed-300*time.Millisecond)
		})
	}
}
