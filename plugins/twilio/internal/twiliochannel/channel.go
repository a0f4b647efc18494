// Package twiliochannel is the Twilio SMS channel: it sends each message
// with one call to Twilio's Programmable Messaging API through twilio-go,
// and turns Twilio's status callbacks and inbound STOP replies into
// delivery events.
//
// Config keys (decoded strictly):
//
//	account_sid: AC...            # required: the account SID (AC + 32 hex digits)
//	auth_token: ${TWILIO_AUTH_TOKEN}  # required; signs webhooks too; never logged
//	from: "+15555550100"          # the sender: an E.164 number, short code or sender ID
//	messaging_service_sid: MG...  # or a messaging service instead (exactly one of the two)
//	base_url: https://api.twilio.com  # default; a local stand-in in tests
//	parallel: 8                   # API calls in flight at once per Send (1..256)
//	timeout: 10s                  # per API call (at most 5m)
//
// Recipients must be E.164 numbers (+ and 8 to 15 digits, the first not
// 0); anything else fails permanently without a call. Message.Text is the
// body; Message.From is ignored (the sender is the account's, from config).
//
// Outcome of each send:
//
//	201                                   accepted, provider id = the message SID
//	21610 (recipient replied STOP)        suppress
//	21211 (invalid To), other 4xx         permanent, with Twilio's code and message
//	429 / 20429                           retryable after Retry-After (default 1s)
//	5xx                                   retryable (after Retry-After if given)
//	no connection, request not written    retryable
//	timeout or connection lost after the
//	request was written, unreadable 2xx   unknown: Twilio may have the message
//
// Each message's StatusCallback is public_url + webhook path +
// "/status?key=<row key>", so a status callback names the outbox row even
// when the send's answer was lost. Webhooks, verified with
// X-Twilio-Signature against the URL as called (403 otherwise):
//
//	POST <webhook path>/status   sent, delivered, undelivered and failed statuses
//	POST <webhook path>/inbound  the number's "a message comes in" webhook:
//	                             STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT
//	                             unsubscribe the sender's number
package twiliochannel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	twclient "github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/cohortd/cohort/sdk"
)

// Version is the plugin's version, reported in ChannelInfo.
const Version = "0.1.0"

// maxBatch is the most messages the host should give one Send.
const maxBatch = 100

// defaultRetryAfter is the wait after a 429 that named none.
const defaultRetryAfter = time.Second

// Channel is the Twilio SMS channel. Configure it before Send.
type Channel struct {
	now func() time.Time
	log *slog.Logger

	mu sync.RWMutex
	st *state // nil until configured; replaced whole by Configure
}

// state is one configuration, read-only once built.
type state struct {
	cfg       Config
	base      *url.URL
	callback  string // public URL + webhook path, "" when there is no public URL
	transport *http.Transport
	validator twclient.RequestValidator
}

var (
	_ sdk.Channel          = (*Channel)(nil)
	_ sdk.ChannelWebhooker = (*Channel)(nil)
)

// New returns an unconfigured Twilio channel that logs to log (nil:
// sdk.Logger()).
func New(log *slog.Logger) *Channel {
	if log == nil {
		log = sdk.Logger()
	}
	return &Channel{now: time.Now, log: log}
}

// Configure checks the config and keeps it. It makes no network call. A
// second Configure replaces the first.
func (c *Channel) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	cfg, base, err := parseConfig(req.Config)
	if err != nil {
		return sdk.ChannelInfo{}, err
	}
	st := &state{
		cfg:       cfg,
		base:      base,
		transport: newTransport(cfg.Parallel),
		validator: twclient.NewRequestValidator(cfg.AuthToken),
	}
	if req.PublicURL != "" {
		path := req.WebhookPath
		if path == "" {
			path = "/webhooks/" + req.Instance
		}
		st.callback = strings.TrimRight(req.PublicURL, "/") + path
	} else {
		c.log.Warn("no public URL (http.public_url): messages go without a StatusCallback, so Twilio cannot report deliveries and a lost answer stays unknown",
			"instance", req.Instance)
	}
	if base.Scheme == "http" && !isLoopback(base.Hostname()) {
		c.log.Warn("base_url is plain http: the auth token travels unencrypted", "base_url", base.String())
	}

	c.mu.Lock()
	old := c.st
	c.st = st
	c.mu.Unlock()
	if old != nil {
		old.transport.CloseIdleConnections()
	}
	c.log.Debug("configured", "config", cfg)
	return sdk.ChannelInfo{
		Name:     "twilio",
		Version:  Version,
		Kind:     "sms",
		MaxBatch: maxBatch,
	}, nil
}

func isLoopback(host string) bool {
	return host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1"
}

func (c *Channel) state() (*state, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.st == nil {
		return nil, sdk.Errorf(sdk.Internal, "", "twilio channel: called before Configure")
	}
	return c.st, nil
}

// Close drops idle connections.
func (c *Channel) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st != nil {
		c.st.transport.CloseIdleConnections()
	}
	return nil
}

