package sgserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendgrid/rest"
	"github.com/sendgrid/sendgrid-go"
	"github.com/sendgrid/sendgrid-go/helpers/eventwebhook"
	"github.com/sendgrid/sendgrid-go/helpers/mail"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
)

func start(t *testing.T, cfg sgserver.Config) *sgserver.Server {
	t.Helper()
	s, err := sgserver.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// client is sendgrid-go's REST client with a timeout, as the plugin uses it.
func client() *rest.Client {
	return &rest.Client{HTTPClient: &http.Client{Timeout: 10 * time.Second}}
}

// send posts m with sendgrid-go to s, with the given key.
func send(t *testing.T, s *sgserver.Server, key string, m *mail.SGMailV3) *rest.Response {
	t.Helper()
	resp, err := sendErr(t, s, key, m)
	require.NoError(t, err)
	return resp
}

func sendErr(t *testing.T, s *sgserver.Server, key string, m *mail.SGMailV3) (*rest.Response, error) {
	t.Helper()
	req := sendgrid.GetRequest(key, "/v3/mail/send", s.URL)
	req.Method = rest.Post
	req.Body = mail.GetRequestBody(m)
	return client().SendWithContext(t.Context(), req)
}

// message is a valid single-recipient message with a cohort_key.
func message(to, key string) *mail.SGMailV3 {
	m := mail.NewV3Mail()
	m.SetFrom(mail.NewEmail("News", "news@example.com"))
	m.Subject = "Hello"
	p := mail.NewPersonalization()
	p.AddTos(mail.NewEmail("Ada Lovelace", to))
	if key != "" {
		p.SetCustomArg("cohort_key", key)
	}
	m.AddPersonalizations(p)
	m.AddContent(mail.NewContent("text/plain", "Hi"), mail.NewContent("text/html", "<p>Hi</p>"))
	return m
}

type errorsBody struct {
	Errors []struct {
		Message string  `json:"message"`
		Field   *string `json:"field"`
		Help    *string `json:"help"`
	} `json:"errors"`
}

func decodeErrors(t *testing.T, body string) errorsBody {
	t.Helper()
	var eb errorsBody
	require.NoError(t, json.Unmarshal([]byte(body), &eb), "body %q", body)
	require.NotEmpty(t, eb.Errors, "body %q", body)
	return eb
}

func TestAcceptedAndRecorded(t *testing.T) {
	s := start(t, sgserver.Config{})
	m := message("ada@example.com", "row-1")
	m.SetReplyTo(mail.NewEmail("", "help@example.com"))
	m.SetHeader("List-Unsubscribe", "<https://example.com/u/1>")
	m.AddCategories("newsletter", "spring")
	m.SetCustomArg("cohort_campaign", "spring")
	m.SetASM(mail.NewASM().SetGroupID(42))

	r1 := send(t, s, sgserver.DefaultAPIKey, m)
	r2 := send(t, s, sgserver.DefaultAPIKey, message("grace@example.com", "row-2"))
	for _, r := range []*rest.Response{r1, r2} {
		assert.Equal(t, http.StatusAccepted, r.StatusCode)
		assert.Empty(t, r.Body)
		require.Len(t, r.Headers["X-Message-Id"], 1)
		assert.Len(t, r.Headers["X-Message-Id"][0], 22)
	}
	assert.NotEqual(t, r1.Headers["X-Message-Id"], r2.Headers["X-Message-Id"])

	got := s.Accepted()
	require.Len(t, got, 2)
	a := got[0]
	assert.Equal(t, r1.Headers["X-Message-Id"][0], a.MessageID)
	assert.Equal(t, sgserver.Address{Email: "news@example.com", Name: "News"}, a.From)
	assert.Equal(t, &sgserver.Address{Email: "help@example.com"}, a.ReplyTo)
	assert.Equal(t, "Hello", a.Subject)
	assert.Equal(t, []sgserver.Address{{Email: "ada@example.com", Name: "Ada Lovelace"}}, a.Personalizations[0].To)
	assert.Equal(t, map[string]string{"cohort_key": "row-1"}, a.Personalizations[0].CustomArgs)
	assert.Equal(t, map[string]string{"cohort_campaign": "spring"}, a.CustomArgs)
	assert.Equal(t, map[string]string{"cohort_key": "row-1", "cohort_campaign": "spring"}, a.CustomArgsOf(0))
	assert.Equal(t, []string{"newsletter", "spring"}, a.Categories)
	assert.Equal(t, map[string]string{"List-Unsubscribe": "<https://example.com/u/1>"}, a.Headers)
	assert.Equal(t, "Hi", a.Body("text/plain"))
	assert.Equal(t, "<p>Hi</p>", a.Body("text/html"))
	assert.Equal(t, 42, a.ASM.GroupID)

	assert.Equal(t, map[string]int{"row-1": 1, "row-2": 1}, s.CountByKey())
	assert.Empty(t, s.Duplicates())
	send(t, s, sgserver.DefaultAPIKey, message("ada@example.com", "row-1"))
	assert.Equal(t, []string{"row-1"}, s.Duplicates())
	assert.Equal(t, sgserver.Stats{Requests: 3, Accepted: 3}, s.Stats())

	s.Reset()
	assert.Empty(t, s.Accepted())
	assert.Empty(t, s.CountByKey())
}

func TestUnauthorized(t *testing.T) {
	s := start(t, sgserver.Config{APIKey: "SG.right"})
	for _, key := range []string{"SG.wrong", ""} {
		r := send(t, s, key, message("ada@example.com", "k"))
		assert.Equal(t, http.StatusUnauthorized, r.StatusCode)
		assert.JSONEq(t, `{"errors":[{"field":null,"message":"The provided authorization grant is invalid, expired, or revoked","help":null}]}`, r.Body)
	}
	s.SetAPIKey("SG.wrong")
	assert.Equal(t, http.StatusAccepted, send(t, s, "SG.wrong", message("ada@example.com", "k")).StatusCode)
	assert.Equal(t, 2, s.Stats().Unauthorized)
	assert.Len(t, s.Accepted(), 1)
}

func TestSandbox(t *testing.T) {
	s := start(t, sgserver.Config{})
	m := message("ada@example.com", "k")
	on := true
	m.SetMailSettings(mail.NewMailSettings().SetSandboxMode(&mail.Setting{Enable: &on}))
	r := send(t, s, sgserver.DefaultAPIKey, m)
	assert.Equal(t, http.StatusOK, r.StatusCode)
	assert.Empty(t, r.Body)
	assert.Empty(t, s.Accepted(), "sandbox mail is not queued")
	assert.Equal(t, 1, s.Stats().Sandbox)

	// A sandboxed invalid message is still rejected.
	m.Subject = ""
	assert.Equal(t, http.StatusBadRequest, send(t, s, sgserver.DefaultAPIKey, m).StatusCode)
}

func TestValidation(t *testing.T) {
	s := start(t, sgserver.Config{})
	many := func(n int) []*mail.Email {
		out := make([]*mail.Email, n)
		for i := range out {
			out[i] = mail.NewEmail("", fmt.Sprintf("user%d@example.com", i))
		}
		return out
	}
	tests := []struct {
		name    string
		edit    func(m *mail.SGMailV3)
		field   string
		message string
	}{
		{"no personalizations", func(m *mail.SGMailV3) { m.Personalizations = nil },
			"personalizations", "at least one personalization"},
		{"1001 personalizations", func(m *mail.SGMailV3) {
			m.Personalizations = nil
			for _, e := range many(1001) {
				p := mail.NewPersonalization()
				p.AddTos(e)
				m.AddPersonalizations(p)
			}
		}, "personalizations", "limited to 1000 personalizations"},
		{"1001 recipients", func(m *mail.SGMailV3) {
			m.Personalizations[0].To = nil
			m.Personalizations[0].AddTos(many(600)...)
			p := mail.NewPersonalization()
			p.AddTos(many(1001)[600:]...)
			m.AddPersonalizations(p)
		}, "personalizations", "limit of 1000 total recipients"},
		{"duplicate across personalizations", func(m *mail.SGMailV3) {
			p := mail.NewPersonalization()
			p.AddTos(mail.NewEmail("", "ADA@example.com"))
			m.AddPersonalizations(p)
		}, "personalizations", "[ADA@example.com] more than once"},
		{"duplicate to and cc", func(m *mail.SGMailV3) {
			m.Personalizations[0].AddCCs(mail.NewEmail("", "ada@example.com"))
		}, "personalizations.0", "unique between to, cc, and bcc"},
		{"duplicate to and bcc", func(m *mail.SGMailV3) {
			m.Personalizations[0].AddBCCs(mail.NewEmail("", "ada@example.com"))
		}, "personalizations.0", "personalizations.0.bcc field"},
		{"no to", func(m *mail.SGMailV3) { m.Personalizations[0].To = nil },
			"personalizations.0.to", "The to array is required"},
		{"no from", func(m *mail.SGMailV3) { m.From = nil }, "from.email", "The from object must be provided"},
		{"bad from", func(m *mail.SGMailV3) { m.From = mail.NewEmail("", "news@") }, "from.email", "valid address"},
		{"no subject", func(m *mail.SGMailV3) { m.Subject = "" }, "subject", "The subject is required"},
		{"no content", func(m *mail.SGMailV3) { m.Content = nil }, "content", "the content parameter is required"},
		{"empty content", func(m *mail.SGMailV3) { m.Content[1].Value = "" }, "content.1.value", "at least one character"},
		{"html before text", func(m *mail.SGMailV3) { m.Content[0], m.Content[1] = m.Content[1], m.Content[0] },
			"content", "text/plain content must be first"},
		{"invalid to", func(m *mail.SGMailV3) { m.Personalizations[0].To[0].Address = "ada.example.com" },
			"personalizations.0.to.0.email", "Does not contain a valid address."},
		{"to without domain dot", func(m *mail.SGMailV3) { m.Personalizations[0].To[0].Address = "ada@localhost" },
			"personalizations.0.to.0.email", "Does not contain a valid address."},
		{"invalid cc", func(m *mail.SGMailV3) { m.Personalizations[0].AddCCs(mail.NewEmail("", "Grace <grace@example.com>")) },
			"personalizations.0.cc.0.email", "Does not contain a valid address."},
		{"11 categories", func(m *mail.SGMailV3) {
			for i := range 11 {
				m.AddCategories(fmt.Sprintf("c%d", i))
			}
		}, "categories", "at most 10 categories"},
		{"custom_args of 10,000 bytes", func(m *mail.SGMailV3) {
			// {"cohort_key":"k","pad":"..."} is 10,000 bytes.
			m.Personalizations[0].SetCustomArg("pad", strings.Repeat("x", 10000-len(`{"cohort_key":"k","pad":""}`)))
		}, "personalizations.0.custom_args", "less than 10000 bytes"},
		{"semicolon in to.name", func(m *mail.SGMailV3) { m.Personalizations[0].To[0].Name = "Lovelace; Ada" },
			"personalizations.0.to.0.name", "cannot include either the ; or ,"},
		{"comma in to.name", func(m *mail.SGMailV3) { m.Personalizations[0].To[0].Name = "Lovelace, Ada" },
			"personalizations.0.to.0.name", "cannot include either the ; or ,"},
		{"reserved header", func(m *mail.SGMailV3) { m.SetHeader("Reply-To", "x@example.com") },
			"headers", "reserved header"},
		{"send_at beyond 72h", func(m *mail.SGMailV3) { m.SetSendAt(int(time.Now().Add(73 * time.Hour).Unix())) },
			"send_at", "72 hours"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := message("ada@example.com", "k")
			tt.edit(m)
			r := send(t, s, sgserver.DefaultAPIKey, m)
			require.Equal(t, http.StatusBadRequest, r.StatusCode, "body %s", r.Body)
			eb := decodeErrors(t, r.Body)
			found := false
			for _, e := range eb.Errors {
				if e.Field != nil && *e.Field == tt.field && strings.Contains(e.Message, tt.message) {
					found = true
					assert.NotNil(t, e.Help)
				}
			}
			assert.True(t, found, "no error with field %q and message containing %q in %s", tt.field, tt.message, r.Body)
		})
	}
	assert.Empty(t, s.Accepted())

	t.Run("custom_args just under the limit", func(t *testing.T) {
		m := message("ada@example.com", "k")
		m.Personalizations[0].SetCustomArg("pad", strings.Repeat("x", 9999-len(`{"cohort_key":"k","pad":""}`)))
		assert.Equal(t, http.StatusAccepted, send(t, s, sgserver.DefaultAPIKey, m).StatusCode)
	})
	t.Run("ten categories", func(t *testing.T) {
		m := message("ada@example.com", "k")
		for i := range 10 {
			m.AddCategories(fmt.Sprintf("c%d", i))
		}
		assert.Equal(t, http.StatusAccepted, send(t, s, sgserver.DefaultAPIKey, m).StatusCode)
	})
	t.Run("malformed JSON", func(t *testing.T) {
		req := sendgrid.GetRequest(sgserver.DefaultAPIKey, "/v3/mail/send", s.URL)
		req.Method = rest.Post
		req.Body = []byte(`{"personalizations": [`)
		r, err := client().SendWithContext(t.Context(), req)
		require.NoError(t, err)
		assert.Equal(t, http.StatusBadRequest, r.StatusCode)
		decodeErrors(t, r.Body)
	})
}

