package sendgridchannel

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/sdk"
)

func TestSendBody(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	c, _ := channelFor(t, s, "categories: [newsletter]\nasm_group_id: 42\n")
	m := sdk.Message{
		Key:        "row-17",
		CustomerID: "cust-17",
		To:         `"Lovelace, Ada" <ada@example.com>`,
		From:       `"News Team" <news@example.com>`,
		ReplyTo:    "help@example.com",
		Subject:    "Spring is here ✿",
		Text:       "Hi Ada",
		HTML:       "<p>Hi Ada &amp; friends</p>",
		Headers: []sdk.Header{
			{Name: "List-Unsubscribe", Values: []string{"<https://example.com/u/tok>", "<mailto:u@example.com>"}},
			{Name: "List-Unsubscribe-Post", Values: []string{"List-Unsubscribe=One-Click"}},
		},
		Metadata: map[string]string{"campaign": "spring", "variant": "b"},
	}
	r := sendMsg(t, c, m)
	require.Equal(t, sdk.Accepted, r.Status, "%+v", r)

	got := s.Accepted()
	require.Len(t, got, 1)
	a := got[0]
	assert.Equal(t, a.MessageID, r.ProviderID)
	assert.Equal(t, sgserver.Address{Email: "news@example.com", Name: "News Team"}, a.From)
	assert.Equal(t, &sgserver.Address{Email: "help@example.com"}, a.ReplyTo)
	assert.Equal(t, "Spring is here ✿", a.Subject)
	require.Len(t, a.Personalizations, 1)
	assert.Equal(t, []sgserver.Address{{Email: "ada@example.com", Name: "Lovelace Ada"}}, a.Personalizations[0].To)
	assert.Equal(t, map[string]string{"cohort_key": "row-17", "cohort_campaign": "spring", "cohort_variant": "b"}, a.CustomArgsOf(0))
	assert.Equal(t, []sgserver.Content{{Type: "text/plain", Value: "Hi Ada"}, {Type: "text/html", Value: "<p>Hi Ada &amp; friends</p>"}}, a.Content)
	assert.Equal(t, map[string]string{
		"List-Unsubscribe":      "<https://example.com/u/tok>, <mailto:u@example.com>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
	}, a.Headers)
	assert.Equal(t, []string{"newsletter", "spring"}, a.Categories)
	require.NotNil(t, a.ASM)
	assert.Equal(t, 42, a.ASM.GroupID)
	assert.Equal(t, map[string]int{"row-17": 1}, s.CountByKey())
}

func TestCategoriesLeaveRoomForNone(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	c, _ := channelFor(t, s, "categories: [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9]\n")
	require.Equal(t, sdk.Accepted, sendMsg(t, c, msg("k", "ada@example.com")).Status)
	assert.Len(t, s.Accepted()[0].Categories, 10, "the campaign is not added when there is no room")
	assert.NotContains(t, s.Accepted()[0].Categories, "spring")
}

func TestSandbox(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	c, _ := channelFor(t, s, "sandbox: true\n")
	r := sendMsg(t, c, msg("k", "ada@example.com"))
	assert.Equal(t, sdk.Accepted, r.Status, "%+v", r)
	assert.Empty(t, s.Accepted(), "sandbox messages are validated, not queued")
	assert.Equal(t, 1, s.Stats().Sandbox)
}

