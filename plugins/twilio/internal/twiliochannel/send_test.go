package twiliochannel

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/twilio/twilioserver"
	"github.com/cohortd/cohort/sdk"
)

var sidPattern = regexp.MustCompile(`^SM[0-9a-f]{32}$`)

func TestSendAccepted(t *testing.T) {
	r := newRig(t, "")
	msgs := []sdk.Message{
		sms("row-1", "+15555550101", "Hello Ada"),
		sms("row 2&x=/ä", "+15555550102", "Grüße, Grace ✓"),
		sms("row-3", "+447700900123", "Hi Alan"),
	}
	results := r.send(t, msgs...)
	recorded := map[string]twilioserver.Message{}
	for _, m := range r.twilio.Messages() {
		if _, dup := recorded[m.SID]; dup {
			t.Fatalf("message %s recorded twice", m.SID)
		}
		recorded[m.SID] = m
	}
	if len(recorded) != len(msgs) {
		t.Fatalf("server recorded %d messages, want %d", len(recorded), len(msgs))
	}
	for _, m := range msgs {
		res := results[m.Key]
		if res.Status != sdk.Accepted || !sidPattern.MatchString(res.ProviderID) {
			t.Errorf("%q: %+v, want accepted with an SM sid", m.Key, res)
			continue
		}
		got := recorded[res.ProviderID]
		wantCallback := r.hooks.URL + "/webhooks/sms/status?key=" + url.QueryEscape(m.Key)
		if got.To != m.To || got.Body != m.Text || got.From != testSender || got.StatusCallback != wantCallback {
			t.Errorf("%q recorded as %+v, want to %s body %q from %s callback %s", m.Key, got, m.To, m.Text, testSender, wantCallback)
		}
	}
}

func TestSendThroughMessagingService(t *testing.T) {
	r := newRig(t, "messaging_service_sid: "+testService+"\n")
	res := r.send(t, sms("row-1", "+15555550101", "hi"))["row-1"]
	if res.Status != sdk.Accepted {
		t.Fatalf("result %+v", res)
	}
	m, _ := r.twilio.Message(res.ProviderID)
	if m.MessagingServiceSID != testService || m.From != "" {
		t.Errorf("recorded %+v, want messaging service %s and no From", m, testService)
	}
}

func TestSendRejectsNonE164WithoutARequest(t *testing.T) {
	r := newRig(t, "")
	bad := []string{"", "15555550101", "+1 555 555 0101", "+1-555-555-0101", "+0555550101", "+1234567", "+1234567890123456", "ada@example.com", "+1555555010a", "(555) 555-0101"}
	var msgs []sdk.Message
	for i, to := range bad {
		msgs = append(msgs, sms(fmt.Sprintf("bad-%d", i), to, "hi"))
	}
	results := r.send(t, msgs...)
	for _, m := range msgs {
		res := results[m.Key]
		if res.Status != sdk.Permanent || !strings.HasPrefix(res.Reason, "not an E.164 phone number: ") {
			t.Errorf("To %q: %+v, want permanent \"not an E.164 phone number: ...\"", m.To, res)
		}
	}
	if n := r.twilio.Requests(); n != 0 {
		t.Fatalf("%d requests reached Twilio for invalid numbers", n)
	}

	// In a mixed batch only the valid number is sent.
	results = r.send(t, sms("good", "+12345678", "hi"), sms("bad", "+1 555", "hi"))
	if results["good"].Status != sdk.Accepted || results["bad"].Status != sdk.Permanent {
		t.Errorf("mixed batch: %+v", results)
	}
	if n := r.twilio.Requests(); n != 1 {
		t.Errorf("%d requests for one valid number", n)
	}
}

