package smtpchannel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/smtp/smtpsink"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

func TestConformance(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Record: true})
	sdktest.RunChannel(t, New(), sdktest.ChannelCase{
		Config: []byte(sinkConfig(sink, "connections: 2\n")),
		BadConfigs: [][]byte{
			[]byte("port: 25\n"),
			[]byte("host: smtp.example.com\ntls: none\n"),
			[]byte("host: 127.0.0.1\nconections: 2\n"),
		},
	})
	if _, ok := sink.Message("conformance-2"); !ok {
		t.Error("conformance-2 did not arrive at the sink")
	}
	// The suite sends conformance-1 again in its cancellation checks; every
	// other key must arrive exactly once.
	counts := sink.KeyCounts()
	for _, key := range []string{"conformance-2", "conformance-3", "concurrent-0-1", "concurrent-1-1", "concurrent-2-1", "concurrent-3-1"} {
		if counts[key] != 1 {
			t.Errorf("%s arrived %d times, want once", key, counts[key])
		}
	}
}

// TestOutcomes sends one batch where each recipient meets a different fault
// and checks that each gets its own outcome and no other is affected.
func TestOutcomes(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Record: true})
	sink.SetFaults(smtpsink.Faults{
		RejectRcpt:   []string{"gone@example.com"},
		TempFailRcpt: []string{"busy@example.com"},
		RejectData:   []string{"spam@example.com"},
		DropRcpt:     []string{"drop@example.com"},
	})
	c := configure(t, sinkConfig(sink, "connections: 3\n"))
	msgs := []sdk.Message{
		message("ok-1", "ada@example.com"),
		message("gone", "gone@example.com"),
		message("busy", "busy@example.com"),
		message("spam", "spam@example.com"),
		message("drop", "drop@example.com"),
		message("ok-2", "grace@example.com"),
		message("no-from", "alan@example.com"),
		message("ok-3", "Alan Turing <alan@example.com>"),
	}
	msgs[6].From = ""
	got := send(t, c, msgs...)

	tests := []struct {
		key    string
		status sdk.ResultStatus
		code   string
		reason string
	}{
		{"ok-1", sdk.Accepted, "", ""},
		{"gone", sdk.Suppress, "550", "550 5.1.1 mailbox does not exist"},
		{"busy", sdk.Retryable, "451", "451 4.3.0"},
		{"spam", sdk.Permanent, "554", "554 5.6.0 message refused"},
		{"drop", sdk.OutcomeUnknown, "", "the relay may have it"},
		{"ok-2", sdk.Accepted, "", ""},
		{"no-from", sdk.Permanent, "", "no From address"},
		{"ok-3", sdk.Accepted, "", ""},
	}
	for _, tt := range tests {
		r := got[tt.key]
		if r.Status != tt.status || r.Code != tt.code || !strings.Contains(r.Reason, tt.reason) {
			t.Errorf("%s: %s; want %v code %q reason containing %q", tt.key, resultString(r), tt.status, tt.code, tt.reason)
		}
		if r.Status == sdk.Retryable && r.RetryAfter != retryAfter {
			t.Errorf("%s: retry after %v, want %v", tt.key, r.RetryAfter, retryAfter)
		}
	}
	// Accepted messages carry the relay's queue id, which arrived with them.
	for _, key := range []string{"ok-1", "ok-2", "ok-3"} {
		m, ok := sink.Message(key)
		if !ok {
			t.Fatalf("%s did not arrive", key)
		}
		if got[key].ProviderID != m.QueueID || m.QueueID == "" {
			t.Errorf("%s: provider id %q, want the queue id %q", key, got[key].ProviderID, m.QueueID)
		}
	}
	// The dropped message did arrive: unknown is the honest answer.
	if m, ok := sink.Message("drop"); !ok || !m.Dropped {
		t.Errorf("dropped message: arrived=%v %+v", ok, m)
	}
	if n, want := sink.Arrived(), 4; n != want {
		t.Errorf("%d messages arrived, want %d (3 accepted + 1 dropped)", n, want)
	}
	if dups := sink.Duplicates(); len(dups) != 0 {
		t.Errorf("keys that arrived twice: %v", dups)
	}
}

func TestTemporaryRcptFailure(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	sink.SetFaults(smtpsink.Faults{TempFailRate: 1, TempFailCode: 452})
	c := configure(t, sinkConfig(sink, "connections: 1\n"))
	got := send(t, c, message("a", "a@example.com"), message("b", "b@example.com"))
	for key, r := range got {
		if r.Status != sdk.Retryable || r.Code != "452" || r.RetryAfter != retryAfter {
			t.Errorf("%s: %s, want retryable 452 after 30s", key, resultString(r))
		}
	}
	// RSET left the connection usable: the next message goes through on it.
	sink.SetFaults(smtpsink.Faults{})
	if r := send(t, c, message("c", "c@example.com"))["c"]; r.Status != sdk.Accepted {
		t.Errorf("after RSET: %s", resultString(r))
	}
	if n := sink.Sessions(); n != 1 {
		t.Errorf("%d sessions, want 1: a 4xx must not cost the connection", n)
	}
}