// TestStatusMapping drives every answer of the Mail Send contract through
// sgserver and checks the result it maps to.
func TestStatusMapping(t *testing.T) {
	tests := []struct {
		name       string
		faults     sgserver.Faults
		to         string
		status     sdk.ResultStatus
		code       string
		retryAfter time.Duration
		reason     string
	}{
		{name: "202", status: sdk.Accepted},
		{name: "400 invalid recipient", to: "ada@localhost", status: sdk.Permanent, code: "400",
			reason: "personalizations.0.to.0.email: Does not contain a valid address."},
		{name: "403", faults: sgserver.Faults{Error: sgserver.ErrorFault{Pick: sgserver.Pick{Every: 1}, Status: 403}},
			status: sdk.Retryable, code: "403", retryAfter: 5 * time.Minute, reason: "check api_key"},
		{name: "429 with reset", faults: sgserver.Faults{RateLimit: sgserver.RateLimitFault{Pick: sgserver.Pick{Every: 1}, Headers: true, Reset: 3 * time.Second}},
			status: sdk.Retryable, code: "429", retryAfter: 3 * time.Second, reason: "too many requests"},
		{name: "429 with reset now", faults: sgserver.Faults{RateLimit: sgserver.RateLimitFault{Pick: sgserver.Pick{Every: 1}, Headers: true, Reset: time.Millisecond}},
			status: sdk.Retryable, code: "429", retryAfter: time.Second},
		{name: "429 without headers", faults: sgserver.Faults{RateLimit: sgserver.RateLimitFault{Pick: sgserver.Pick{Every: 1}}},
			status: sdk.Retryable, code: "429", retryAfter: time.Second},
		{name: "500", faults: sgserver.Faults{Error: sgserver.ErrorFault{Pick: sgserver.Pick{Every: 1}}},
			status: sdk.Retryable, code: "500", retryAfter: 0, reason: "server error (HTTP 500)"},
		{name: "503 with Retry-After", faults: sgserver.Faults{Error: sgserver.ErrorFault{Pick: sgserver.Pick{Every: 1}, Status: 503, RetryAfter: 7 * time.Second}},
			status: sdk.Retryable, code: "503", retryAfter: 7 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, sgserver.Config{})
			s.SetFaults(tt.faults)
			c, _ := channelFor(t, s, "")
			to := tt.to
			if to == "" {
				to = "ada@example.com"
			}
			r := sendMsg(t, c, msg("k1", to))
			assert.Equal(t, tt.status, r.Status, "%+v", r)
			assert.Equal(t, tt.code, r.Code)
			assert.Equal(t, tt.retryAfter, r.RetryAfter)
			assert.Contains(t, r.Reason, tt.reason)
			if tt.status == sdk.Accepted {
				require.Len(t, s.Accepted(), 1)
				assert.Equal(t, s.Accepted()[0].MessageID, r.ProviderID)
			} else {
				assert.Empty(t, s.Accepted())
			}
		})
	}
}

func TestUnauthorizedThenFixedKeyResumes(t *testing.T) {
	s := startServer(t, sgserver.Config{APIKey: "SG.right"})
	c, _ := newChannel(t)
	configure(t, c, "api_key: SG.wrong\nbase_url: "+s.URL+"\n")
	r := sendMsg(t, c, msg("k1", "ada@example.com"))
	assert.Equal(t, sdk.Retryable, r.Status)
	assert.Equal(t, "401", r.Code)
	assert.Equal(t, 5*time.Minute, r.RetryAfter)
	assert.Contains(t, r.Reason, "check api_key")
	assert.Contains(t, r.Reason, "The provided authorization grant is invalid")
	assert.NotContains(t, r.Reason, "SG.wrong", "the key is not in the reason")

	configure(t, c, "api_key: SG.right\nbase_url: "+s.URL+"\n")
	assert.Equal(t, sdk.Accepted, sendMsg(t, c, msg("k1", "ada@example.com")).Status)
}

func TestTooLarge(t *testing.T) {
	s := startServer(t, sgserver.Config{MaxBodyBytes: 8 << 10})
	c, _ := channelFor(t, s, "")
	m := msg("big", "ada@example.com")
	m.HTML = strings.Repeat("<p>x</p>", 2<<10)
	r := sendMsg(t, c, m)
	assert.Equal(t, sdk.Permanent, r.Status, "%+v", r)
	assert.Equal(t, "413", r.Code)
	assert.Contains(t, r.Reason, "30 MB")
}

func TestWrongBaseURL(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusMovedPermanently} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if status == http.StatusMovedPermanently {
					http.Redirect(w, r, "https://example.com/", status)
					return
				}
				http.NotFound(w, r)
			}))
			t.Cleanup(hs.Close)
			c, _ := newChannel(t)
			configure(t, c, "api_key: SG.k\nbase_url: "+hs.URL+"\n")
			r := sendMsg(t, c, msg("k", "ada@example.com"))
			assert.Equal(t, sdk.Retryable, r.Status, "%+v", r)
			assert.Equal(t, 5*time.Minute, r.RetryAfter)
			assert.Contains(t, r.Reason, "check base_url")
		})
	}
}

