// Package sendgridchannel is the SendGrid channel: it sends each message as
// one v3 Mail Send request with sendgrid-go, and turns SendGrid's signed
// Event Webhook posts into delivery events.
//
// Config keys:
//
//	api_key: ${SENDGRID_API_KEY}    # required; a key with Mail Send permission; never logged
//	base_url: https://api.sendgrid.com  # default; https://api.eu.sendgrid.com for EU
//	                                # residency, or a local stand-in in tests
//	categories: [newsletter]        # optional; the campaign name is added when
//	                                # there is room (SendGrid allows 10 in all)
//	asm_group_id: 12345             # optional unsubscribe group
//	sandbox: false                  # true: SendGrid validates but delivers nothing
//	parallel: 8                     # requests in flight within one Send (1..256)
//	timeout: 10s                    # per request
//	webhook_public_key: MFkw...     # optional; SendGrid's Event Webhook
//	                                # verification key (base64). Without it
//	                                # every webhook post is answered 403.
//	webhook_max_age: 24h            # oldest signature timestamp accepted
//
// Each message becomes one request (bodies differ per recipient) whose
// personalization carries custom_args cohort_key (Message.Key), and
// cohort_campaign / cohort_variant from Message.Metadata "campaign" and
// "variant", so events can be matched to the outbox row even when the
// response was lost.
//
// Outcomes: 2xx is accepted, with X-Message-Id as the provider id; 400 and
// 413 are permanent; 401/403 (a wrong or revoked key), 404/405 and
// redirects (a wrong base_url) are retryable after 5 minutes, so a fixed
// config resumes sending; 429 is retryable after X-RateLimit-Reset (1s when
// absent); 5xx after Retry-After (the host's backoff when absent). A
// transport error before the request was fully written is retryable; one
// after it (a timeout, a connection lost while waiting for the answer) is
// OutcomeUnknown: SendGrid may have the message, and the host must not send
// it again blindly.
//
// webhook_max_age defaults to 24 hours because SendGrid retries a post it
// could not deliver for up to 24 hours; a replay inside the window is
// harmless because the daemon deduplicates events by id (sg_event_id). A
// timestamp more than 5 minutes in the future is refused too.
package sendgridchannel

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sendgrid/rest"

	"github.com/cohortd/cohort/sdk"
)

// Version is the plugin's version, reported in ChannelInfo.
const Version = "0.1.0"

// MaxBatch is the most messages the host should pass to one Send.
const MaxBatch = 100

// Channel is the SendGrid channel. Configure it before Send.
type Channel struct {
	log *slog.Logger
	now func() time.Time
	// wrote, if set, is called when a message's request has been written
	// in full (tests wait on it).
	wrote func(key string)

	mu sync.RWMutex
	st *state // nil until configured
}

// state is what one Configure set up; Send and Webhook use a snapshot.
type state struct {
	cfg    *settings
	client *rest.Client
	// request is the Mail Send request without its body; its header map
	// is shared, read only, by every request.
	request rest.Request
}

var (
	_ sdk.Channel          = (*Channel)(nil)
	_ sdk.ChannelWebhooker = (*Channel)(nil)
)

// New returns an unconfigured SendGrid channel that logs with sdk.Logger.
func New() *Channel {
	return NewWithLogger(sdk.Logger())
}

// NewWithLogger returns an unconfigured SendGrid channel that logs to log.
func NewWithLogger(log *slog.Logger) *Channel {
	return &Channel{log: log, now: time.Now}
}

// Configure checks the config and prepares the HTTP client. It makes no
// network call. A second Configure replaces the first for the calls that
// start after it.
func (c *Channel) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	cfg, err := parseConfig(req.Config)
	if err != nil {
		return sdk.ChannelInfo{}, err
	}
	st := &state{cfg: cfg, client: &rest.Client{HTTPClient: NewHTTPClient(cfg.Parallel, cfg.Timeout)},
		request: NewRequest(cfg.APIKey, cfg.BaseURL, nil)}

	c.mu.Lock()
	old := c.st
	c.st = st
	c.mu.Unlock()
	if old != nil {
		old.client.HTTPClient.CloseIdleConnections()
	}

	c.log.Info("sendgrid channel configured",
		"instance", req.Instance, "base_url", cfg.BaseURL, "sandbox", cfg.Sandbox,
		"parallel", cfg.Parallel, "timeout", cfg.Timeout.String(), "webhook_verification", cfg.webhookKey != nil)
	if cfg.webhookKey == nil {
		c.log.Warn("webhook_public_key is not set: SendGrid Event Webhook posts will be refused with 403; "+
			"enable Signed Event Webhook in SendGrid and copy its verification key into webhook_public_key",
			"instance", req.Instance, "webhook_url", req.PublicURL+req.WebhookPath)
	}
	if cfg.Sandbox {
		c.log.Warn("sandbox is on: SendGrid validates messages but delivers none", "instance", req.Instance)
	}
	return sdk.ChannelInfo{
		Name:     "sendgrid",
		Version:  Version,
		Kind:     "email",
		MaxBatch: MaxBatch,
	}, nil
}

