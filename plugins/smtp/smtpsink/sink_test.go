package smtpsink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func start(t *testing.T, opts Options) *Sink {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func dial(t *testing.T, s *Sink) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 10*time.Second
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// send runs one transaction and returns the error of the step that failed.
func send(c *smtp.Client, to, key string) (string, error) {
	if err := c.Mail("news@example.com", nil); err != nil {
		return "mail", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "rcpt", err
	}
	w, err := c.Data()
	if err != nil {
		return "data", err
	}
	msg := "From: news@example.com\r\nTo: " + to + "\r\nX-Cohort-Key: " + key + "\r\nSubject: hi\r\n\r\nHello\r\n.dot line\r\n"
	if _, err := io.WriteString(w, msg); err != nil {
		return "write", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "close", err
	}
	return resp.StatusText, nil
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestRecordsWhatArrived(t *testing.T) {
	s := start(t, Options{Record: true})
	c := dial(t, s)
	status, err := send(c, "ada@example.com", "k-1")
	if err != nil {
		t.Fatalf("send: %s: %v", status, err)
	}
	if !strings.Contains(status, "queued as Q00000001") {
		t.Errorf("250 text %q, want Postfix-style 'queued as <id>'", status)
	}
	if _, err := send(c, "grace@example.com", "k-1"); err != nil {
		t.Fatal(err)
	}
	if got := s.Accepted(); got != 2 {
		t.Errorf("Accepted = %d, want 2", got)
	}
	if got := s.Duplicates(); len(got) != 1 || got[0] != "k-1" {
		t.Errorf("Duplicates = %v, want [k-1]", got)
	}
	m, ok := s.Message("k-1")
	if !ok {
		t.Fatal("message k-1 not recorded")
	}
	if m.From != "news@example.com" || len(m.To) != 1 || m.To[0] != "grace@example.com" {
		t.Errorf("envelope %q -> %v, want news@example.com -> [grace@example.com]", m.From, m.To)
	}
	if got := m.Header.Get("Subject"); got != "hi" {
		t.Errorf("Subject = %q", got)
	}
	if got := string(m.Body); got != "Hello\r\n.dot line\r\n" {
		t.Errorf("body %q: dot-stuffing not undone or line ends changed", got)
	}
	if m.QueueID != "Q00000002" || m.Dropped || m.TLS {
		t.Errorf("message = %+v", m)
	}
}

func TestFaults(t *testing.T) {
	s := start(t, Options{Record: true})
	s.SetFaults(Faults{
		RejectRcpt:   []string{"Gone@example.com"},
		TempFailRcpt: []string{"busy@example.com"},
		RejectData:   []string{"spam@example.com"},
		DropRcpt:     []string{"drop@example.com"},
	})
	c := dial(t, s)
	tests := []struct {
		to, step string
		code     int
	}{
		{"gone@example.com", "rcpt", 550},
		{"busy@example.com", "close", 451},
		{"spam@example.com", "close", 554},
		{"ok@example.com", "", 0},
	}
	for _, tt := range tests {
		step, err := send(c, tt.to, tt.to)
		if tt.code == 0 {
			if err != nil {
				t.Errorf("%s: %s: %v", tt.to, step, err)
			}
			continue
		}
		if step != tt.step || smtpCode(err) != tt.code {
			t.Errorf("%s: failed at %s with %v, want %d at %s", tt.to, step, err, tt.code, tt.step)
		}
		if err := c.Reset(); err != nil {
			t.Fatalf("RSET after %s: %v", tt.to, err)
		}
	}
	var se *smtp.SMTPError
	if _, err := send(c, "gone@example.com", "x"); !errors.As(err, &se) || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
		t.Errorf("hard bounce = %v, want 550 5.1.1", err)
	}
	_ = c.Reset()

	// The dropped message arrives; the client gets no reply.
	step, err := send(c, "drop@example.com", "dropped")
	if step != "close" || err == nil || smtpCode(err) != 0 {
		t.Errorf("drop: %s: %v, want a connection error at close", step, err)
	}
	m, ok := s.Message("dropped")
	if !ok || !m.Dropped || m.QueueID != "" {
		t.Errorf("dropped message recorded = %v %+v", ok, m)
	}
	if got, want := s.Arrived(), 2; got != want {
		t.Errorf("Arrived = %d, want %d (ok and dropped)", got, want)
	}
	if got, want := s.Accepted(), 1; got != want {
		t.Errorf("Accepted = %d, want %d", got, want)
	}
}

func TestTempFailRate(t *testing.T) {
	s := start(t, Options{})
	s.SetFaults(Faults{TempFailRate: 0.5, TempFailCode: 452})
	c := dial(t, s)
	var fails []int
	for i := range 6 {
		step, err := send(c, "a@example.com", fmt.Sprint(i))
		if err != nil {
			if step != "rcpt" || smtpCode(err) != 452 {
				t.Fatalf("transaction %d: %s: %v, want 452 at rcpt", i, step, err)
			}
			fails = append(fails, i)
			_ = c.Reset()
		}
	}
	if fmt.Sprint(fails) != "[1 3 5]" {
		t.Errorf("failed transactions %v, want [1 3 5]", fails)
	}
	if s.Arrived() != 3 {
		t.Errorf("Arrived = %d, want 3", s.Arrived())
	}
}

func TestDataLatencyTimesOut(t *testing.T) {
	s := start(t, Options{})
	s.SetFaults(Faults{DataLatency: 5 * time.Second})
	c := dial(t, s)
	c.SubmissionTimeout = 100 * time.Millisecond
	step, err := send(c, "a@example.com", "slow")
	var ne net.Error
	if step != "close" || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("send = %s: %v, want a timeout waiting for the DATA reply", step, err)
	}
}