// TestLostResponse: SendGrid takes the message and the connection dies
// before the answer. The result is OutcomeUnknown and the server has it.
func TestLostResponse(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	s.SetFaults(sgserver.Faults{Drop: sgserver.Pick{Every: 1}})
	c, _ := channelFor(t, s, "")
	r := sendMsg(t, c, msg("lost-1", "ada@example.com"))
	assert.Equal(t, sdk.OutcomeUnknown, r.Status, "%+v", r)
	assert.Equal(t, "no_response", r.Code)
	assert.Contains(t, r.Reason, "may have the message")
	assert.Equal(t, map[string]int{"lost-1": 1}, s.CountByKey(), "the provider accepted it")
	assert.Equal(t, 1, s.Stats().Dropped)
}

// TestTimeoutAfterWrite: no answer within timeout after the request was
// written is OutcomeUnknown.
func TestTimeoutAfterWrite(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	s.SetFaults(sgserver.Faults{Latency: time.Minute})
	c, _ := channelFor(t, s, "timeout: 100ms\n")
	r := sendMsg(t, c, msg("slow", "ada@example.com"))
	assert.Equal(t, sdk.OutcomeUnknown, r.Status, "%+v", r)
}

// TestConnectionRefused: nothing listens, so nothing was sent: retryable.
func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	c, _ := newChannel(t)
	configure(t, c, "api_key: SG.k\nbase_url: http://"+addr+"\n")
	r := sendMsg(t, c, msg("k", "ada@example.com"))
	assert.Equal(t, sdk.Retryable, r.Status, "%+v", r)
	assert.Equal(t, "not_sent", r.Code)
	assert.Contains(t, r.Reason, "request not sent")
}

// TestConnectionClosedBeforeAnswer: a server that closes every connection
// without reading or answering. Whether the request was written in full
// before the close is a race, so the result is retryable or unknown; never
// accepted, and never an error for the whole call.
func TestConnectionClosedBeforeAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	}()
	c, _ := newChannel(t)
	configure(t, c, "api_key: SG.k\nbase_url: http://"+ln.Addr().String()+"\n")
	r := sendMsg(t, c, msg("k", "ada@example.com"))
	assert.Contains(t, []sdk.ResultStatus{sdk.Retryable, sdk.OutcomeUnknown}, r.Status, "%+v", r)
}

// TestBatchOneBadRecipient: a recipient SendGrid rejects and one that is
// not an address at all fail alone; the others are accepted.
func TestBatchOneBadRecipient(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	c, _ := channelFor(t, s, "parallel: 3\n")
	var msgs []sdk.Message
	for i := range 8 {
		msgs = append(msgs, msg(fmt.Sprintf("b-%d", i), fmt.Sprintf("user%d@example.com", i)))
	}
	msgs[3].To = "user3@localhost" // SendGrid: not a valid address
	msgs[6].To = "not an address"  // not parseable at all
	results, err := c.Send(t.Context(), msgs)
	require.NoError(t, err)
	got := byKey(t, results)
	require.Len(t, got, len(msgs))
	for _, m := range msgs {
		r := got[m.Key]
		switch m.Key {
		case "b-3":
			assert.Equal(t, sdk.Permanent, r.Status)
			assert.Equal(t, "400", r.Code)
			assert.Contains(t, r.Reason, "personalizations.0.to.0.email")
		case "b-6":
			assert.Equal(t, sdk.Permanent, r.Status)
			assert.Equal(t, "invalid_message", r.Code)
			assert.Contains(t, r.Reason, `recipient "not an address"`)
		default:
			assert.Equal(t, sdk.Accepted, r.Status, "%s: %+v", m.Key, r)
			assert.NotEmpty(t, r.ProviderID)
		}
	}
	counts := s.CountByKey()
	assert.Len(t, counts, 6)
	assert.NotContains(t, counts, "b-3")
	assert.NotContains(t, counts, "b-6")
	assert.Empty(t, s.Duplicates())
}

