package sendgridchannel

import (
	"bytes"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/sdk"
)

// webhookRequest turns a signed body and its headers into what the daemon
// passes to the plugin.
func webhookRequest(body []byte, h http.Header) *sdk.WebhookRequest {
	req := &sdk.WebhookRequest{
		Method: http.MethodPost,
		URL:    "https://cohort.example.com/webhooks/sg/events",
		Path:   "/events",
		Body:   body,
	}
	for name, values := range h {
		req.Headers = append(req.Headers, sdk.Header{Name: name, Values: values})
	}
	return req
}

func webhook(t *testing.T, c *Channel, req *sdk.WebhookRequest) *sdk.ChannelWebhookResponse {
	t.Helper()
	resp, err := c.Webhook(t.Context(), req)
	require.NoError(t, err)
	return resp
}

func TestWebhookMapsEvents(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	c, _ := channelFor(t, s, "")
	at := fixedNow.Add(-time.Minute)
	base := func(event, key string) sgserver.Event {
		return sgserver.Event{
			Email: "ada@example.com", Timestamp: at.Unix(), Event: event,
			SGEventID:   "ev-" + event,
			SGMessageID: "MSGID123.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-0.0",
			CustomArgs:  map[string]string{"cohort_key": key, "cohort_campaign": "spring"},
		}
	}
	bounce := base("bounce", "k")
	bounce.Type, bounce.Reason, bounce.Status = "bounce", "550 5.1.1 no such user", "5.1.1"
	blocked := base("bounce", "k")
	blocked.SGEventID, blocked.Type, blocked.Reason, blocked.Status = "ev-blocked", "blocked", "554 denied by policy", "5.7.1"
	deferred := base("deferred", "k")
	deferred.Response, deferred.Attempt = "421 try later", "1"
	dropped := base("dropped", "k")
	dropped.Reason = "Bounced Address"
	click := base("click", "k")
	click.URL = "https://example.com/offer?a=1&b=2"
	returnPath := base("bounce", "") // a Return-Path bounce carries no custom_args
	returnPath.SGEventID, returnPath.CustomArgs, returnPath.Reason = "ev-rp", nil, "mailbox full"
	unknown := base("group_resubscribe", "k")
	noIDs := base("delivered", "")
	noIDs.SGMessageID = ""

	events := []sgserver.Event{
		base("processed", "k"), base("delivered", "k"), deferred, bounce, blocked, dropped,
		base("open", "k"), click, base("spamreport", "k"), base("unsubscribe", "k"),
		base("group_unsubscribe", "k"), returnPath, unknown, noIDs,
	}
	body, h, err := s.SignEvents(events, fixedNow)
	require.NoError(t, err)
	resp := webhook(t, c, webhookRequest(body, h))
	require.Equal(t, http.StatusOK, resp.Response.Status, "%s", resp.Response.Body)

	want := []sdk.DeliveryEvent{
		{Type: sdk.DeliveryAccepted, EventID: "ev-processed"},
		{Type: sdk.DeliveryDelivered, EventID: "ev-delivered"},
		{Type: sdk.DeliveryDeferred, EventID: "ev-deferred", Reason: "421 try later"},
		{Type: sdk.DeliveryBounced, EventID: "ev-bounce", Reason: "550 5.1.1 no such user"},
		{Type: sdk.DeliveryBounced, EventID: "ev-blocked", Reason: "blocked: 554 denied by policy (status 5.7.1)"},
		{Type: sdk.DeliveryDropped, EventID: "ev-dropped", Reason: "Bounced Address"},
		{Type: sdk.DeliveryOpened, EventID: "ev-open"},
		{Type: sdk.DeliveryClicked, EventID: "ev-click", URL: "https://example.com/offer?a=1&b=2"},
		{Type: sdk.DeliverySpamReport, EventID: "ev-spamreport"},
		{Type: sdk.DeliveryUnsubscribed, EventID: "ev-unsubscribe"},
		{Type: sdk.DeliveryUnsubscribed, EventID: "ev-group_unsubscribe"},
		{Type: sdk.DeliveryBounced, EventID: "ev-rp", Reason: "mailbox full"},
	}
	for i := range want {
		want[i].Key = "k"
		want[i].ProviderID = "MSGID123"
		want[i].Address = "ada@example.com"
		want[i].Time = at.UTC()
	}
	want[len(want)-1].Key = ""
	assert.Equal(t, want, resp.Events)
}