func TestSendOutcomes(t *testing.T) {
	const to = "+15555550101"
	tests := []struct {
		name  string
		setup func(*twilioserver.Server)
		check func(t *testing.T, res sdk.Result)
		// recorded is how many messages the server should hold afterwards.
		recorded int
	}{
		{"invalid number (21211)", func(s *twilioserver.Server) { s.Unassigned(to) }, func(t *testing.T, res sdk.Result) {
			want(t, res, sdk.Permanent, "21211")
			if !strings.Contains(res.Reason, "21211") {
				t.Errorf("reason %q does not name 21211", res.Reason)
			}
		}, 0},
		{"replied STOP (21610)", func(s *twilioserver.Server) { s.Stop(to) }, func(t *testing.T, res sdk.Result) {
			want(t, res, sdk.Suppress, "21610")
			if res.Reason != "recipient replied STOP (21610)" {
				t.Errorf("reason %q", res.Reason)
			}
		}, 0},
		{"landline (21614)", func(s *twilioserver.Server) { s.NotMobile(to) }, func(t *testing.T, res sdk.Result) {
			want(t, res, sdk.Permanent, "21614")
			if !strings.Contains(res.Reason, "21614") || !strings.Contains(res.Reason, "not a valid mobile number") {
				t.Errorf("reason %q should carry Twilio's code and message", res.Reason)
			}
		}, 0},
		{"429 with Retry-After", func(s *twilioserver.Server) {
			s.SetRetryAfter(3 * time.Second)
			s.InjectFaults(twilioserver.FaultRateLimit)
		}, func(t *testing.T, res sdk.Result) {
			want(t, res, sdk.Retryable, "20429")
			if res.RetryAfter != 3*time.Second {
				t.Errorf("retry after %v, want 3s", res.RetryAfter)
			}
		}, 0},
		{"429 without Retry-After", func(s *twilioserver.Server) { s.InjectFaults(twilioserver.FaultRateLimit) }, func(t *testing.T, res sdk.Result) {
			want(t, res, sdk.Retryable, "20429")
			if res.RetryAfter != time.Second {
				t.Errorf("retry after %v, want 1s", res.RetryAfter)
			}
		}, 0},
		{"500", func(s *twilioserver.Server) { s.InjectFaults(twilioserver.FaultInternal) }, func(t *testing.T, res sdk.Result) {
			want(t, res, sdk.Retryable, "20500")
		}, 0},
		{"503", func(s *twilioserver.Server) { s.InjectFaults(twilioserver.FaultUnavailable) }, func(t *testing.T, res sdk.Result) {
			want(t, res, sdk.Retryable, "20503")
		}, 0},
		{"lost response", func(s *twilioserver.Server) { s.InjectFaults(twilioserver.FaultDrop) }, func(t *testing.T, res sdk.Result) {
			want(t, res, sdk.OutcomeUnknown, "")
			if res.ProviderID != "" {
				t.Errorf("provider id %q on a lost response", res.ProviderID)
			}
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, "")
			tt.setup(r.twilio)
			tt.check(t, r.send(t, sms("row-1", to, "hi"))["row-1"])
			if n := len(r.twilio.Messages()); n != tt.recorded {
				t.Errorf("server holds %d messages, want %d", n, tt.recorded)
			}
			if n := r.twilio.Requests(); n != 1 {
				t.Errorf("%d requests, want exactly 1 (no retry inside the plugin)", n)
			}
		})
	}
}

func want(t *testing.T, res sdk.Result, status sdk.ResultStatus, code string) {
	t.Helper()
	if res.Status != status || res.Code != code {
		t.Errorf("result %+v, want %v with code %q", res, status, code)
	}
	if res.Status != sdk.Accepted && res.Reason == "" {
		t.Errorf("result %+v has no reason", res)
	}
}

func TestSendWrongCredentials(t *testing.T) {
	srv := twilioserver.New(testAccount, testToken)
	t.Cleanup(srv.Close)
	ch := newChannel(t)
	config := fmt.Sprintf("account_sid: %s\nauth_token: wrongtoken\nfrom: \"%s\"\nbase_url: %s\n", testAccount, testSender, srv.URL())
	if _, err := ch.Configure(t.Context(), sdk.ConfigureRequest{Instance: "sms", Config: []byte(config)}); err != nil {
		t.Fatal(err)
	}
	results, err := ch.Send(t.Context(), []sdk.Message{sms("row-1", "+15555550101", "hi")})
	if err != nil {
		t.Fatal(err)
	}
	res := results[0]
	want(t, res, sdk.Permanent, "20003")
	if !strings.Contains(res.Reason, "check account_sid and auth_token") || strings.Contains(res.Reason, "wrongtoken") {
		t.Errorf("reason %q", res.Reason)
	}
}

