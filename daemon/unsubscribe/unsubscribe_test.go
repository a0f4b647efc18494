package unsubscribe

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/sdk"
)

// testKey is 32 bytes of test material, not a secret.
var testKey = []byte("0123456789abcdef0123456789abcdef")

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func claims() Claims {
	return Claims{CustomerID: "cust-42", Kind: "email", Campaign: "winback", Issued: t0}
}

func newSigner(t *testing.T, ttl time.Duration) *Signer {
	t.Helper()
	s, err := NewSigner(testKey, ttl)
	require.NoError(t, err)
	return s
}

func TestNewSigner(t *testing.T) {
	_, err := NewSigner(testKey[:31], 0)
	require.ErrorContains(t, err, "unsubscribe key is 31 bytes: use at least 32")
	_, err = NewSigner(testKey, 59*24*time.Hour)
	require.ErrorContains(t, err, "set at least 60 days")
	s, err := NewSigner(testKey, 0)
	require.NoError(t, err)
	require.Equal(t, 90*24*time.Hour, s.TTL())
	// The signer keeps its own copy of the key.
	key := append([]byte(nil), testKey...)
	s, err = NewSigner(key, 0)
	require.NoError(t, err)
	tok := s.Token(claims())
	key[0] ^= 1
	_, err = s.Verify(tok, t0)
	require.NoError(t, err)
}

func TestTokenRoundTrip(t *testing.T) {
	s := newSigner(t, 60*24*time.Hour)
	for _, c := range []Claims{
		claims(),
		{CustomerID: "ü-ñ/+=?&#42", Kind: "sms", Campaign: "spring_sale", Issued: t0},
		{CustomerID: strings.Repeat("x", 300), Kind: "email", Campaign: "", Issued: t0.Add(-time.Hour)},
	} {
		tok := s.Token(c)
		require.Equal(t, url.QueryEscape(tok), tok, "the token must need no escaping in a URL")
		require.NotContains(t, tok, "=")
		got, err := s.Verify(tok, t0)
		require.NoError(t, err)
		if d := cmp.Diff(c, got); d != "" {
			t.Fatalf("claims differ (-want +got):\n%s", d)
		}
	}
	// Compact: a typical token fits comfortably in a URL.
	require.Less(t, len(s.Token(claims())), 100)
}

func TestVerifyExpiry(t *testing.T) {
	s := newSigner(t, 60*24*time.Hour)
	tok := s.Token(claims())
	_, err := s.Verify(tok, t0.Add(59*24*time.Hour))
	require.NoError(t, err, "valid at 59 days")
	_, err = s.Verify(tok, t0.Add(60*24*time.Hour))
	require.NoError(t, err, "valid at exactly 60 days")
	c, err := s.Verify(tok, t0.Add(61*24*time.Hour))
	require.ErrorIs(t, err, ErrExpired)
	require.Equal(t, "cust-42", c.CustomerID, "an expired token still says whose it was")
	require.Contains(t, err.Error(), "2026-04-30T12:00:00Z")
}

func TestVerifyRejects(t *testing.T) {
	s := newSigner(t, 0)
	tok := s.Token(claims())
	raw, err := base64URL(tok)
	require.NoError(t, err)

	other, err := NewSigner(bytes.Repeat([]byte{7}, 32), 0)
	require.NoError(t, err)

	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		return encode(b)
	}
	cases := []struct {
		name  string
		token string
		want  error
	}{
		{"empty", "", ErrMalformed},
		{"not base64", "!!!not-a-token!!!", ErrMalformed},
		{"padded", tok + "=", ErrMalformed},
		{"too short", encode(raw[:20]), ErrMalformed},
		{"truncated by a character", tok[:len(tok)-1], ErrMalformed},
		{"truncated by 3 bytes", tok[:len(tok)-4], ErrBadSignature},
		{"unknown version", flip(0), ErrMalformed},
		{"tampered issue time", flip(1), ErrBadSignature},
		{"tampered customer", flip(len(raw) - 32 - 10), ErrBadSignature},
		{"tampered mac", flip(len(raw) - 1), ErrBadSignature},
		{"other key", other.Token(claims()), ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Verify(tc.token, t0)
			require.ErrorIs(t, err, tc.want)
		})
	}
	// A validly signed payload with garbage inside is malformed, not a panic.
	payload := []byte{tokenVersion, 0x02, 0xff, 0xff, 0xff, 0xff, 0x0f}
	require.ErrorIs(t, verifyPayload(s, payload), ErrMalformed)
	payload = []byte{tokenVersion, 0x02, 0x01, 'a', 0x00, 0x00, 'x'}
	require.ErrorIs(t, verifyPayload(s, payload), ErrMalformed, "trailing bytes")
}

func verifyPayload(s *Signer, payload []byte) error {
	_, err := s.Verify(encode(append(payload, s.mac(payload)...)), t0)
	return err
}