func TestWebhookEventsForAcceptedMessages(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	c, _ := channelFor(t, s, "")
	var msgs []sdk.Message
	for _, a := range []string{"ada", "grace", "alan"} {
		msgs = append(msgs, msg("row-"+a, a+"@example.com"))
	}
	results, err := c.Send(t.Context(), msgs)
	require.NoError(t, err)
	ids := map[string]string{}
	for _, r := range results {
		require.Equal(t, sdk.Accepted, r.Status)
		ids[r.Key] = r.ProviderID
	}

	body, h, err := s.SignEvents(s.EventsFor(sgserver.EventOptions{Bounce: []string{"grace@example.com"}}), fixedNow)
	require.NoError(t, err)
	resp := webhook(t, c, webhookRequest(body, h))
	require.Equal(t, http.StatusOK, resp.Response.Status)
	got := map[string][]sdk.DeliveryType{}
	for _, e := range resp.Events {
		assert.Equal(t, ids[e.Key], e.ProviderID, "event %+v matches the result's provider id", e)
		got[e.Key] = append(got[e.Key], e.Type)
	}
	assert.Equal(t, map[string][]sdk.DeliveryType{
		"row-ada":   {sdk.DeliveryAccepted, sdk.DeliveryDelivered},
		"row-grace": {sdk.DeliveryAccepted, sdk.DeliveryBounced},
		"row-alan":  {sdk.DeliveryAccepted, sdk.DeliveryDelivered},
	}, got)
}

func TestWebhookRefuses(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	other := startServer(t, sgserver.Config{})
	c, _ := channelFor(t, s, "webhook_max_age: 1h\n")
	events := []sgserver.Event{{Email: "ada@example.com", Event: "delivered", Timestamp: fixedNow.Unix(),
		SGEventID: "e1", SGMessageID: "m1.x", CustomArgs: map[string]string{"cohort_key": "k"}}}

	sign := func(srv *sgserver.Server, at time.Time) ([]byte, http.Header) {
		body, h, err := srv.SignEvents(events, at)
		require.NoError(t, err)
		return body, h
	}
	tests := []struct {
		name   string
		req    func() *sdk.WebhookRequest
		status int
		body   string
	}{
		{"forged body", func() *sdk.WebhookRequest {
			body, h := sign(s, fixedNow)
			return webhookRequest(bytes.Replace(body, []byte("delivered"), []byte("bounce"), 1), h)
		}, http.StatusForbidden, "signature does not match"},
		{"signed with another key", func() *sdk.WebhookRequest {
			return webhookRequest(sign(other, fixedNow))
		}, http.StatusForbidden, "signature does not match"},
		{"timestamp changed", func() *sdk.WebhookRequest {
			body, h := sign(s, fixedNow)
			h.Set(sgserver.TimestampHeader, strconv.FormatInt(fixedNow.Unix()-1, 10))
			return webhookRequest(body, h)
		}, http.StatusForbidden, "signature does not match"},
		{"stale timestamp", func() *sdk.WebhookRequest {
			return webhookRequest(sign(s, fixedNow.Add(-61*time.Minute)))
		}, http.StatusForbidden, "more than webhook_max_age 1h0m0s"},
		{"timestamp in the future", func() *sdk.WebhookRequest {
			return webhookRequest(sign(s, fixedNow.Add(10*time.Minute)))
		}, http.StatusForbidden, "in the future"},
		{"no signature", func() *sdk.WebhookRequest {
			body, h := sign(s, fixedNow)
			h.Del(sgserver.SignatureHeader)
			return webhookRequest(body, h)
		}, http.StatusForbidden, "missing X-Twilio-Email-Event-Webhook-Signature"},
		{"garbage signature", func() *sdk.WebhookRequest {
			body, h := sign(s, fixedNow)
			h.Set(sgserver.SignatureHeader, "!!not base64!!")
			return webhookRequest(body, h)
		}, http.StatusForbidden, "signature does not match"},
		{"bad timestamp", func() *sdk.WebhookRequest {
			body, h := sign(s, fixedNow)
			h.Set(sgserver.TimestampHeader, "yesterday")
			return webhookRequest(body, h)
		}, http.StatusForbidden, "is not a Unix time"},
		{"GET", func() *sdk.WebhookRequest {
			r := webhookRequest(sign(s, fixedNow))
			r.Method = http.MethodGet
			return r
		}, http.StatusMethodNotAllowed, "use POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := webhook(t, c, tt.req())
			assert.Equal(t, tt.status, resp.Response.Status)
			assert.Contains(t, string(resp.Response.Body), tt.body)
			assert.Empty(t, resp.Events)
		})
	}

	t.Run("signed but not JSON", func(t *testing.T) {
		ts := strconv.FormatInt(fixedNow.Unix(), 10)
		body := []byte("not json")
		sig, err := s.Sign(ts, body)
		require.NoError(t, err)
		h := http.Header{}
		h.Set(sgserver.SignatureHeader, sig)
		h.Set(sgserver.TimestampHeader, ts)
		resp := webhook(t, c, webhookRequest(body, h))
		assert.Equal(t, http.StatusBadRequest, resp.Response.Status)
	})
}