func TestTimeoutAfterDataIsUnknown(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Record: true})
	sink.SetFaults(smtpsink.Faults{DataLatency: time.Minute})
	c := configure(t, "host: 127.0.0.1\nport: "+strconv.Itoa(sink.Port())+"\ntls: none\ntimeout: 200ms\n")
	r := send(t, c, message("slow", "a@example.com"))["slow"]
	if r.Status != sdk.OutcomeUnknown || !strings.Contains(r.Reason, "timeout") {
		t.Errorf("reply after DATA never came: %s, want unknown with a timeout", resultString(r))
	}
	if sink.Arrived() != 0 {
		t.Errorf("the sink answered nothing yet counted %d arrivals", sink.Arrived())
	}
}

func TestTimeoutBeforeDataIsRetryable(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := configure(t, "host: 127.0.0.1\nport: "+strconv.Itoa(sink.Port())+"\ntls: none\ntimeout: 200ms\n")
	// Open the connection first, then slow the sink down: MAIL times out.
	if r := send(t, c, message("warm", "a@example.com"))["warm"]; r.Status != sdk.Accepted {
		t.Fatalf("warm-up: %s", resultString(r))
	}
	sink.SetFaults(smtpsink.Faults{Latency: time.Minute})
	r := send(t, c, message("slow", "a@example.com"))["slow"]
	if r.Status != sdk.Retryable || !strings.Contains(r.Reason, "MAIL FROM") {
		t.Errorf("MAIL timed out: %s, want retryable", resultString(r))
	}
	if n := sink.Sessions(); n != 1 {
		t.Errorf("%d sessions, want 1: a timeout is not a stale connection to replace and retry", n)
	}
}

func TestConnectionRefusedIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	c := configure(t, "host: 127.0.0.1\nport: "+strconv.Itoa(port)+"\ntls: none\ntimeout: 5s\n")
	got := send(t, c, message("a", "a@example.com"), message("b", "b@example.com"))
	for key, r := range got {
		if r.Status != sdk.Retryable || !strings.Contains(r.Reason, "connect to 127.0.0.1:") || r.RetryAfter != retryAfter {
			t.Errorf("%s: %s, want retryable naming the address", key, resultString(r))
		}
	}
}

func TestPoolReusesAndRenewsConnections(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := configure(t, sinkConfig(sink, "connections: 1\nmax_per_connection: 3\n"))
	var msgs []sdk.Message
	for i := range 10 {
		msgs = append(msgs, message(fmt.Sprint("m", i), "a@example.com"))
	}
	for key, r := range send(t, c, msgs...) {
		if r.Status != sdk.Accepted {
			t.Errorf("%s: %s", key, resultString(r))
		}
	}
	if n := sink.Sessions(); n != 4 {
		t.Errorf("%d connections for 10 messages at 3 per connection, want 4", n)
	}

	sink2 := startSink(t, smtpsink.Options{})
	c = configure(t, sinkConfig(sink2, "connections: 3\n"))
	for range 3 {
		send(t, c, msgs...)
	}
	if n := sink2.Sessions(); n < 1 || n > 3 {
		t.Errorf("%d connections for 30 messages over a pool of 3", n)
	}
	if sink2.Accepted() != 30 {
		t.Errorf("accepted %d, want 30", sink2.Accepted())
	}
}

func TestStaleIdleConnectionIsReplaced(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Record: true})
	c := configure(t, sinkConfig(sink, "connections: 1\n"))
	if r := send(t, c, message("first", "a@example.com"))["first"]; r.Status != sdk.Accepted {
		t.Fatalf("first: %s", resultString(r))
	}
	sink.CloseConnections() // the relay drops its idle client
	if r := send(t, c, message("second", "a@example.com"))["second"]; r.Status != sdk.Accepted {
		t.Errorf("second, on a connection the relay closed while idle: %s; want accepted on a new one", resultString(r))
	}
	if n := sink.Sessions(); n != 2 {
		t.Errorf("%d sessions, want 2", n)
	}
}