func TestAuthAndStartTLS(t *testing.T) {
	s := start(t, Options{Record: true, StartTLS: true, Username: "cohort", Password: "pw-for-tests"})
	c := dial(t, s)
	if err := c.Mail("news@example.com", nil); smtpCode(err) != 502 && smtpCode(err) != 530 {
		t.Errorf("MAIL before AUTH = %v, want refused", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "cohort", "pw-for-tests")); err == nil {
		t.Error("AUTH over plaintext accepted; the sink offers STARTTLS and must refuse it")
	}
	_ = c.Close()

	c, err := smtp.DialStartTLS(s.Addr(), &tls.Config{RootCAs: s.CertPool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "cohort", "wrong")); smtpCode(err) != 535 {
		t.Errorf("AUTH with a wrong password = %v, want 535", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "cohort", "pw-for-tests")); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if step, err := send(c, "a@example.com", "tls"); err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	m, _ := s.Message("tls")
	if !m.TLS || m.User != "cohort" {
		t.Errorf("message TLS=%v user=%q, want true, cohort", m.TLS, m.User)
	}
}

func TestImplicitTLS(t *testing.T) {
	s := start(t, Options{Record: true, ImplicitTLS: true})
	c, err := smtp.DialTLS(s.Addr(), &tls.Config{RootCAs: s.CertPool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if step, err := send(c, "a@example.com", "smtps"); err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	if m, _ := s.Message("smtps"); !m.TLS {
		t.Error("message did not come over TLS")
	}
}

func TestBareSend(t *testing.T) {
	s := start(t, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	d, err := BareSend(ctx, s.Addr(), 50, 3)
	if err != nil {
		t.Fatal(err)
	}
	if d <= 0 {
		t.Errorf("duration %v", d)
	}
	if got := s.Accepted(); got != 50 {
		t.Errorf("sink accepted %d, want 50", got)
	}
	if keys := s.KeyCounts(); len(keys) != 50 || len(s.Duplicates()) != 0 {
		t.Errorf("%d distinct keys, duplicates %v; want 50 distinct", len(keys), s.Duplicates())
	}
	if got := s.Sessions(); got != 3 {
		t.Errorf("%d sessions, want 3 persistent connections", got)
	}
	if n := len(BareMessage(12345)); n < 700 || n > 820 {
		t.Errorf("BareMessage is %d bytes, want about 760", n)
	}
}

func TestBareSendStopsOnCancel(t *testing.T) {
	s := start(t, Options{})
	s.SetFaults(Faults{Latency: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := BareSend(ctx, s.Addr(), 10, 2); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("BareSend = %v, want the context's deadline", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("BareSend did not return after its context ended")
	}
}

// BenchmarkBareSend is the baseline figure: messages/s of a bare go-smtp
// client over 4 connections to the sink.
func BenchmarkBareSend(b *testing.B) {
	s, err := Start(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	d, err := BareSend(b.Context(), s.Addr(), b.N, 4)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/d.Seconds(), "msgs/s")
}

// countingConn is a net.Conn whose writes are recorded one by one and
// whose reads return scripted input.
type countingConn struct {
	net.Conn // nil: only the methods below are used
	writes   []string
	in       *strings.Reader
	writeErr error
	closed   bool
}

func (c *countingConn) Write(p []byte) (int, error) {
	if c.writeErr != nil {
		return 0, c.writeErr
	}
	c.writes = append(c.writes, string(p))
	return len(p), nil
}

func (c *countingConn) Read(p []byte) (int, error) { return c.in.Read(p) }
func (c *countingConn) Close() error               { c.closed = true; return nil }

// TestReplyBatcher: writes wait for the next Read or Close and then leave
// in one write; a write error comes back from the Read that flushed.
func TestReplyBatcher(t *testing.T) {
	raw := &countingConn{in: strings.NewReader("MAIL FROM:<news@example.com>\r\n")}
	c := &replyBatcher{Conn: raw}
	for _, r := range []string{"250 2.0.0 Roger\r\n", "250 2.0.0 I'll make sure\r\n", "354 Go ahead\r\n"} {
		if n, err := c.Write([]byte(r)); n != len(r) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", r, n, err)
		}
	}
	if len(raw.writes) != 0 {
		t.Fatalf("replies left before the server read again: %q", raw.writes)
	}
	buf := make([]byte, 64)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if want := []string{"250 2.0.0 Roger\r\n250 2.0.0 I'll make sure\r\n354 Go ahead\r\n"}; !slices.Equal(raw.writes, want) {
		t.Fatalf("writes %q, want %q", raw.writes, want)
	}
	if _, err := c.Write([]byte("221 Bye\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil || !raw.closed {
		t.Fatalf("Close: %v, closed %v", err, raw.closed)
	}
	if got := raw.writes[len(raw.writes)-1]; got != "221 Bye\r\n" {
		t.Fatalf("Close did not send the reply waiting: last write %q", got)
	}

	broken := &countingConn{in: strings.NewReader(""), writeErr: errors.New("connection reset")}
	c = &replyBatcher{Conn: broken}
	if _, err := c.Write([]byte("250 OK\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("Read after a failed flush: %v, want the write error", err)
	}
	if _, err := c.Write([]byte("250 OK\r\n")); err == nil {
		t.Fatal("Write after a failed flush succeeded")
	}
}
