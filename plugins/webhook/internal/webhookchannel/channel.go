// Package webhookchannel is the webhook channel: it POSTs each message as
// JSON to one URL, signed with HMAC-SHA256 (see package webhooksig).
//
// Config keys:
//
//	url       the endpoint, http or https (required)
//	secret    HMAC key for X-Cohort-Signature, at least 16 characters (required)
//	headers   extra request headers, e.g. {Authorization: "Bearer ${TOKEN}"}
//	timeout   per request, from connecting to the end of the response (default 10s)
//	parallel  requests in flight per Send (default 8)
//	kind      the channel kind reported to the daemon: webhook (default),
//	          email or sms, for an endpoint that delivers by that channel
//	          (policies, consent and caps are kept per kind)
//
// Each request: POST url, Content-Type: application/json,
// Idempotency-Key: <message key>, X-Cohort-Signature: t=<unix>,v1=<hex>,
// body {"key","customer_id","to","subject","text","html","metadata"}.
// Redirects are not followed.
//
// Outcomes: 2xx accepted (provider id: a string or number "id" in a JSON
// response, else the key); 410 Gone suppress; 408, 429 and 5xx retryable
// after Retry-After (seconds or an HTTP date; 30s when absent); other 4xx
// and 3xx permanent, the reason quoting the status and the start of the
// body; a failure before the request was written retryable; a timeout or
// lost connection after it was written unknown (the endpoint may have
// acted on it).
package webhookchannel

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cohortd/cohort/plugins/webhook/webhooksig"
	"github.com/cohortd/cohort/sdk"
)

// Version is the plugin's version, reported in ChannelInfo.
const Version = "0.1.0"

const (
	maxBatch = 500
	// defaultRetryAfter is the pause after a retryable failure that named none.
	defaultRetryAfter = 30 * time.Second
	// maxRetryAfter caps what a Retry-After header may ask.
	maxRetryAfter = 24 * time.Hour
	// maxResponse is how much of a response body is read.
	maxResponse = 64 << 10
	// excerptLen is how much of a body a reason quotes.
	excerptLen = 200
)

// Payload is the JSON body of each request.
type Payload struct {
	Key        string            `json:"key"`
	CustomerID string            `json:"customer_id"`
	To         string            `json:"to"`
	Subject    string            `json:"subject"`
	Text       string            `json:"text"`
	HTML       string            `json:"html"`
	Metadata   map[string]string `json:"metadata"`
}

type state struct {
	cfg    *Config
	secret []byte
	client *http.Client
}

// Channel is the webhook channel. Configure it before Send.
type Channel struct {
	now func() time.Time

	mu sync.Mutex
	st *state
}

var _ sdk.Channel = (*Channel)(nil)

// New returns an unconfigured webhook channel.
func New() *Channel { return &Channel{now: time.Now} }

// Configure checks the config (no network call) and replaces the HTTP
// client. A second Configure replaces the first.
func (c *Channel) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	cfg, err := parseConfig(req.Config)
	if err != nil {
		return sdk.ChannelInfo{}, err
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   cfg.Parallel,
		ForceAttemptHTTP2:     true,
	}
	st := &state{
		cfg:    cfg,
		secret: []byte(cfg.Secret),
		client: &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	c.mu.Lock()
	old := c.st
	c.st = st
	c.mu.Unlock()
	if old != nil {
		old.client.CloseIdleConnections()
	}
	return sdk.ChannelInfo{Name: "webhook", Version: Version, Kind: cfg.Kind, MaxBatch: maxBatch}, nil
}

// Close closes idle connections.
func (c *Channel) Close() error {
	c.mu.Lock()
	st := c.st
	c.st = nil
	c.mu.Unlock()
	if st != nil {
		st.client.CloseIdleConnections()
	}
	return nil
}

