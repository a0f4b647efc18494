package sendgridchannel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sendgrid/sendgrid-go/helpers/eventwebhook"

	"github.com/cohortd/cohort/sdk"
)

// maxFutureSkew is how far ahead of this clock a signature timestamp may be.
const maxFutureSkew = 5 * time.Minute

// deliveryTypes maps SendGrid event names to delivery types. Other events
// (group_resubscribe, anything new) are skipped.
var deliveryTypes = map[string]sdk.DeliveryType{
	"processed":         sdk.DeliveryAccepted,
	"delivered":         sdk.DeliveryDelivered,
	"deferred":          sdk.DeliveryDeferred,
	"bounce":            sdk.DeliveryBounced,
	"dropped":           sdk.DeliveryDropped,
	"open":              sdk.DeliveryOpened,
	"click":             sdk.DeliveryClicked,
	"spamreport":        sdk.DeliverySpamReport,
	"unsubscribe":       sdk.DeliveryUnsubscribed,
	"group_unsubscribe": sdk.DeliveryUnsubscribed,
}

// Webhook verifies a SendGrid Event Webhook post and returns its events.
// It answers 403 when webhook_public_key is not set, when the signature is
// missing or does not match, or when the timestamp is older than
// webhook_max_age (or too far ahead); 400 when the body is not a JSON array
// of events; 200 otherwise. Unknown event types, and events that carry
// neither a cohort_key nor an sg_message_id, are skipped.
func (c *Channel) Webhook(_ context.Context, req *sdk.WebhookRequest) (*sdk.ChannelWebhookResponse, error) {
	st, err := c.state()
	if err != nil {
		return nil, err
	}
	if req.Method != http.MethodPost {
		return answer(http.StatusMethodNotAllowed, "SendGrid's Event Webhook posts: use POST\n",
			sdk.Header{Name: "Allow", Values: []string{http.MethodPost}}), nil
	}
	if st.cfg.webhookKey == nil {
		c.log.Warn("refused a SendGrid webhook post: webhook_public_key is not set, so its signature cannot be checked; "+
			"enable Signed Event Webhook in SendGrid and copy its verification key into webhook_public_key",
			"path", req.Path, "remote_addr", req.RemoteAddr)
		return answer(http.StatusForbidden, "event webhook verification is not configured\n"), nil
	}
	if reason := c.verify(st.cfg, req); reason != "" {
		c.log.Warn("refused a SendGrid webhook post: "+reason, "path", req.Path, "remote_addr", req.RemoteAddr)
		return answer(http.StatusForbidden, reason+"\n"), nil
	}

	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(req.Body, &raw); err != nil {
		c.log.Warn("a signed SendGrid webhook post is not a JSON array of events", "error", err)
		return answer(http.StatusBadRequest, "body is not a JSON array of events\n"), nil
	}
	events := make([]sdk.DeliveryEvent, 0, len(raw))
	skipped := 0
	for _, fields := range raw {
		e, ok := toDelivery(fields)
		if !ok {
			skipped++
			continue
		}
		events = append(events, e)
	}
	c.log.Debug("sendgrid webhook", "events", len(events), "skipped", skipped)
	return &sdk.ChannelWebhookResponse{Response: sdk.HTTPResponse{Status: http.StatusOK}, Events: events}, nil
}

// verify checks the signature and timestamp of a post with sendgrid-go's
// eventwebhook helpers. It returns why the post is refused, or "".
func (c *Channel) verify(cfg *settings, req *sdk.WebhookRequest) string {
	sig := strings.TrimSpace(req.Header(eventwebhook.VerificationHTTPHeader))
	ts := strings.TrimSpace(req.Header(eventwebhook.TimestampHTTPHeader))
	if sig == "" || ts == "" {
		return fmt.Sprintf("missing %s or %s header: enable Signed Event Webhook in SendGrid",
			eventwebhook.VerificationHTTPHeader, eventwebhook.TimestampHTTPHeader)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Sprintf("%s %q is not a Unix time", eventwebhook.TimestampHTTPHeader, ts)
	}
	now := c.now()
	at := time.Unix(secs, 0)
	if age := now.Sub(at); age > cfg.WebhookMaxAge {
		return fmt.Sprintf("signature timestamp %s is %v old, more than webhook_max_age %v",
			at.UTC().Format(time.RFC3339), age.Round(time.Second), cfg.WebhookMaxAge)
	}
	if ahead := at.Sub(now); ahead > maxFutureSkew {
		return fmt.Sprintf("signature timestamp %s is %v in the future: check this machine's clock",
			at.UTC().Format(time.RFC3339), ahead.Round(time.Second))
	}
	ok, err := eventwebhook.VerifySignature(cfg.webhookKey, req.Body, sig, ts)
	if err != nil || !ok {
		return "signature does not match the body: check webhook_public_key against SendGrid's Event Webhook verification key"
	}
	return ""
}

func answer(status int, body string, headers ...sdk.Header) *sdk.ChannelWebhookResponse {
	headers = append(headers, sdk.Header{Name: "Content-Type", Values: []string{"text/plain; charset=utf-8"}})
	return &sdk.ChannelWebhookResponse{Response: sdk.HTTPResponse{Status: status, Headers: headers, Body: []byte(body)}}
}

// toDelivery maps one SendGrid event. ok is false for an event to skip.
func toDelivery(f map[string]json.RawMessage) (sdk.DeliveryEvent, bool) {
	typ, ok := deliveryTypes[str(f["event"])]
	if !ok {
		return sdk.DeliveryEvent{}, false
	}
	e := sdk.DeliveryEvent{
		Key:     str(f["cohort_key"]),
		Type:    typ,
		Address: str(f["email"]),
		EventID: str(f["sg_event_id"]),
		URL:     str(f["url"]),
	}
	e.ProviderID, _, _ = strings.Cut(str(f["sg_message_id"]), ".")
	if e.Key == "" && e.ProviderID == "" {
		return sdk.DeliveryEvent{}, false
	}
	if ts, err := strconv.ParseFloat(string(f["timestamp"]), 64); err == nil && ts > 0 {
		e.Time = time.Unix(int64(ts), 0).UTC()
	}
	switch typ {
	case sdk.DeliveryBounced:
		e.Reason = withStatus(str(f["reason"]), str(f["status"]))
		if str(f["type"]) == "blocked" {
			e.Reason = "blocked: " + e.Reason
		}
	case sdk.DeliveryDropped:
		e.Reason = str(f["reason"])
	case sdk.DeliveryDeferred:
		e.Reason = withStatus(str(f["response"]), str(f["status"]))
	}
	if e.EventID == "" {
		// Without sg_event_id the event's own bytes identify it, so a
		// repeated post still deduplicates.
		canon, _ := json.Marshal(f)
		sum := sha256.Sum256(canon)
		e.EventID = "sha256:" + hex.EncodeToString(sum[:16])
	}
	return e, true
}

// str returns a JSON string's value, or "" for anything else.
func str(raw json.RawMessage) string {
	if len(raw) == 0 || raw[0] != '"' {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// withStatus appends the SMTP status to a reason that does not contain it.
func withStatus(reason, status string) string {
	switch {
	case status == "" || strings.Contains(reason, status):
		return reason
	case reason == "":
		return "status " + status
	}
	return reason + " (status " + status + ")"
}