func TestTooLarge(t *testing.T) {
	post := func(s *sgserver.Server, body []byte) *rest.Response {
		req := sendgrid.GetRequest(sgserver.DefaultAPIKey, "/v3/mail/send", s.URL)
		req.Method = rest.Post
		req.Body = body
		r, err := client().SendWithContext(t.Context(), req)
		require.NoError(t, err)
		return r
	}
	// bodyOf returns a valid Mail Send body of exactly n bytes.
	bodyOf := func(n int) []byte {
		head := `{"personalizations":[{"to":[{"email":"ada@example.com"}]}],"from":{"email":"news@example.com"},"subject":"Hi","content":[{"type":"text/html","value":"`
		tail := `"}]}`
		return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
	}

	t.Run("30 MB", func(t *testing.T) {
		s := start(t, sgserver.Config{})
		r := post(s, bodyOf(sgserver.MaxBodyBytes))
		assert.Equal(t, http.StatusRequestEntityTooLarge, r.StatusCode)
		assert.Contains(t, r.Body, "<center><h1>413 Request Entity Too Large</h1></center>")
		assert.Contains(t, http.Header(r.Headers).Get("Content-Type"), "text/html")
		assert.Empty(t, s.Accepted())
	})
	t.Run("limit boundary", func(t *testing.T) {
		s := start(t, sgserver.Config{MaxBodyBytes: 4096})
		assert.Equal(t, http.StatusAccepted, post(s, bodyOf(4095)).StatusCode)
		assert.Equal(t, http.StatusRequestEntityTooLarge, post(s, bodyOf(4096)).StatusCode)
		assert.Len(t, s.Accepted(), 1)
		assert.Equal(t, 1, s.Stats().TooLarge)
	})
}