// TestParallelBound: with parallel 3, exactly 3 requests are in flight at
// the peak, never more.
func TestParallelBound(t *testing.T) {
	const parallel = 3
	var inflight, peak atomic.Int32
	gate := make(chan struct{})
	var once sync.Once
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if n >= parallel {
			once.Do(func() { close(gate) })
		}
		select {
		case <-gate:
		case <-time.After(10 * time.Second):
		}
		w.Header().Set("X-Message-Id", fmt.Sprintf("id-%d", n))
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(hs.Close)
	c, _ := newChannel(t)
	configure(t, c, fmt.Sprintf("api_key: SG.k\nbase_url: %s\nparallel: %d\n", hs.URL, parallel))
	var msgs []sdk.Message
	for i := range 10 {
		msgs = append(msgs, msg(fmt.Sprintf("p-%d", i), fmt.Sprintf("user%d@example.com", i)))
	}
	results, err := c.Send(t.Context(), msgs)
	require.NoError(t, err)
	for _, r := range results {
		assert.Equal(t, sdk.Accepted, r.Status)
	}
	assert.Equal(t, int32(parallel), peak.Load())
}

func TestSendCancelled(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	c, _ := channelFor(t, s, "")

	t.Run("before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := c.Send(ctx, []sdk.Message{msg("k", "ada@example.com")})
		assert.ErrorIs(t, err, context.Canceled)
		assert.Zero(t, s.Stats().Requests)
	})

	t.Run("in flight", func(t *testing.T) {
		s.SetFaults(sgserver.Faults{Latency: time.Minute})
		written := make(chan struct{})
		var once sync.Once
		c.wrote = func(string) { once.Do(func() { close(written) }) }
		defer func() { c.wrote = nil }()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		type out struct {
			results []sdk.Result
			err     error
		}
		done := make(chan out, 1)
		go func() {
			r, err := c.Send(ctx, []sdk.Message{msg("k1", "ada@example.com")})
			done <- out{r, err}
		}()
		select {
		case <-written:
		case <-time.After(30 * time.Second):
			t.Fatal("the request was never written")
		}
		cancel()
		select {
		case o := <-done:
			require.NoError(t, o.err, "a request was written: results, not an error")
			require.Len(t, o.results, 1)
			assert.Equal(t, sdk.OutcomeUnknown, o.results[0].Status, "%+v", o.results[0])
		case <-time.After(30 * time.Second):
			t.Fatal("Send did not return after cancel")
		}
	})
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	assert.Equal(t, time.Duration(0), retryAfter("", now))
	assert.Equal(t, 5*time.Second, retryAfter("5", now))
	assert.Equal(t, time.Duration(0), retryAfter("-5", now))
	assert.Equal(t, 90*time.Second, retryAfter(now.Add(90*time.Second).Format(http.TimeFormat), now))
	assert.Equal(t, time.Duration(0), retryAfter("soon", now))

	h := http.Header{}
	assert.Equal(t, time.Second, rateLimitWait(h, now))
	h.Set("X-RateLimit-Reset", fmt.Sprint(now.Unix()+42))
	assert.Equal(t, 42*time.Second, rateLimitWait(h, now))
	h.Set("X-RateLimit-Reset", fmt.Sprint(now.Unix()-42))
	assert.Equal(t, time.Second, rateLimitWait(h, now))
}

func TestErrorText(t *testing.T) {
	assert.Equal(t, "from.email: bad; too many requests",
		errorText(`{"errors":[{"field":"from.email","message":"bad"},{"field":null,"message":"too many requests"}]}`))
	assert.Equal(t, "<html>oops</html>", errorText("<html>oops</html>"))
	assert.Equal(t, "no details", errorText(""))
	long := errorText(strings.Repeat("é", 1000))
	assert.True(t, strings.HasSuffix(long, "..."))
	assert.LessOrEqual(t, len(long), maxReasonLen+3)
	assert.NotContains(t, long, "\uFFFD", "cut on a rune boundary")
}