func (c *Channel) state() (*state, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.st == nil {
		return nil, sdk.Errorf(sdk.Internal, "", "sendgrid channel: called before Configure")
	}
	return c.st, nil
}

// NewHTTPClient returns the HTTP client the channel gives sendgrid-go:
// syncTransport (HTTP/1.1 keep-alive in the calling goroutine, enough
// idle connections for parallel requests, no retries), a timeout per
// request, and no redirects (a redirect means a wrong base_url, reported
// as such).
//
// The timeout is enforced by the transport, from the dial to the end of
// the response body, and http.Client.Timeout is left zero: for a
// RoundTripper it does not know, net/http enforces Client.Timeout with a
// goroutine and a timer per request.
func NewHTTPClient(parallel int, timeout time.Duration) *http.Client {
	return &http.Client{
		Transport:     newSyncTransport(transportConfig{Parallel: parallel, Timeout: timeout}),
		CheckRedirect: noRedirects,
	}
}

// NewStockHTTPClient returns the client a user of sendgrid-go would
// configure on net/http alone: a clone of http.DefaultTransport with
// enough idle connections for parallel requests, Client.Timeout, and no
// redirects. sgbench's baseline uses it.
func NewStockHTTPClient(parallel int, timeout time.Duration) *http.Client {
	return &http.Client{
		Transport:     stockTransport(parallel),
		Timeout:       timeout,
		CheckRedirect: noRedirects,
	}
}

// stockTransport returns a clone of http.DefaultTransport with idle
// connections for parallel requests in flight per Send: the transport of
// NewStockHTTPClient, and syncTransport's fallback.
func stockTransport(parallel int) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = max(parallel*4, 64)
	tr.MaxIdleConnsPerHost = maxIdlePerHost(parallel)
	return tr
}

// maxIdlePerHost is the idle connections per host kept for parallel
// requests in flight per Send; the host may run several Sends at once.
func maxIdlePerHost(parallel int) int { return max(parallel*4, 16) }

// noRedirects makes http.Client return a redirect as the response.
func noRedirects(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}

// Send sends each message as its own request, at most parallel at once,
// and returns one result per message. If ctx ends before any request was
// written, it returns ctx's error; otherwise messages not yet sent are
// retryable and those in flight are OutcomeUnknown.
func (c *Channel) Send(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	st, err := c.state()
	if err != nil {
		return nil, err
	}
	opts := BodyOptions{Categories: st.cfg.Categories, Sandbox: st.cfg.Sandbox}
	if st.cfg.ASMGroupID != nil {
		opts.ASMGroupID = *st.cfg.ASMGroupID
	}

	// parallel workers take the messages in order; once ctx has ended, the
	// messages not yet started are not sent.
	results := make([]sdk.Result, len(msgs))
	reached := make([]bool, len(msgs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(st.cfg.Parallel, len(msgs)) {
		wg.Go(func() {
			w := &bodyWriter{opts: opts}
			for {
				i := int(next.Add(1)) - 1
				if i >= len(msgs) {
					return
				}
				if err := ctx.Err(); err != nil {
					results[i] = sdk.Result{Key: msgs[i].Key, Status: sdk.Retryable,
						Reason: fmt.Sprintf("not sent: %v", err), Code: "not_sent"}
					continue
				}
				results[i], reached[i] = c.sendOne(ctx, st, w, &msgs[i])
			}
		})
	}
	wg.Wait()

	if err := ctx.Err(); err != nil && !slices.Contains(reached, true) {
		return nil, err
	}
	return results, nil
}