func TestRateLimit(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	s := start(t, sgserver.Config{Now: func() time.Time { return now }})

	s.SetFaults(sgserver.Faults{RateLimit: sgserver.RateLimitFault{Pick: sgserver.Pick{Every: 2}, Headers: true, Reset: 3 * time.Second}})
	r1 := send(t, s, sgserver.DefaultAPIKey, message("ada@example.com", "a"))
	r2 := send(t, s, sgserver.DefaultAPIKey, message("grace@example.com", "b"))
	assert.Equal(t, http.StatusAccepted, r1.StatusCode)
	require.Equal(t, http.StatusTooManyRequests, r2.StatusCode)
	assert.JSONEq(t, `{"errors":[{"field":null,"message":"too many requests","help":null}]}`, r2.Body)
	assert.Equal(t, "600", http.Header(r2.Headers).Get("X-RateLimit-Limit"))
	assert.Equal(t, "0", http.Header(r2.Headers).Get("X-RateLimit-Remaining"))
	assert.Equal(t, strconv.FormatInt(now.Unix()+3, 10), http.Header(r2.Headers).Get("X-RateLimit-Reset"))

	s.SetFaults(sgserver.Faults{RateLimit: sgserver.RateLimitFault{Pick: sgserver.Pick{Fraction: 1}}})
	r3 := send(t, s, sgserver.DefaultAPIKey, message("alan@example.com", "c"))
	assert.Equal(t, http.StatusTooManyRequests, r3.StatusCode)
	assert.Empty(t, http.Header(r3.Headers).Get("X-RateLimit-Reset"))

	s.SetFaults(sgserver.Faults{})
	assert.Equal(t, http.StatusAccepted, send(t, s, sgserver.DefaultAPIKey, message("alan@example.com", "c")).StatusCode)
	assert.Equal(t, map[string]int{"a": 1, "c": 1}, s.CountByKey())
	assert.Equal(t, 2, s.Stats().RateLimited)
}

