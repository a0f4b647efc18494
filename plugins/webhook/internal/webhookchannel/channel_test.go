package webhookchannel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/plugins/webhook/webhooksig"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

const testSecret = "test-secret-0123456789"

var fixedNow = time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC)

// received is one request as an endpoint saw it.
type received struct {
	header http.Header
	body   []byte
	sigErr error
}

// endpoint is an httptest server that verifies signatures and answers
// with respond (200 with an id by default).
type endpoint struct {
	*httptest.Server
	mu       sync.Mutex
	requests []received
	now      time.Time
}

func newEndpoint(t testing.TB, respond func(w http.ResponseWriter, r *http.Request, body []byte)) *endpoint {
	t.Helper()
	e := &endpoint{now: fixedNow}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sigErr := webhooksig.Verify([]byte(testSecret), r.Header.Get(webhooksig.Header), body, e.now, 5*time.Minute)
		e.mu.Lock()
		e.requests = append(e.requests, received{header: r.Header.Clone(), body: body, sigErr: sigErr})
		e.mu.Unlock()
		if respond != nil {
			respond(w, r, body)
			return
		}
		var p Payload
		_ = json.Unmarshal(body, &p)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"evt-%s"}`, p.Key)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *endpoint) got() []received {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]received(nil), e.requests...)
}

func configure(t testing.TB, config string) *Channel {
	t.Helper()
	c := New()
	c.now = func() time.Time { return fixedNow }
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Configure(context.Background(), sdk.ConfigureRequest{Config: []byte(config)}); err != nil {
		t.Fatalf("Configure:\n%s\n%v", config, err)
	}
	return c
}

func endpointConfig(url, extra string) string {
	return "url: " + url + "\nsecret: " + testSecret + "\ntimeout: 5s\n" + extra
}

func message(key string) sdk.Message {
	return sdk.Message{
		Key: key, CustomerID: "cust-" + key, To: "https://example.com/hooks/" + key,
		Subject: "Hello " + key, Text: "Hi ✓ " + key, HTML: "<p>Hi " + key + "</p>",
		Metadata: map[string]string{"campaign": "spring", "variant": "a"},
	}
}

func send(t *testing.T, c *Channel, msgs ...sdk.Message) map[string]sdk.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	results, err := c.Send(ctx, msgs)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(results) != len(msgs) {
		t.Fatalf("%d results for %d messages", len(results), len(msgs))
	}
	out := map[string]sdk.Result{}
	for _, r := range results {
		out[r.Key] = r
	}
	return out
}

func show(r sdk.Result) string {
	return fmt.Sprintf("%v code=%q id=%q after=%v reason=%q", r.Status, r.Code, r.ProviderID, r.RetryAfter, r.Reason)
}

func TestConformance(t *testing.T) {
	e := newEndpoint(t, nil)
	c := New()
	c.now = func() time.Time { return fixedNow }
	sdktest.RunChannel(t, c, sdktest.ChannelCase{
		Config: []byte(endpointConfig(e.URL, "")),
		BadConfigs: [][]byte{
			[]byte("secret: " + testSecret + "\n"),
			[]byte("url: ftp://example.com/x\nsecret: " + testSecret + "\n"),
			[]byte("url: https://example.com/x\n"),
			[]byte("url: https://example.com/x\nsecret: " + testSecret + "\nparalel: 2\n"),
		},
	})
	for i, r := range e.got() {
		if r.sigErr != nil {
			t.Errorf("request %d: signature: %v", i, r.sigErr)
		}
	}
}

func TestConfigRejects(t *testing.T) {
	tests := []struct{ config, field, want string }{
		{"", "url", "url is required"},
		{"url: example.com/hook\nsecret: " + testSecret + "\n", "url", "not an http or https URL"},
		{"url: https://user:pw@example.com/\nsecret: " + testSecret + "\n", "url", "without credentials"},
		{"url: https://example.com/\n", "secret", "secret is required"},
		{"url: https://example.com/\nsecret: short\n", "secret", "at least 16"},
		{"url: https://example.com/\nsecret: " + testSecret + "\nheaders: {Idempotency-Key: x}\n", "headers.Idempotency-Key", "set by the webhook channel"},
		{"url: https://example.com/\nsecret: " + testSecret + "\nheaders: {\"Bad Name\": x}\n", "headers.Bad Name", "not a valid header name"},
		{"url: https://example.com/\nsecret: " + testSecret + "\ntimeout: 0s\n", "timeout", "above 0"},
		{"url: https://example.com/\nsecret: " + testSecret + "\nparallel: 0\n", "parallel", "use 1 to 256"},
		{"url: https://example.com/\nsecret: " + testSecret + "\nkind: fax\n", "kind", `kind "fax"`},
		{"url: https://example.com/\nsecret: " + testSecret + "\nparalel: 2\n", "paralel", `did you mean "parallel"`},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			_, err := New().Configure(t.Context(), sdk.ConfigureRequest{Config: []byte(tt.config)})
			var e *sdk.Error
			if !errors.As(err, &e) || e.Code != sdk.InvalidConfig || e.Field != tt.field || !strings.Contains(e.Error(), tt.want) {
				t.Errorf("Configure = %v, want INVALID_CONFIG on %q containing %q", err, tt.field, tt.want)
			}
		})
	}
	info, err := New().Configure(t.Context(), sdk.ConfigureRequest{Config: []byte("url: https://example.com/\nsecret: " + testSecret + "\n")})
	if err != nil || info.Kind != "webhook" || info.Name != "webhook" {
		t.Errorf("defaults: %+v, %v", info, err)
	}
	info, err = New().Configure(t.Context(), sdk.ConfigureRequest{Config: []byte("url: https://example.com/\nsecret: " + testSecret + "\nkind: sms\n")})
	if err != nil || info.Kind != "sms" {
		t.Errorf("kind: sms: %+v, %v", info, err)
	}
}

func TestRequest(t *testing.T) {
	e := newEndpoint(t, nil)
	c := configure(t, endpointConfig(e.URL, "headers:\n  Authorization: Bearer test-token\n  X-Tenant: acme\n"))
	m := message("k-1")
	noMeta := sdk.Message{Key: "k-2", To: "https://example.com/hooks/b"}
	got := send(t, c, m, noMeta)
	if r := got["k-1"]; r.Status != sdk.Accepted || r.ProviderID != "evt-k-1" || r.Code != "200" {
		t.Errorf("k-1: %s, want accepted with the response's id", show(r))
	}
	reqs := e.got()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	for _, r := range reqs {
		var p map[string]any
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatalf("body is not JSON: %v: %s", err, r.body)
		}
		if r.sigErr != nil {
			t.Errorf("%s: signature: %v", p["key"], r.sigErr)
		}
		for name, want := range map[string]string{
			"Content-Type":    "application/json",
			"Idempotency-Key": p["key"].(string),
			"Authorization":   "Bearer test-token",
			"X-Tenant":        "acme",
		} {
			if got := r.header.Get(name); got != want {
				t.Errorf("%s: header %s = %q, want %q", p["key"], name, got, want)
			}
		}
		if p["key"] == "k-1" {
			want := map[string]any{
				"key": "k-1", "customer_id": "cust-k-1", "to": "https://example.com/hooks/k-1",
				"subject": "Hello k-1", "text": "Hi ✓ k-1", "html": "<p>Hi k-1</p>",
				"metadata": map[string]any{"campaign": "spring", "variant": "a"},
			}
			if diff := cmp.Diff(want, p); diff != "" {
				t.Errorf("k-1 body (-want +got):\n%s", diff)
			}
		} else if md, ok := p["metadata"].(map[string]any); !ok || len(md) != 0 {
			t.Errorf("k-2 metadata = %v, want {}", p["metadata"])
		}
	}

	// A receiver refuses a tampered or stale request.
	r := reqs[0]
	sig := r.header.Get(webhooksig.Header)
	if err := webhooksig.Verify([]byte(testSecret), sig, append(r.body[:len(r.body):len(r.body)], ' '), fixedNow, 5*time.Minute); !errors.Is(err, webhooksig.ErrMismatch) {
		t.Errorf("tampered body: %v, want ErrMismatch", err)
	}
	if err := webhooksig.Verify([]byte(testSecret), sig, r.body, fixedNow.Add(10*time.Minute), 5*time.Minute); !errors.Is(err, webhooksig.ErrStale) {
		t.Errorf("replayed 10 minutes later: %v, want ErrStale", err)
	}
	if !strings.HasPrefix(sig, fmt.Sprintf("t=%d,v1=", fixedNow.Unix())) {
		t.Errorf("signature header %q", sig)
	}
}

func TestOutcomes(t *testing.T) {
	retryDate := fixedNow.Add(90 * time.Second).Format(http.TimeFormat)
	e := newEndpoint(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		var p Payload
		_ = json.Unmarshal(body, &p)
		switch p.Key {
		case "ok-noid":
			w.WriteHeader(http.StatusNoContent)
		case "ok-numid":
			fmt.Fprint(w, `{"id": 12345}`)
		case "gone":
			w.WriteHeader(http.StatusGone)
			fmt.Fprint(w, "subscriber deleted")
		case "bad":
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"error":"`+strings.Repeat("x", 500)+`"}`)
		case "unauth":
			w.WriteHeader(http.StatusUnauthorized)
		case "slow-down":
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
		case "unavailable":
			w.Header().Set("Retry-After", retryDate)
			w.WriteHeader(http.StatusServiceUnavailable)
		case "boom":
			w.WriteHeader(http.StatusInternalServerError)
		case "req-timeout":
			w.WriteHeader(http.StatusRequestTimeout)
		case "moved":
			http.Redirect(w, r, "https://example.com/elsewhere", http.StatusMovedPermanently)
		default:
			fmt.Fprint(w, "not json")
		}
	})
	c := configure(t, endpointConfig(e.URL, "parallel: 4\n"))
	keys := []string{"ok-noid", "ok-numid", "ok-text", "gone", "bad", "unauth", "slow-down", "unavailable", "boom", "req-timeout", "moved"}
	var msgs []sdk.Message
	for _, k := range keys {
		msgs = append(msgs, message(k))
	}
	got := send(t, c, msgs...)
	tests := []struct {
		key    string
		status sdk.ResultStatus
		id     string
		after  time.Duration
		reason string
	}{
		{"ok-noid", sdk.Accepted, "ok-noid", 0, ""},
		{"ok-numid", sdk.Accepted, "12345", 0, ""},
		{"ok-text", sdk.Accepted, "ok-text", 0, ""},
		{"gone", sdk.Suppress, "", 0, "HTTP 410 (the recipient is gone): subscriber deleted"},
		{"bad", sdk.Permanent, "", 0, `HTTP 422: {"error":"xxx`},
		{"unauth", sdk.Permanent, "", 0, "HTTP 401: (empty body)"},
		{"slow-down", sdk.Retryable, "", 7 * time.Second, "HTTP 429"},
		{"unavailable", sdk.Retryable, "", 90 * time.Second, "HTTP 503"},
		{"boom", sdk.Retryable, "", defaultRetryAfter, "HTTP 500"},
		{"req-timeout", sdk.Retryable, "", defaultRetryAfter, "HTTP 408"},
		{"moved", sdk.Permanent, "", 0, "redirect to https://example.com/elsewhere"},
	}
	for _, tt := range tests {
		r := got[tt.key]
		if r.Status != tt.status || r.ProviderID != tt.id || r.RetryAfter != tt.after || !strings.Contains(r.Reason, tt.reason) {
			t.Errorf("%s: %s\nwant %v id %q after %v reason containing %q", tt.key, show(r), tt.status, tt.id, tt.after, tt.reason)
		}
	}
	if r := got["bad"]; len(r.Reason) > 300 {
		t.Errorf("reason is %d bytes: the body excerpt should be short", len(r.Reason))
	}
	if n := len(e.got()); n != len(keys) {
		t.Errorf("%d requests, want %d: redirects must not be followed", n, len(keys))
	}
}