func TestURL(t *testing.T) {
	s := newSigner(t, 0)
	for _, base := range []string{"https://mail.example.com", "https://mail.example.com/"} {
		u := s.URL(base, claims())
		require.Equal(t, "https://mail.example.com/unsubscribe?t="+s.Token(claims()), u)
		parsed, err := url.Parse(u)
		require.NoError(t, err)
		got, err := s.Verify(parsed.Query().Get("t"), t0)
		require.NoError(t, err)
		require.Equal(t, claims(), got)
	}
	require.Equal(t, "https://example.com/cohort/unsubscribe?t="+s.Token(claims()), s.URL("https://example.com/cohort", claims()))
}

func TestHeaders(t *testing.T) {
	oneClick := sdk.Header{Name: "List-Unsubscribe-Post", Values: []string{"List-Unsubscribe=One-Click"}}
	cases := []struct {
		url  string
		want []sdk.Header
	}{
		{"https://example.com/unsubscribe?t=abc", []sdk.Header{
			{Name: "List-Unsubscribe", Values: []string{"<https://example.com/unsubscribe?t=abc>"}}, oneClick}},
		{"HTTPS://example.com/unsubscribe?t=abc", []sdk.Header{
			{Name: "List-Unsubscribe", Values: []string{"<HTTPS://example.com/unsubscribe?t=abc>"}}, oneClick}},
		{"http://example.com/unsubscribe?t=abc", []sdk.Header{
			{Name: "List-Unsubscribe", Values: []string{"<http://example.com/unsubscribe?t=abc>"}}}},
		{"http://127.0.0.1:8080/unsubscribe?t=abc", []sdk.Header{
			{Name: "List-Unsubscribe", Values: []string{"<http://127.0.0.1:8080/unsubscribe?t=abc>"}}}},
		{"", nil},
	}
	for _, tc := range cases {
		if d := cmp.Diff(tc.want, Headers(tc.url)); d != "" {
			t.Errorf("Headers(%q) (-want +got):\n%s", tc.url, d)
		}
	}
}

// recordingStore is a Store that remembers every call.
type recordingStore struct {
	mu    sync.Mutex
	calls []storeCall
	err   error
}

type storeCall struct {
	Claims Claims
	At     time.Time
	Via    string
}

func (s *recordingStore) Unsubscribe(ctx context.Context, c Claims, at time.Time, via string) error {
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("store called without a deadline")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.calls = append(s.calls, storeCall{c, at, via})
	return nil
}

func (s *recordingStore) Calls() []storeCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]storeCall(nil), s.calls...)
}

type fixture struct {
	signer *Signer
	store  *recordingStore
	srv    *httptest.Server
	now    time.Time
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{signer: newSigner(t, 60*24*time.Hour), store: &recordingStore{}, now: t0.Add(24 * time.Hour), logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(f.logs, nil))
	mux := http.NewServeMux()
	mux.Handle("/unsubscribe", Handler(f.signer, f.store, func() time.Time { return f.now }, log))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) url(c Claims) string { return f.signer.URL(f.srv.URL, c) }

type response struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{resp.StatusCode, resp.Header, string(b)}
}

func oneClickRequest(t *testing.T, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader("List-Unsubscribe=One-Click"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func TestOneClickPost(t *testing.T) {
	f := newFixture(t)
	r := do(t, oneClickRequest(t, f.url(claims())))
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "unsubscribed\n", r.body, "no confirmation step (RFC 8058 section 3.2)")
	require.Equal(t, []storeCall{{claims(), f.now, ViaOneClick}}, f.store.Calls())
	require.Equal(t, "no-store", r.header.Get("Cache-Control"))

	// Idempotent: a mail client retrying gets 200 again.
	r = do(t, oneClickRequest(t, f.url(claims())))
	require.Equal(t, http.StatusOK, r.status)
	require.Len(t, f.store.Calls(), 2)

	logs := f.logs.String()
	require.Contains(t, logs, "customer=cust-42")
	require.Contains(t, logs, "via=one-click")
	require.NotContains(t, logs, f.signer.Token(claims()), "tokens are not logged")
}

func TestOneClickMultipart(t *testing.T) {
	// RFC 8058 says the body SHOULD be multipart/form-data.
	f := newFixture(t)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	require.NoError(t, mw.WriteField("List-Unsubscribe", "One-Click"))
	require.NoError(t, mw.Close())
	req, err := http.NewRequest(http.MethodPost, f.url(claims()), &body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	r := do(t, req)
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, []storeCall{{claims(), f.now, ViaOneClick}}, f.store.Calls())
}

func TestGetDoesNotUnsubscribe(t *testing.T) {
	f := newFixture(t)
	u := f.url(claims())
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, err := http.NewRequest(method, u, nil)
		require.NoError(t, err)
		r := do(t, req)
		require.Equal(t, http.StatusOK, r.status, method)
		if method == http.MethodGet {
			require.Contains(t, r.body, `<form method="post" action="?t=`+f.signer.Token(claims())+`">`)
			require.Contains(t, r.body, `<button type="submit">Unsubscribe</button>`)
			require.Contains(t, r.body, `<html lang="en">`)
			require.Contains(t, r.body, "marketing emails")
		}
	}
	require.Empty(t, f.store.Calls(), "GET and HEAD must not unsubscribe: mail scanners prefetch links")
}