func TestErrorStatus(t *testing.T) {
	s := start(t, sgserver.Config{})
	for _, status := range []int{403, 500, 503} {
		s.SetFaults(sgserver.Faults{Error: sgserver.ErrorFault{Pick: sgserver.Pick{Every: 1}, Status: status, RetryAfter: 1500 * time.Millisecond}})
		r := send(t, s, sgserver.DefaultAPIKey, message("ada@example.com", "a"))
		assert.Equal(t, status, r.StatusCode)
		assert.Equal(t, "2", http.Header(r.Headers).Get("Retry-After"))
		decodeErrors(t, r.Body)
	}
	assert.Empty(t, s.Accepted())
	assert.Equal(t, 3, s.Stats().Errors)
}

func TestFractionIsRoughlyHonoured(t *testing.T) {
	s := start(t, sgserver.Config{Seed: 7})
	s.SetFaults(sgserver.Faults{Error: sgserver.ErrorFault{Pick: sgserver.Pick{Fraction: 0.5}, Status: 503}})
	failed := 0
	for i := range 200 {
		if send(t, s, sgserver.DefaultAPIKey, message(fmt.Sprintf("u%d@example.com", i), "")).StatusCode == 503 {
			failed++
		}
	}
	assert.InDelta(t, 100, failed, 30, "503s out of 200 at fraction 0.5")
}