func TestCancelMidTransaction(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := configure(t, sinkConfig(sink, "connections: 2\n"))
	if r := send(t, c, message("warm", "a@example.com"))["warm"]; r.Status != sdk.Accepted {
		t.Fatalf("warm-up: %s", resultString(r))
	}
	sink.SetFaults(smtpsink.Faults{DataLatency: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	results, err := c.Send(ctx, []sdk.Message{message("a", "a@example.com"), message("b", "b@example.com"), message("c", "c@example.com")})
	if time.Since(start) > 10*time.Second {
		t.Errorf("Send took %v after its context ended", time.Since(start))
	}
	if err != nil {
		t.Fatalf("Send = %v; messages reached the relay, so results are due", err)
	}
	for _, r := range results {
		// a and b were waiting for the DATA reply; c was never started or
		// never finished before the deadline.
		switch r.Status {
		case sdk.OutcomeUnknown:
		case sdk.Retryable:
			if r.RetryAfter != 0 {
				t.Errorf("%s: %s: a message not sent because of the deadline can go again at once", r.Key, resultString(r))
			}
		default:
			t.Errorf("%s: %s, want unknown or retryable", r.Key, resultString(r))
		}
	}
}

// TestCtxEndsBeforeAnyMessage: ctx ends while the relay has not greeted
// yet: no message reached it, so Send returns ctx's error, not results.
func TestCtxEndsBeforeAnyMessage(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	fs := startFake(t, []string{"PIPELINING"}, func(_ int, cmd string, _ []byte) string {
		if cmd == "greeting" {
			<-release
		}
		return ""
	})
	c := configure(t, fs.config("connections: 2\n"))
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	results, err := c.Send(ctx, []sdk.Message{message("a", "a@example.com"), message("b", "b@example.com"), message("c", "c@example.com")})
	if !errors.Is(err, context.DeadlineExceeded) || results != nil {
		t.Errorf("Send = %v, %v; want no results and ctx's error", results, err)
	}
	if cmds := fs.commands(); len(cmds) != 0 {
		t.Errorf("the relay got %q", cmds)
	}
}

func TestStartTLSAndAuth(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Record: true, StartTLS: true, Username: "cohort", Password: "pw-for-tests"})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, sink.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "host: 127.0.0.1\nport: " + strconv.Itoa(sink.Port()) + "\ntls: starttls\ntimeout: 10s\n"
	c := configure(t, base+"ca_file: "+ca+"\nusername: cohort\npassword: pw-for-tests\n")
	if r := send(t, c, message("tls", "a@example.com"))["tls"]; r.Status != sdk.Accepted {
		t.Fatalf("%s", resultString(r))
	}
	if m, _ := sink.Message("tls"); !m.TLS || m.User != "cohort" {
		t.Errorf("arrived TLS=%v user=%q, want over TLS as cohort", m.TLS, m.User)
	}

	bad := configure(t, base+"ca_file: "+ca+"\nusername: cohort\npassword: wrong\n")
	if r := send(t, bad, message("badpw", "a@example.com"))["badpw"]; r.Status != sdk.Retryable || !strings.Contains(r.Reason, "check username and password") {
		t.Errorf("wrong password: %s", resultString(r))
	}
	untrusted := configure(t, base+"username: cohort\npassword: pw-for-tests\n")
	if r := send(t, untrusted, message("untrusted", "a@example.com"))["untrusted"]; r.Status != sdk.Retryable || !strings.Contains(r.Reason, "certificate") {
		t.Errorf("self-signed certificate without ca_file: %s, want retryable naming the certificate", resultString(r))
	}
}

func TestAuthRequiredIsRetryable(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Username: "cohort", Password: "pw-for-tests"})
	c := configure(t, sinkConfig(sink, ""))
	r := send(t, c, message("noauth", "a@example.com"))["noauth"]
	if r.Status != sdk.Retryable || r.Code != "530" || !strings.Contains(r.Reason, "set username and password") {
		t.Errorf("%s, want retryable 530 asking for credentials", resultString(r))
	}
}

func TestImplicitTLS(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Record: true, ImplicitTLS: true})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, sink.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	c := configure(t, "host: localhost\nport: "+strconv.Itoa(sink.Port())+"\ntls: tls\nca_file: "+ca+"\n")
	if r := send(t, c, message("smtps", "a@example.com"))["smtps"]; r.Status != sdk.Accepted {
		t.Fatalf("%s", resultString(r))
	}
	if m, _ := sink.Message("smtps"); !m.TLS {
		t.Error("message did not come over TLS")
	}
}

func TestStartTLSNotOffered(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := configure(t, "host: 127.0.0.1\nport: "+strconv.Itoa(sink.Port())+"\ntimeout: 5s\n")
	r := send(t, c, message("x", "a@example.com"))["x"]
	if r.Status != sdk.Retryable || !strings.Contains(r.Reason, "does not offer STARTTLS") {
		t.Errorf("%s, want retryable saying STARTTLS is missing", resultString(r))
	}
	if sink.Arrived() != 0 {
		t.Error("a message went over plain text although STARTTLS was required")
	}
}

func TestQueueID(t *testing.T) {
	for text, want := range map[string]string{
		"2.0.0 Ok: queued as 4F2C81A0B3":                   "4F2C81A0B3",
		"OK id=1tXyZa-000Abc-3q":                           "1tXyZa-000Abc-3q",
		"2.0.0 x8ABCD123456 Message accepted for delivery": "x8ABCD123456",
		"2.0.0 OK: queued":                                 "",
		"Ok":                                               "",
	} {
		if got := queueID(text); got != want {
			t.Errorf("queueID(%q) = %q, want %q", text, got, want)
		}
	}
	// Without a queue id the provider id is the Message-ID.
	env, err := buildMessage(&sdk.Message{Key: "k", From: "a@example.com", To: "b@example.com"}, fixedNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(env.messageID, "@example.com>") {
		t.Errorf("Message-ID %q", env.messageID)
	}
}