func TestFormPost(t *testing.T) {
	f := newFixture(t)
	c := claims()
	c.Kind = "sms"
	// What a browser sends when the page's button is pressed: the form's
	// action (?t=...) resolved against the page's URL.
	page, err := url.Parse(f.url(c))
	require.NoError(t, err)
	action, err := page.Parse("?t=" + f.signer.Token(c))
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(url.Values{"confirm": {"yes"}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r := do(t, req)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.body, "You are unsubscribed")
	require.Contains(t, r.body, "text messages")
	require.Equal(t, []storeCall{{c, f.now, ViaPage}}, f.store.Calls())
}

func TestPostWithoutIntent(t *testing.T) {
	f := newFixture(t)
	for _, body := range []string{"", "List-Unsubscribe=Maybe", "%zz"} {
		req, err := http.NewRequest(http.MethodPost, f.url(claims()), strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r := do(t, req)
		require.Equal(t, http.StatusBadRequest, r.status, "body %q", body)
	}
	require.Empty(t, f.store.Calls())
}

func TestInvalidTokens(t *testing.T) {
	f := newFixture(t)
	good := f.signer.Token(claims())
	tampered := []byte(good)
	tampered[10] ^= 0x02 // stays in the base64url alphabet
	cases := map[string]string{
		"missing":  f.srv.URL + "/unsubscribe",
		"garbage":  f.srv.URL + "/unsubscribe?t=hello",
		"tampered": f.srv.URL + "/unsubscribe?t=" + string(tampered),
	}
	for name, u := range cases {
		for _, req := range []*http.Request{mustGet(t, u), oneClickRequest(t, u)} {
			r := do(t, req)
			require.Equal(t, http.StatusBadRequest, r.status, "%s %s", name, req.Method)
			require.Contains(t, r.body, "This link is invalid or has expired")
			require.Contains(t, r.body, "reply to one of our messages", "the page says how else to unsubscribe")
		}
	}
	require.Empty(t, f.store.Calls())
}

func mustGet(t *testing.T, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	return req
}

func TestExpiredVersusValid(t *testing.T) {
	f := newFixture(t) // ttl 60 days
	u := f.url(claims())

	f.now = t0.Add(61 * 24 * time.Hour)
	r := do(t, oneClickRequest(t, u))
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body, "expired")
	require.Empty(t, f.store.Calls())
	require.Contains(t, f.logs.String(), "reason=expired")

	f.now = t0.Add(59 * 24 * time.Hour)
	r = do(t, oneClickRequest(t, u))
	require.Equal(t, http.StatusOK, r.status)
	require.Len(t, f.store.Calls(), 1)
}

func TestWrongMethod(t *testing.T) {
	f := newFixture(t)
	for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, err := http.NewRequest(m, f.url(claims()), strings.NewReader("List-Unsubscribe=One-Click"))
		require.NoError(t, err)
		r := do(t, req)
		require.Equal(t, http.StatusMethodNotAllowed, r.status, m)
		require.Equal(t, "GET, HEAD, POST", r.header.Get("Allow"))
	}
	require.Empty(t, f.store.Calls())
}

func TestStoreError(t *testing.T) {
	f := newFixture(t)
	f.store.err = errors.New("database is locked")
	r := do(t, oneClickRequest(t, f.url(claims())))
	require.Equal(t, http.StatusInternalServerError, r.status)
	require.Contains(t, r.body, "try again")
	require.NotContains(t, r.body, "database is locked", "internal errors are not shown")
	logs := f.logs.String()
	require.Contains(t, logs, "recording an unsubscribe failed")
	require.Contains(t, logs, "customer=cust-42")
}

func TestBodyLimit(t *testing.T) {
	f := newFixture(t)
	body := "List-Unsubscribe=One-Click&pad=" + strings.Repeat("x", maxBody)
	req, err := http.NewRequest(http.MethodPost, f.url(claims()), strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r := do(t, req)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Empty(t, f.store.Calls())
}

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
func encode(b []byte) string             { return base64.RawURLEncoding.EncodeToString(b) }

// FuzzVerify: no input makes Verify panic, and only tokens the signer
// made verify.
func FuzzVerify(f *testing.F) {
	s, err := NewSigner(testKey, 0)
	require.NoError(f, err)
	good := s.Token(claims())
	f.Add(good)
	f.Add("")
	f.Add(good[:len(good)-4])
	f.Add("AQ" + strings.Repeat("A", 60))
	f.Fuzz(func(t *testing.T, token string) {
		c, err := s.Verify(token, t0)
		if err == nil && s.Token(c) != token {
			t.Fatalf("token %q verified but is not the signer's token for %+v", token, c)
		}
	})
}
