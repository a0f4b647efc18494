package main

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/cohortd/cohort/plugins/twilio/internal/hookbridge"
	"github.com/cohortd/cohort/plugins/twilio/twilioserver"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// Made-up credentials and numbers in Twilio's shapes.
const (
	account = "AC00000000000000000000000000000001"
	token   = "0123456789abcdef0123456789abcdef"
	sender  = "+15555550199"
	pkg     = "github.com/cohortd/cohort/plugins/twilio"
)

func config(srv *twilioserver.Server, extra string) string {
	return fmt.Sprintf("account_sid: %s\nauth_token: %s\nfrom: %q\nbase_url: %s\n%s", account, token, sender, srv.URL(), extra)
}

// TestBinaryConformance runs the channel suite against the built plugin,
// launched as the daemon launches it, sending to a local Twilio.
func TestBinaryConformance(t *testing.T) {
	srv := twilioserver.New(account, token)
	t.Cleanup(srv.Close)
	target := "https://cohort.example.com/webhooks/conformance/status?key=conformance-1"
	form := url.Values{"AccountSid": {account}, "MessageSid": {"SM00000000000000000000000000000001"}, "MessageStatus": {"delivered"}, "To": {"+15555550101"}}
	sdktest.RunChannelBinary(t, sdktest.BuildPlugin(t, pkg), sdktest.ChannelCase{
		Config: []byte(config(srv, "")),
		BadConfigs: [][]byte{
			[]byte(""),
			[]byte("account_sid: " + account + "\nauth_token: " + token + "\n"),
			[]byte("account_sid: " + account + "\nauth_token: " + token + "\nfrom: \"+15555550199\"\ntimeout: forever\n"),
		},
		Webhook: &sdk.WebhookRequest{
			Method:  "POST",
			URL:     target,
			Path:    "/status",
			Headers: []sdk.Header{{Name: twilioserver.SignatureHeader, Values: []string{twilioserver.Signature(token, target, form)}}},
			Body:    []byte(form.Encode()),
		},
	})
	if n := len(srv.Messages()); n < 7 {
		t.Errorf("local Twilio holds %d messages, want at least the suite's 7", n)
	}
}

// TestBinaryOutcomes checks, through a real plugin process, every kind of
// outcome, the status callback that resolves a lost answer, and an inbound
// STOP.
func TestBinaryOutcomes(t *testing.T) {
	srv := twilioserver.New(account, token)
	t.Cleanup(srv.Close)
	ch := sdktest.LaunchChannel(t, sdktest.BuildPlugin(t, pkg))
	wh, ok := ch.(sdk.ChannelWebhooker)
	if !ok {
		t.Fatalf("%T has no webhooks", ch)
	}
	hooks := hookbridge.Start(t, wh, "sms")
	srv.SetInboundURL(hooks.URL + hooks.Path + "/inbound")
	// parallel 1: the injected faults meet the messages in order.
	if _, err := ch.Configure(t.Context(), hooks.ConfigureRequest(config(srv, "parallel: 1\n"))); err != nil {
		t.Fatal(err)
	}
	srv.Stop("+15555550103")
	srv.InjectFaults(twilioserver.FaultDrop, twilioserver.FaultRateLimit)
	msgs := []sdk.Message{
		{Key: "lost", To: "+15555550101", Text: "one"},
		{Key: "limited", To: "+15555550105", Text: "two"},
		{Key: "ok", To: "+15555550102", Text: "three"},
		{Key: "stopped", To: "+15555550103", Text: "four"},
		{Key: "bad", To: "555-0104", Text: "five"},
	}
	results, err := ch.Send(t.Context(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]sdk.Result{}
	for _, r := range results {
		got[r.Key] = r
	}
	for key, want := range map[string]sdk.ResultStatus{
		"lost": sdk.OutcomeUnknown, "limited": sdk.Retryable, "ok": sdk.Accepted, "stopped": sdk.Suppress, "bad": sdk.Permanent,
	} {
		if got[key].Status != want {
			t.Errorf("%s: %+v, want %v", key, got[key], want)
		}
	}
	if got["stopped"].Reason != "recipient replied STOP (21610)" || got["limited"].RetryAfter <= 0 {
		t.Errorf("stopped %+v limited %+v", got["stopped"], got["limited"])
	}

	// The lost message did reach Twilio, once; its status callback names
	// the row, which resolves the unknown.
	var lost []twilioserver.Message
	for _, m := range srv.Messages() {
		if m.To == "+15555550101" {
			lost = append(lost, m)
		}
	}
	if len(lost) != 1 {
		t.Fatalf("Twilio holds %d copies of the lost message, want 1", len(lost))
	}
	if reply, err := srv.SendStatus(t.Context(), lost[0].SID, "delivered", 0); err != nil || reply.Status != http.StatusNoContent {
		t.Fatalf("status callback: %v %+v", err, reply)
	}
	if reply, err := srv.SendInbound(t.Context(), "+15555550102", sender, "Stop"); err != nil || reply.Status != http.StatusOK {
		t.Fatalf("inbound STOP: %v %+v", err, reply)
	}
	evs := hooks.Events()
	if len(evs) != 2 {
		t.Fatalf("events %+v, want 2", evs)
	}
	if e := evs[0]; e.Key != "lost" || e.ProviderID != lost[0].SID || e.Type != sdk.DeliveryDelivered {
		t.Errorf("status event %+v, want delivered for row lost", e)
	}
	if e := evs[1]; e.Type != sdk.DeliveryUnsubscribed || e.Address != "+15555550102" {
		t.Errorf("inbound event %+v, want unsubscribe of +15555550102", e)
	}
}