// Send POSTs each message, up to parallel at a time. A message's failure
// never affects the others. If ctx ends before any request was written,
// Send returns ctx's error; once one was, the others are retryable.
func (c *Channel) Send(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	if st == nil {
		return nil, sdk.Errorf(sdk.Internal, "", "webhook channel: Send before Configure")
	}
	results := make([]sdk.Result, len(msgs))
	var written atomic.Bool
	next := make(chan int, len(msgs))
	for i := range msgs {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range min(len(msgs), st.cfg.Parallel) {
		wg.Go(func() {
			for i := range next {
				var w bool
				results[i], w = st.post(ctx, &msgs[i], c.now)
				if w {
					written.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil && !written.Load() {
		return nil, err
	}
	return results, nil
}

// post sends one message; wrote says whether the request was written.
func (st *state) post(ctx context.Context, m *sdk.Message, now func() time.Time) (sdk.Result, bool) {
	res := sdk.Result{Key: m.Key}
	if err := ctx.Err(); err != nil {
		res.Status, res.Reason = sdk.Retryable, "not sent: "+err.Error()
		return res, false
	}
	metadata := m.Metadata
	if metadata == nil {
		metadata = map[string]string{}
	}
	body, err := json.Marshal(Payload{
		Key: m.Key, CustomerID: m.CustomerID, To: m.To, Subject: m.Subject,
		Text: m.Text, HTML: m.HTML, Metadata: metadata,
	})
	if err != nil {
		res.Status, res.Reason = sdk.Permanent, "encode the message as JSON: "+err.Error()
		return res, false
	}
	if strings.ContainsAny(m.Key, "\r\n") {
		res.Status, res.Reason = sdk.Permanent, "the message key has a line break and cannot be an Idempotency-Key"
		return res, false
	}

	rctx, cancel := context.WithTimeout(ctx, st.cfg.Timeout)
	defer cancel()
	var wrote atomic.Bool
	rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
			}
		},
	})
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, st.cfg.URL, bytes.NewReader(body))
	if err != nil {
		res.Status, res.Reason = sdk.Permanent, "build the request: "+err.Error()
		return res, false
	}
	// Go's transport replays a request that carries an Idempotency-Key when
	// a reused connection fails, even after the request was written. The
	// daemon promises at most one request per message unless configured to
	// resend, so no replay: without GetBody the transport cannot.
	req.GetBody = nil
	for k, v := range st.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cohort-webhook/"+Version)
	req.Header.Set("Idempotency-Key", m.Key)
	req.Header.Set(webhooksig.Header, webhooksig.Sign(st.secret, now(), body))

	resp, err := st.client.Do(req)
	if err != nil {
		if !wrote.Load() {
			res.Status, res.Reason = sdk.Retryable, "request not sent: "+err.Error()
			if ctx.Err() == nil {
				res.RetryAfter = defaultRetryAfter
			}
			return res, false
		}
		res.Status = sdk.OutcomeUnknown
		res.Reason = "no response after the request was sent (the endpoint may have acted on it): " + err.Error()
		return res, true
	}
	defer resp.Body.Close()
	respBody, readErr := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	res.Code = strconv.Itoa(resp.StatusCode)
	status := fmt.Sprintf("HTTP %d", resp.StatusCode)
	switch sc := resp.StatusCode; {
	case sc >= 200 && sc < 300:
		res.Status, res.ProviderID = sdk.Accepted, m.Key
		if readErr == nil {
			if id := responseID(respBody); id != "" {
				res.ProviderID = id
			}
		}
	case sc == http.StatusGone:
		res.Status, res.Reason = sdk.Suppress, status+" (the recipient is gone): "+excerpt(respBody)
	case sc == http.StatusRequestTimeout || sc == http.StatusTooManyRequests || sc >= 500:
		res.Status, res.Reason = sdk.Retryable, status+": "+excerpt(respBody)
		res.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), now())
	case sc >= 300 && sc < 400:
		res.Status = sdk.Permanent
		res.Reason = status + " redirect to " + resp.Header.Get("Location") + ": set url to the final address (redirects are not followed)"
	default:
		res.Status, res.Reason = sdk.Permanent, status+": "+excerpt(respBody)
	}
	return res, true
}

// responseID returns the "id" of a JSON object body, string or number.
func responseID(body []byte) string {
	var v struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(body, &v) != nil || len(v.ID) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(v.ID, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(v.ID, &n) == nil {
		return n.String()
	}
	return ""
}

// retryAfter reads a Retry-After value: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return defaultRetryAfter
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return defaultRetryAfter
		}
		return min(time.Duration(n)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return defaultRetryAfter
}

// excerpt is the start of a body, one line of valid UTF-8.
func excerpt(b []byte) string {
	if len(b) == 0 {
		return "(empty body)"
	}
	s := strings.ToValidUTF8(string(b), "?")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > excerptLen {
		cut := excerptLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