func TestWebhookWithoutKeyIsRefused(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	c, logs := newChannel(t)
	configure(t, c, "api_key: SG.k\nbase_url: "+s.URL+"\n")
	body, h, err := s.SignEvents([]sgserver.Event{{Email: "ada@example.com", Event: "delivered", SGMessageID: "m.1"}}, fixedNow)
	require.NoError(t, err)
	resp := webhook(t, c, webhookRequest(body, h))
	assert.Equal(t, http.StatusForbidden, resp.Response.Status)
	assert.Contains(t, string(resp.Response.Body), "not configured")
	assert.Contains(t, logs.String(), "refused a SendGrid webhook post: webhook_public_key is not set")
}

// TestWebhookSendGridVector checks a post SendGrid itself signed (the
// sample in sendgrid-go's helpers/eventwebhook tests) is accepted.
func TestWebhookSendGridVector(t *testing.T) {
	const (
		key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
		sig = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
		ts  = "1600112502"
	)
	body := []byte(`[{"email":"hello@world.com","event":"dropped","reason":"Bounced Address","sg_event_id":"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA","sg_message_id":"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0","smtp-id":"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>","timestamp":1600112492}]` + "\r\n")
	c, _ := newChannel(t)
	c.now = func() time.Time { return time.Unix(1600112502+30, 0) }
	configure(t, c, "api_key: SG.k\nwebhook_public_key: "+key+"\n")
	h := http.Header{}
	h.Set(sgserver.SignatureHeader, sig)
	h.Set(sgserver.TimestampHeader, ts)
	resp := webhook(t, c, webhookRequest(body, h))
	require.Equal(t, http.StatusOK, resp.Response.Status, "%s", resp.Response.Body)
	assert.Equal(t, []sdk.DeliveryEvent{{
		ProviderID: "LRzXl_NHStOGhQ4kofSm_A",
		Type:       sdk.DeliveryDropped,
		Address:    "hello@world.com",
		Time:       time.Unix(1600112492, 0).UTC(),
		Reason:     "Bounced Address",
		EventID:    "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
	}}, resp.Events)

	// One byte changed: refused.
	resp = webhook(t, c, webhookRequest(bytes.Replace(body, []byte("dropped"), []byte("Dropped"), 1), h))
	assert.Equal(t, http.StatusForbidden, resp.Response.Status)
}

func TestWebhookEventWithoutID(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	c, _ := channelFor(t, s, "")
	ev := sgserver.Event{Email: "ada@example.com", Event: "open", Timestamp: fixedNow.Unix(), SGMessageID: "m.1"}
	body, h, err := s.SignEvents([]sgserver.Event{ev, ev}, fixedNow)
	require.NoError(t, err)
	resp := webhook(t, c, webhookRequest(body, h))
	require.Len(t, resp.Events, 2)
	assert.NotEmpty(t, resp.Events[0].EventID)
	assert.Equal(t, resp.Events[0].EventID, resp.Events[1].EventID, "the same event bytes get the same id")
}