func TestAcceptThenDrop(t *testing.T) {
	s := start(t, sgserver.Config{})
	s.SetFaults(sgserver.Faults{Drop: sgserver.Pick{Every: 2}})
	_, err := sendErr(t, s, sgserver.DefaultAPIKey, message("ada@example.com", "a"))
	require.NoError(t, err)
	resp, err := sendErr(t, s, sgserver.DefaultAPIKey, message("grace@example.com", "b"))
	require.Error(t, err, "the second accepted message's response is dropped; got %+v", resp)
	assert.Equal(t, map[string]int{"a": 1, "b": 1}, s.CountByKey())
	st := s.Stats()
	assert.Equal(t, 2, st.Accepted)
	assert.Equal(t, 1, st.Dropped)
	got := s.Accepted()
	require.Len(t, got, 2)
	assert.False(t, got[0].Dropped)
	assert.True(t, got[1].Dropped)
}

func TestKeysOnly(t *testing.T) {
	s := start(t, sgserver.Config{KeysOnly: true})
	send(t, s, sgserver.DefaultAPIKey, message("ada@example.com", "a"))
	send(t, s, sgserver.DefaultAPIKey, message("ada@example.com", "a"))
	send(t, s, sgserver.DefaultAPIKey, message("grace@example.com", "b"))
	assert.Empty(t, s.Accepted())
	assert.Equal(t, map[string]int{"a": 2, "b": 1}, s.CountByKey())
	assert.Equal(t, []string{"a"}, s.Duplicates())
	_, err := s.WaitAccepted(t.Context(), 3)
	assert.NoError(t, err)
}

func TestLatency(t *testing.T) {
	s := start(t, sgserver.Config{})
	s.SetFaults(sgserver.Faults{Latency: time.Minute})
	req := sendgrid.GetRequest(sgserver.DefaultAPIKey, "/v3/mail/send", s.URL)
	req.Method = rest.Post
	req.Body = mail.GetRequestBody(message("ada@example.com", "a"))
	c := &rest.Client{HTTPClient: &http.Client{Timeout: 50 * time.Millisecond}}
	_, err := c.SendWithContext(t.Context(), req)
	require.Error(t, err, "a minute of latency must outlast a 50ms client timeout")
	assert.Empty(t, s.Accepted())
}

func TestWaitAccepted(t *testing.T) {
	s := start(t, sgserver.Config{})
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			_, _ = sendErr(t, s, sgserver.DefaultAPIKey, message(fmt.Sprintf("u%d@example.com", i), strconv.Itoa(i)))
		})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	got, err := s.WaitAccepted(ctx, 5)
	require.NoError(t, err)
	assert.Len(t, got, 5)
	wg.Wait()

	short, cancel2 := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel2()
	_, err = s.WaitAccepted(short, 6)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// The sample SendGrid publishes with sendgrid-go's helpers/eventwebhook
// test: a dropped event, signed by SendGrid.
const (
	vectorKey       = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
	vectorSignature = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
	vectorTimestamp = "1600112502"
)