// Send sends each message with one API call, at most parallel at once, and
// returns one result per message. Recipients that are not E.164 numbers
// fail permanently without a call. When ctx ends during the Send, messages
// not yet begun come back retryable; messages whose request was written
// come back unknown. A ctx already done returns its error and sends nothing.
func (c *Channel) Send(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := c.state()
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	results := make([]sdk.Result, len(msgs))
	todo := make([]int, 0, len(msgs))
	for i := range msgs {
		if !e164.MatchString(msgs[i].To) {
			results[i] = sdk.Result{
				Key:    msgs[i].Key,
				Status: sdk.Permanent,
				Reason: fmt.Sprintf("not an E.164 phone number: %q (write + and the country code, e.g. +15555550100)", msgs[i].To),
			}
			continue
		}
		todo = append(todo, i)
	}

	var next, begun atomic.Int64
	var wg sync.WaitGroup
	for range min(st.cfg.Parallel, len(todo)) {
		wg.Go(func() {
			for {
				j := int(next.Add(1)) - 1
				if j >= len(todo) {
					return
				}
				m := &msgs[todo[j]]
				if err := ctx.Err(); err != nil {
					results[todo[j]] = sdk.Result{Key: m.Key, Status: sdk.Retryable, Reason: "not sent: " + err.Error()}
					continue
				}
				begun.Add(1)
				results[todo[j]] = st.send(ctx, m)
			}
		})
	}
	wg.Wait()
	if begun.Load() == 0 && len(todo) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return results, nil
}

// send makes the API call for one message.
func (st *state) send(ctx context.Context, m *sdk.Message) sdk.Result {
	ctx, cancel := context.WithTimeout(ctx, st.cfg.Timeout)
	defer cancel()
	tr := &call{ctx: ctx, base: st.base, rt: st.transport}
	client := &twclient.Client{
		Credentials: twclient.NewCredentials(st.cfg.AccountSID, st.cfg.AuthToken),
		HTTPClient: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		UserAgentExtensions: []string{"cohort-twilio/" + Version},
	}
	client.SetAccountSid(st.cfg.AccountSID)
	// A RequestHandler built by hand, not with NewRequestHandler: no
	// TWILIO_EDGE or TWILIO_REGION from the environment rewrites the host.
	api := openapi.NewApiService(&twclient.RequestHandler{Client: client})

	params := (&openapi.CreateMessageParams{}).SetTo(m.To).SetBody(m.Text)
	if st.cfg.From != "" {
		params.SetFrom(st.cfg.From)
	} else {
		params.SetMessagingServiceSid(st.cfg.MessagingServiceSID)
	}
	if st.callback != "" {
		params.SetStatusCallback(st.callback + "/status?key=" + url.QueryEscape(m.Key))
	}
	msg, err := api.CreateMessage(params)
	status, header := tr.answer()
	return outcome(m.Key, msg, err, status, header, tr.written.Load())
}

// outcome turns what one API call gave into a Result: the resource or the
// error twilio-go returned, the HTTP status and headers of the answer (0 and
// nil when none came) and whether the request was written.
func outcome(key string, msg *openapi.ApiV2010Message, err error, status int, header http.Header, written bool) sdk.Result {
	r := sdk.Result{Key: key}
	if err == nil {
		if msg == nil || msg.Sid == nil || *msg.Sid == "" {
			r.Status, r.Reason = sdk.OutcomeUnknown, fmt.Sprintf("twilio answered HTTP %d without a message sid", status)
			return r
		}
		r.Status, r.ProviderID = sdk.Accepted, *msg.Sid
		return r
	}

	var re *twclient.TwilioRestError
	if errors.As(err, &re) {
		if status == 0 {
			status = re.Status
		}
		if re.Code != 0 {
			r.Code = strconv.Itoa(re.Code)
		}
		switch {
		case re.Code == 21610:
			r.Status, r.Reason = sdk.Suppress, "recipient replied STOP (21610)"
		case re.Code == 21211:
			r.Status, r.Reason = sdk.Permanent, fmt.Sprintf("twilio 21211: invalid To number: %s", re.Message)
		case status == http.StatusTooManyRequests || re.Code == 20429:
			r.Status, r.Reason = sdk.Retryable, fmt.Sprintf("twilio rate limit (HTTP %d, %d): %s", status, re.Code, re.Message)
			r.RetryAfter = retryAfter(header, time.Now(), defaultRetryAfter)
		case status >= 500:
			r.Status, r.Reason = sdk.Retryable, fmt.Sprintf("twilio HTTP %d (%d): %s", status, re.Code, re.Message)
			r.RetryAfter = retryAfter(header, time.Now(), 0)
		case status == http.StatusUnauthorized:
			r.Status, r.Reason = sdk.Permanent, fmt.Sprintf("twilio %d (HTTP 401): %s: check account_sid and auth_token", re.Code, re.Message)
		default:
			r.Status, r.Reason = sdk.Permanent, fmt.Sprintf("twilio %d (HTTP %d): %s", re.Code, status, re.Message)
		}
		return r
	}

	switch {
	case status == http.StatusTooManyRequests:
		r.Status, r.Reason = sdk.Retryable, fmt.Sprintf("twilio rate limit (HTTP 429): %v", err)
		r.RetryAfter = retryAfter(header, time.Now(), defaultRetryAfter)
	case status >= 500:
		r.Status, r.Reason = sdk.Retryable, fmt.Sprintf("twilio HTTP %d: %v", status, err)
		r.RetryAfter = retryAfter(header, time.Now(), 0)
	case status >= 400:
		r.Status, r.Reason = sdk.Permanent, fmt.Sprintf("twilio HTTP %d: %v", status, err)
	case status != 0 || written:
		// An answer that could not be read, or none after the request went
		// out: Twilio may have the message.
		r.Status, r.Reason = sdk.OutcomeUnknown, fmt.Sprintf("no usable answer from twilio after the request was sent: %v", err)
	default:
		r.Status, r.Reason = sdk.Retryable, fmt.Sprintf("request not sent to twilio: %v", err)
	}
	return r
}

// retryAfter reads a Retry-After header (seconds or an HTTP date), or
// returns def.
func retryAfter(h http.Header, now time.Time, def time.Duration) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return def
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return def
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d.Round(time.Second)
		}
		return 0
	}
	return def
}
