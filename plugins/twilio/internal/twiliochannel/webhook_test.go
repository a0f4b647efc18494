package twiliochannel

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	twclient "github.com/twilio/twilio-go/client"

	"github.com/cohortd/cohort/plugins/twilio/twilioserver"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

func TestStatusCallbacks(t *testing.T) {
	r := newRig(t, "")
	const key = "campaign-7/step-1/cust-42 ä&x"
	res := r.send(t, sms(key, "+15555550101", "hi"))[key]
	if res.Status != sdk.Accepted {
		t.Fatalf("send: %+v", res)
	}
	sid := res.ProviderID
	for _, st := range []struct {
		status string
		code   int
	}{{"queued", 0}, {"sent", 0}, {"delivered", 0}, {"undelivered", 30003}, {"failed", 21610}, {"failed", 0}} {
		reply, err := r.twilio.SendStatus(t.Context(), sid, st.status, st.code)
		if err != nil {
			t.Fatal(err)
		}
		if reply.Status != http.StatusNoContent {
			t.Fatalf("%s: answered %d %s", st.status, reply.Status, reply.Body)
		}
	}
	ev := func(typ sdk.DeliveryType, status, reason string) sdk.DeliveryEvent {
		return sdk.DeliveryEvent{Key: key, ProviderID: sid, Type: typ, Address: "+15555550101", Time: fixedNow, Reason: reason, EventID: sid + ":" + status}
	}
	unsub := ev(sdk.DeliveryUnsubscribed, "failed", "recipient replied STOP (21610)")
	unsub.EventID += ":unsubscribed"
	wantEvents := []sdk.DeliveryEvent{
		ev(sdk.DeliveryAccepted, "sent", ""),
		ev(sdk.DeliveryDelivered, "delivered", ""),
		ev(sdk.DeliveryFailed, "undelivered", "30003"),
		ev(sdk.DeliveryFailed, "failed", "21610"),
		unsub,
		ev(sdk.DeliveryFailed, "failed", "failed"),
	}
	if diff := cmp.Diff(wantEvents, r.hooks.Events()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestForgedWebhooksRefused(t *testing.T) {
	r := newRig(t, "")
	res := r.send(t, sms("row-1", "+15555550101", "hi"))["row-1"]
	m, _ := r.twilio.Message(res.ProviderID)
	form := url.Values{"AccountSid": {testAccount}, "MessageSid": {m.SID}, "MessageStatus": {"delivered"}, "To": {m.To}}
	inbound := r.hooks.URL + r.hooks.Path + "/inbound"
	stop := url.Values{"AccountSid": {testAccount}, "From": {"+15555550101"}, "Body": {"STOP"}, "MessageSid": {"SM00000000000000000000000000000009"}}

	// The correct signature passes twilio-go's validator, the one the
	// plugin uses, and the plugin accepts it.
	good := twilioserver.Signature(testToken, m.StatusCallback, form)
	v := twclient.NewRequestValidator(testToken)
	if !v.ValidateBody(m.StatusCallback, []byte(form.Encode()), good) {
		t.Fatal("twilio-go's validator refuses the stand-in's signature")
	}

	tampered := url.Values{}
	for k, vs := range form {
		tampered[k] = vs
	}
	tampered.Set("MessageStatus", "failed")
	tests := []struct {
		name   string
		target string
		form   url.Values
		sig    string
	}{
		{"no signature", m.StatusCallback, form, ""},
		{"garbage", m.StatusCallback, form, "AAAAAAAAAAAAAAAAAAAAAAAAAAA="},
		{"other token", m.StatusCallback, form, twilioserver.Signature("ffffffffffffffffffffffffffffffff", m.StatusCallback, form)},
		{"tampered body", m.StatusCallback, tampered, good},
		{"other key in URL", r.hooks.URL + r.hooks.Path + "/status?key=row-2", form, good},
		{"forged STOP", inbound, stop, twilioserver.Signature("ffffffffffffffffffffffffffffffff", inbound, stop)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply, err := r.twilio.PostWithSignature(t.Context(), tt.target, tt.form, tt.sig)
			if err != nil {
				t.Fatal(err)
			}
			if reply.Status != http.StatusForbidden {
				t.Errorf("answered %d, want 403", reply.Status)
			}
		})
	}
	if evs := r.hooks.Events(); len(evs) != 0 {
		t.Fatalf("forged webhooks produced events: %+v", evs)
	}

	// Signed correctly but for another account.
	other := url.Values{"AccountSid": {"AC00000000000000000000000000000002"}, "MessageSid": {m.SID}, "MessageStatus": {"delivered"}}
	if reply, err := r.twilio.PostSigned(t.Context(), m.StatusCallback, other); err != nil || reply.Status != http.StatusForbidden {
		t.Errorf("other account: %v %+v, want 403", err, reply)
	}

	reply, err := r.twilio.PostWithSignature(t.Context(), m.StatusCallback, form, good)
	if err != nil || reply.Status != http.StatusNoContent {
		t.Fatalf("genuine callback: %v %+v", err, reply)
	}
	if evs := r.hooks.Events(); len(evs) != 1 || evs[0].Type != sdk.DeliveryDelivered || evs[0].Key != "row-1" {
		t.Errorf("events %+v, want one delivered for row-1", evs)
	}
}

func TestInboundKeywords(t *testing.T) {
	tests := []struct {
		body  string
		unsub bool
	}{
		{"STOP", true}, {" stop\n", true}, {"StopAll", true}, {"unsubscribe", true}, {"CANCEL", true},
		{"end", true}, {"Quit", true}, {"START", false}, {"yes", false}, {"UNSTOP", false},
		{"hello", false}, {"stop sending me these", false}, {"", false},
	}
	r := newRig(t, "")
	for i, tt := range tests {
		before := len(r.hooks.Events())
		from := "+1555555020" + string(rune('0'+i%10))
		reply, err := r.twilio.SendInbound(t.Context(), from, testSender, tt.body)
		if err != nil {
			t.Fatal(err)
		}
		if reply.Status != http.StatusOK || reply.Header.Get("Content-Type") != "text/xml" || !strings.Contains(string(reply.Body), "<Response/>") {
			t.Errorf("%q: answered %d %q %s, want 200 text/xml empty TwiML", tt.body, reply.Status, reply.Header.Get("Content-Type"), reply.Body)
		}
		evs := r.hooks.Events()[before:]
		if !tt.unsub {
			if len(evs) != 0 {
				t.Errorf("%q: events %+v, want none", tt.body, evs)
			}
			continue
		}
		if len(evs) != 1 {
			t.Fatalf("%q: %d events, want 1", tt.body, len(evs))
		}
		e := evs[0]
		if e.Type != sdk.DeliveryUnsubscribed || e.Address != from || !strings.HasPrefix(e.EventID, "inbound:SM") ||
			e.Reason != "recipient replied "+strings.ToUpper(strings.TrimSpace(tt.body)) {
			t.Errorf("%q: event %+v", tt.body, e)
		}
	}
}

// TestStopThenSend is the whole loop: the recipient replies STOP, the
// plugin reports the unsubscribe, and Twilio's own block makes a later
// send come back as suppress.
func TestStopThenSend(t *testing.T) {
	r := newRig(t, "")
	if _, err := r.twilio.SendInbound(t.Context(), "+15555550101", testSender, "STOP"); err != nil {
		t.Fatal(err)
	}
	if evs := r.hooks.Events(); len(evs) != 1 || evs[0].Type != sdk.DeliveryUnsubscribed || evs[0].Address != "+15555550101" {
		t.Fatalf("events %+v, want one unsubscribe of +15555550101", evs)
	}
	if res := r.send(t, sms("row-1", "+15555550101", "hi"))["row-1"]; res.Status != sdk.Suppress {
		t.Errorf("send after STOP: %+v, want suppress", res)
	}
}

func TestWebhookRouting(t *testing.T) {
	r := newRig(t, "")
	tests := []struct {
		method, path string
		status       int
	}{
		{"POST", "/other", http.StatusNotFound},
		{"POST", "/", http.StatusNotFound},
		{"GET", "/status", http.StatusMethodNotAllowed},
		{"POST", "/status", http.StatusForbidden},
	}
	for _, tt := range tests {
		resp, err := r.ch.Webhook(t.Context(), &sdk.WebhookRequest{Method: tt.method, Path: tt.path, URL: r.hooks.URL + r.hooks.Path + tt.path})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Response.Status != tt.status || len(resp.Events) != 0 {
			t.Errorf("%s %s: %d %v, want %d and no events", tt.method, tt.path, resp.Response.Status, resp.Events, tt.status)
		}
	}
	// Signed, but not a status callback.
	target := r.hooks.URL + r.hooks.Path + "/status?key=k"
	reply, err := r.twilio.PostSigned(t.Context(), target, url.Values{"To": {"+15555550101"}})
	if err != nil || reply.Status != http.StatusBadRequest {
		t.Errorf("status callback without MessageSid: %v %+v, want 400", err, reply)
	}
}

// signedStatus is a delivered status callback as the daemon would pass it
// on, signed for the conformance suite's public URL.
func signedStatus(token string) *sdk.WebhookRequest {
	target := "https://cohort.example.com/webhooks/conformance/status?key=conformance-1"
	form := url.Values{
		"AccountSid": {testAccount}, "MessageSid": {"SM00000000000000000000000000000001"},
		"MessageStatus": {"delivered"}, "To": {"+15555550101"}, "From": {testSender},
	}
	return &sdk.WebhookRequest{
		Method: "POST",
		URL:    target,
		Path:   "/status",
		Headers: []sdk.Header{
			{Name: "Content-Type", Values: []string{"application/x-www-form-urlencoded"}},
			{Name: twilioserver.SignatureHeader, Values: []string{twilioserver.Signature(token, target, form)}},
		},
		Body: []byte(form.Encode()),
	}
}

// BadConfigs for the conformance suites.
var BadConfigs = [][]byte{
	[]byte(""),
	[]byte("account_sid: AC00000000000000000000000000000001\nauth_token: x\n"),
	[]byte("account_sid: AC00000000000000000000000000000001\nauth_token: x\nfrom: \"+15555550199\"\nparallel: -1\n"),
	[]byte("acount_sid: AC00000000000000000000000000000001\n"),
}

func TestConformance(t *testing.T) {
	srv := twilioserver.New(testAccount, testToken)
	t.Cleanup(srv.Close)
	sdktest.RunChannel(t, newChannel(t), sdktest.ChannelCase{
		Config:     []byte(configFor(srv, "from: \""+testSender+"\"\n")),
		BadConfigs: BadConfigs,
		Webhook:    signedStatus(testToken),
	})
	// Three default messages and four concurrent ones, each once; the suite
	// sends conformance-1 again under a 1ms deadline, which may or may not
	// reach the server first.
	seen := map[string]int{}
	for _, m := range srv.Messages() {
		key := m.StatusCallback[strings.Index(m.StatusCallback, "key=")+4:]
		seen[key]++
		if !strings.HasPrefix(m.StatusCallback, "https://cohort.example.com/webhooks/conformance/status?key=") {
			t.Errorf("callback %s", m.StatusCallback)
		}
	}
	for key, n := range seen {
		if n > 1 && !(key == "conformance-1" && n == 2) {
			t.Errorf("%s sent %d times", key, n)
		}
	}
	if len(seen) != 7 {
		t.Errorf("server holds %d distinct messages, want 7: %v", len(seen), seen)
	}
}
