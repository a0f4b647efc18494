package twiliochannel

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/cohortd/cohort/sdk"
)

// signatureHeader is the header Twilio signs webhooks with.
const signatureHeader = "X-Twilio-Signature"

// emptyTwiML answers an inbound message without replying to it.
const emptyTwiML = `<?xml version="1.0" encoding="UTF-8"?><Response/>`

// Twilio's default opt-out and opt-in keywords.
var (
	stopWords  = map[string]bool{"STOP": true, "STOPALL": true, "UNSUBSCRIBE": true, "CANCEL": true, "END": true, "QUIT": true}
	startWords = map[string]bool{"START": true, "YES": true, "UNSTOP": true}
)

// Webhook handles Twilio's webhooks: status callbacks at /status and
// inbound messages at /inbound. Every request must carry a valid
// X-Twilio-Signature for the URL as called and the form body: 403
// otherwise, with no events.
func (c *Channel) Webhook(_ context.Context, req *sdk.WebhookRequest) (*sdk.ChannelWebhookResponse, error) {
	st, err := c.state()
	if err != nil {
		return nil, err
	}
	path, _, _ := strings.Cut(req.Path, "?")
	if path != "/status" && path != "/inbound" {
		return answer(http.StatusNotFound, "no such webhook: use <webhook path>/status or <webhook path>/inbound"), nil
	}
	if req.Method != http.MethodPost {
		resp := answer(http.StatusMethodNotAllowed, "use POST")
		resp.Response.Headers = append(resp.Response.Headers, sdk.Header{Name: "Allow", Values: []string{http.MethodPost}})
		return resp, nil
	}
	sig := req.Header(signatureHeader)
	if sig == "" || !st.validator.ValidateBody(req.URL, req.Body, sig) {
		c.log.Warn("twilio webhook refused: bad or missing X-Twilio-Signature (is auth_token right, and http.public_url the URL Twilio calls?)",
			"path", path, "remote_addr", req.RemoteAddr)
		return answer(http.StatusForbidden, "invalid X-Twilio-Signature"), nil
	}
	form, err := url.ParseQuery(string(req.Body))
	if err != nil {
		return answer(http.StatusBadRequest, "the body is not a form"), nil
	}
	if acc := form.Get("AccountSid"); acc != "" && acc != st.cfg.AccountSID {
		c.log.Warn("twilio webhook refused: signed for another account", "account_sid", acc, "path", path)
		return answer(http.StatusForbidden, "wrong AccountSid"), nil
	}
	if path == "/status" {
		return c.status(req.URL, form), nil
	}
	return c.inbound(form), nil
}

// status turns a status callback into delivery events. The row key rides in
// the callback URL's key parameter.
func (c *Channel) status(rawURL string, form url.Values) *sdk.ChannelWebhookResponse {
	var key string
	if u, err := url.Parse(rawURL); err == nil {
		key = u.Query().Get("key")
	}
	sid := first(form, "MessageSid", "SmsSid")
	status := first(form, "MessageStatus", "SmsStatus")
	if sid == "" || status == "" {
		return answer(http.StatusBadRequest, "MessageSid and MessageStatus are required")
	}
	code := form.Get("ErrorCode")
	ev := sdk.DeliveryEvent{
		Key:        key,
		ProviderID: sid,
		Address:    form.Get("To"),
		Time:       c.now().UTC(),
		EventID:    sid + ":" + status,
	}
	switch status {
	case "sent":
		ev.Type = sdk.DeliveryAccepted
	case "delivered":
		ev.Type = sdk.DeliveryDelivered
	case "undelivered", "failed":
		ev.Type, ev.Reason = sdk.DeliveryFailed, code
		if ev.Reason == "" {
			ev.Reason = status
		}
	default:
		// queued, accepted, scheduled, sending, canceled, read...: nothing
		// the host records.
		return answer(http.StatusNoContent, "")
	}
	resp := answer(http.StatusNoContent, "")
	resp.Events = append(resp.Events, ev)
	if code == "21610" {
		resp.Events = append(resp.Events, sdk.DeliveryEvent{
			Key:        key,
			ProviderID: sid,
			Type:       sdk.DeliveryUnsubscribed,
			Address:    ev.Address,
			Time:       ev.Time,
			Reason:     "recipient replied STOP (21610)",
			EventID:    ev.EventID + ":unsubscribed",
		})
	}
	return resp
}

// inbound turns an inbound STOP into an unsubscribe of the sender's number
// and answers with empty TwiML (no reply: Twilio's own opt-out reply, if
// enabled, is sent by Twilio).
func (c *Channel) inbound(form url.Values) *sdk.ChannelWebhookResponse {
	resp := &sdk.ChannelWebhookResponse{Response: sdk.HTTPResponse{
		Status:  http.StatusOK,
		Headers: []sdk.Header{{Name: "Content-Type", Values: []string{"text/xml"}}},
		Body:    []byte(emptyTwiML),
	}}
	from := form.Get("From")
	sid := first(form, "MessageSid", "SmsMessageSid", "SmsSid")
	word := strings.ToUpper(strings.TrimSpace(form.Get("Body")))
	optOut := strings.ToUpper(form.Get("OptOutType"))
	switch {
	case stopWords[word] || optOut == "STOP":
		if from == "" {
			return answer(http.StatusBadRequest, "From is required")
		}
		if word == "" || !stopWords[word] {
			word = "STOP"
		}
		ev := sdk.DeliveryEvent{
			Type:    sdk.DeliveryUnsubscribed,
			Address: from,
			Time:    c.now().UTC(),
			Reason:  "recipient replied " + word,
		}
		if sid != "" {
			ev.EventID = "inbound:" + sid
		}
		resp.Events = append(resp.Events, ev)
	case startWords[word] || optOut == "START":
		// Cohort has no resubscribe event: consent records decide whether
		// the number may be messaged again. Logged without the number.
		c.log.Info("inbound opt-in keyword ignored: a consent record is needed to message this number again",
			"keyword", word, "message_sid", sid)
	}
	return resp
}

func first(form url.Values, keys ...string) string {
	for _, k := range keys {
		if v := form.Get(k); v != "" {
			return v
		}
	}
	return ""
}

func answer(status int, text string) *sdk.ChannelWebhookResponse {
	resp := &sdk.ChannelWebhookResponse{Response: sdk.HTTPResponse{Status: status}}
	if text != "" {
		resp.Response.Headers = []sdk.Header{{Name: "Content-Type", Values: []string{"text/plain; charset=utf-8"}}}
		resp.Response.Body = []byte(text + "\n")
	}
	return resp
}