// TestEventEncodingMatchesSendGridVector encodes the vector's event with
// Event and SignEvents' framing and checks SendGrid's own signature
// verifies over it: the bytes are exactly SendGrid's.
func TestEventEncodingMatchesSendGridVector(t *testing.T) {
	s := start(t, sgserver.Config{})
	ts, _ := strconv.ParseInt(vectorTimestamp, 10, 64)
	body, h, err := s.SignEvents([]sgserver.Event{{
		Email:       "hello@world.com",
		Event:       "dropped",
		Reason:      "Bounced Address",
		SGEventID:   "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
		SGMessageID: "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
		SMTPID:      "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
		Timestamp:   1600112492,
	}}, time.Unix(ts, 0))
	require.NoError(t, err)
	assert.Equal(t, vectorTimestamp, h.Get(eventwebhook.TimestampHTTPHeader))

	sgKey, err := eventwebhook.ConvertPublicKeyBase64ToECDSA(vectorKey)
	require.NoError(t, err)
	ok, err := eventwebhook.VerifySignature(sgKey, body, vectorSignature, vectorTimestamp)
	require.NoError(t, err)
	assert.True(t, ok, "SendGrid's signature does not verify over our encoding:\n%q", body)

	// And our own signature over the same bytes verifies with our key.
	ourKey, err := eventwebhook.ConvertPublicKeyBase64ToECDSA(s.PublicKeyBase64())
	require.NoError(t, err)
	ok, err = eventwebhook.VerifySignature(ourKey, body, h.Get(eventwebhook.VerificationHTTPHeader), vectorTimestamp)
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = eventwebhook.VerifySignature(ourKey, bytes.Replace(body, []byte("dropped"), []byte("delivered"), 1),
		h.Get(eventwebhook.VerificationHTTPHeader), vectorTimestamp)
	require.NoError(t, err)
	assert.False(t, ok, "a changed body must not verify")
}

func TestEventsForAndPost(t *testing.T) {
	at := time.Unix(1_750_000_000, 0)
	s := start(t, sgserver.Config{Now: func() time.Time { return at }})
	m := message("ada@example.com", "row-1")
	m.AddCategories("spring")
	m.SetASM(mail.NewASM().SetGroupID(7))
	id := send(t, s, sgserver.DefaultAPIKey, m).Headers["X-Message-Id"][0]
	send(t, s, sgserver.DefaultAPIKey, message("grace@example.com", "row-2"))
	send(t, s, sgserver.DefaultAPIKey, message("alan@example.com", "row-3"))

	events := s.EventsFor(sgserver.EventOptions{Bounce: []string{"grace@example.com"}, Block: []string{"alan@example.com"}, Click: []string{"ada@example.com"}})
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, e.CustomArgs["cohort_key"]+":"+e.Event+":"+e.Type)
	}
	assert.Equal(t, []string{
		"row-1:processed:", "row-1:delivered:", "row-1:click:",
		"row-2:processed:", "row-2:bounce:bounce",
		"row-3:processed:", "row-3:bounce:blocked",
	}, kinds)
	assert.True(t, strings.HasPrefix(events[0].SGMessageID, id+".filterdrecv-"), events[0].SGMessageID)
	assert.NotEqual(t, events[0].SGEventID, events[1].SGEventID)

	var got []map[string]any
	received := make(chan struct{})
	hook := http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(received)
		body := new(bytes.Buffer)
		_, _ = body.ReadFrom(r.Body)
		key, err := eventwebhook.ConvertPublicKeyBase64ToECDSA(s.PublicKeyBase64())
		if err != nil {
			w.WriteHeader(500)
			return
		}
		ok, err := eventwebhook.VerifySignature(key, body.Bytes(),
			r.Header.Get(eventwebhook.VerificationHTTPHeader), r.Header.Get(eventwebhook.TimestampHTTPHeader))
		if err != nil || !ok || r.Header.Get(eventwebhook.TimestampHTTPHeader) != strconv.FormatInt(at.Unix(), 10) {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		_ = json.Unmarshal(body.Bytes(), &got)
	})}
	ln := listen(t)
	go func() { _ = hook.Serve(ln) }()
	t.Cleanup(func() { _ = hook.Close() })

	status, err := s.PostEvents(t.Context(), "http://"+ln.Addr().String()+"/webhooks/sg", events)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, status)
	<-received
	require.Len(t, got, len(events))
	first := got[0]
	assert.Equal(t, "row-1", first["cohort_key"], "custom_args are top-level keys")
	assert.Equal(t, "spring", first["category"], "a single category is a string")
	assert.Equal(t, float64(at.Unix()), first["timestamp"])
	assert.Equal(t, float64(7), first["asm_group_id"])
	assert.Equal(t, "ada@example.com", first["email"])
	assert.Equal(t, "https://example.com/offer", got[2]["url"])
	assert.Contains(t, got[4]["reason"], "5.1.1")
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}