func TestSendTimeoutAfterWriteIsUnknown(t *testing.T) {
	r := newRig(t, "from: \""+testSender+"\"\ntimeout: 200ms\n")
	r.twilio.SetLatency(time.Minute)
	res := r.send(t, sms("row-1", "+15555550101", "hi"))["row-1"]
	want(t, res, sdk.OutcomeUnknown, "")
	if n := len(r.twilio.Messages()); n != 1 {
		t.Errorf("server holds %d messages, want 1: the request did reach it", n)
	}
}

func TestSendUnreachableIsRetryable(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	addr := closed.URL
	closed.Close()
	ch := newChannel(t)
	config := fmt.Sprintf("account_sid: %s\nauth_token: %s\nfrom: \"%s\"\nbase_url: %s\n", testAccount, testToken, testSender, addr)
	if _, err := ch.Configure(t.Context(), sdk.ConfigureRequest{Instance: "sms", Config: []byte(config)}); err != nil {
		t.Fatal(err)
	}
	results, err := ch.Send(t.Context(), []sdk.Message{sms("row-1", "+15555550101", "hi")})
	if err != nil {
		t.Fatal(err)
	}
	want(t, results[0], sdk.Retryable, "")
	if !strings.HasPrefix(results[0].Reason, "request not sent") {
		t.Errorf("reason %q", results[0].Reason)
	}
}

func TestSendParallelismIsBounded(t *testing.T) {
	r := newRig(t, "from: \""+testSender+"\"\nparallel: 3\n")
	r.twilio.SetLatency(100 * time.Millisecond)
	var msgs []sdk.Message
	for i := range 9 {
		msgs = append(msgs, sms(fmt.Sprintf("row-%d", i), fmt.Sprintf("+1555555%04d", i), "hi"))
	}
	for key, res := range r.send(t, msgs...) {
		if res.Status != sdk.Accepted {
			t.Errorf("%s: %+v", key, res)
		}
	}
	peak := r.twilio.PeakInFlight()
	if peak > 3 {
		t.Errorf("%d requests in flight at once, want at most parallel = 3", peak)
	}
	if peak < 2 {
		t.Errorf("peak %d requests in flight: sends did not run in parallel", peak)
	}
}

func TestSendHonoursContext(t *testing.T) {
	r := newRig(t, "")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.ch.Send(ctx, []sdk.Message{sms("row-1", "+15555550101", "hi")}); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a cancelled context = %v, want context.Canceled", err)
	}
	if n := r.twilio.Requests(); n != 0 {
		t.Errorf("%d requests after a cancelled Send", n)
	}

	// The context ends while the first of three messages waits for its
	// answer: it is unknown, the other two were never sent.
	r = newRig(t, "from: \""+testSender+"\"\nparallel: 1\ntimeout: 30s\n")
	r.twilio.SetLatency(time.Minute)
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	msgs := []sdk.Message{sms("a", "+15555550101", "hi"), sms("b", "+15555550102", "hi"), sms("c", "+15555550103", "hi")}
	results, err := r.ch.Send(ctx, msgs)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := byKey(t, msgs, results)
	want(t, got["a"], sdk.OutcomeUnknown, "")
	for _, k := range []string{"b", "c"} {
		want(t, got[k], sdk.Retryable, "")
	}
	if n := r.twilio.Requests(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestSendBeforeConfigure(t *testing.T) {
	_, err := newChannel(t).Send(t.Context(), []sdk.Message{sms("row-1", "+15555550101", "hi")})
	var e *sdk.Error
	if !errors.As(err, &e) || e.Code != sdk.Internal {
		t.Errorf("Send before Configure = %v, want an Internal error", err)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"", 7 * time.Second},
		{"5", 5 * time.Second},
		{" 0 ", 0},
		{"-3", 7 * time.Second},
		{"soon", 7 * time.Second},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.header != "" {
			h.Set("Retry-After", tt.header)
		}
		if got := retryAfter(h, now, 7*time.Second); got != tt.want {
			t.Errorf("Retry-After %q = %v, want %v", tt.header, got, tt.want)
		}
	}
}

func TestEnvironmentDoesNotRedirect(t *testing.T) {
	t.Setenv("TWILIO_EDGE", "sydney")
	t.Setenv("TWILIO_REGION", "au1")
	r := newRig(t, "")
	if res := r.send(t, sms("row-1", "+15555550101", "hi"))["row-1"]; res.Status != sdk.Accepted {
		t.Fatalf("with TWILIO_EDGE and TWILIO_REGION set: %+v", res)
	}
}