func TestRetryAfter(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"":        defaultRetryAfter,
		"0":       0,
		"120":     2 * time.Minute,
		"-5":      defaultRetryAfter,
		"soon":    defaultRetryAfter,
		"9999999": maxRetryAfter,
		fixedNow.Add(-time.Hour).Format(http.TimeFormat):  0,
		fixedNow.Add(time.Minute).Format(http.TimeFormat): time.Minute,
	} {
		if got := retryAfter(v, fixedNow); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestLostResponseIsUnknown(t *testing.T) {
	release := make(chan struct{})
	e := newEndpoint(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		var p Payload
		_ = json.Unmarshal(body, &p)
		switch p.Key {
		case "hangup":
			// Read the whole request, then close without answering.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case "hang":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	defer close(release)
	c := configure(t, "url: "+e.URL+"\nsecret: "+testSecret+"\ntimeout: 300ms\n")
	got := send(t, c, message("hangup"), message("hang"), message("fine"))
	for _, key := range []string{"hangup", "hang"} {
		if r := got[key]; r.Status != sdk.OutcomeUnknown || !strings.Contains(r.Reason, "may have acted") {
			t.Errorf("%s: %s, want unknown", key, show(r))
		}
	}
	if r := got["fine"]; r.Status != sdk.Accepted {
		t.Errorf("fine: %s: one bad request must not affect the others", show(r))
	}

	// On a reused keep-alive connection too, the request goes once: Go's
	// transport would replay it (it carries an Idempotency-Key).
	c = configure(t, "url: "+e.URL+"\nsecret: "+testSecret+"\ntimeout: 5s\nparallel: 1\n")
	before := len(e.got())
	if r := send(t, c, message("warm"))["warm"]; r.Status != sdk.Accepted {
		t.Fatalf("warm: %s", show(r))
	}
	if r := send(t, c, message("hangup"))["hangup"]; r.Status != sdk.OutcomeUnknown {
		t.Errorf("hangup on a reused connection: %s, want unknown", show(r))
	}
	if n := len(e.got()) - before; n != 2 {
		t.Errorf("%d requests for warm and hangup, want 2: the lost request was replayed", n)
	}
}

func TestNotSentIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := configure(t, "url: http://"+addr+"/hook\nsecret: "+testSecret+"\ntimeout: 5s\n")
	r := send(t, c, message("refused"))["refused"]
	if r.Status != sdk.Retryable || r.RetryAfter != defaultRetryAfter || !strings.Contains(r.Reason, "request not sent") {
		t.Errorf("connection refused: %s, want retryable", show(r))
	}
}

func TestCancelledSend(t *testing.T) {
	e := newEndpoint(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		<-r.Context().Done()
	})
	c := configure(t, endpointConfig(e.URL, "parallel: 1\n"))
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	results, err := c.Send(ctx, []sdk.Message{message("a"), message("b")})
	if err != nil {
		t.Fatalf("Send = %v: a request was written, so results are due", err)
	}
	byKey := map[string]sdk.Result{}
	for _, r := range results {
		byKey[r.Key] = r
	}
	if r := byKey["a"]; r.Status != sdk.OutcomeUnknown {
		t.Errorf("a (written, no answer before the deadline): %s, want unknown", show(r))
	}
	if r := byKey["b"]; r.Status != sdk.Retryable || r.RetryAfter != 0 {
		t.Errorf("b (never started): %s, want retryable at once", show(r))
	}
}
