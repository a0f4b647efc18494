package main_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/plugins/sendgrid/internal/sendgridchannel"
	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

const pluginPkg = "github.com/cohortd/cohort/plugins/sendgrid"

func startServer(t *testing.T) *sgserver.Server {
	t.Helper()
	s, err := sgserver.Start(sgserver.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func config(s *sgserver.Server, extra string) []byte {
	return fmt.Appendf(nil, "api_key: %s\nbase_url: %s\nwebhook_public_key: %s\n%s",
		s.APIKey(), s.URL, s.PublicKeyBase64(), extra)
}

// signedWebhook is a genuine Event Webhook post from s.
func signedWebhook(t *testing.T, s *sgserver.Server, events []sgserver.Event) *sdk.WebhookRequest {
	t.Helper()
	body, h, err := s.SignEvents(events, time.Now())
	require.NoError(t, err)
	req := &sdk.WebhookRequest{
		Method: http.MethodPost,
		URL:    "https://cohort.example.com/webhooks/conformance/events",
		Path:   "/events",
		Body:   body,
	}
	for name, values := range h {
		req.Headers = append(req.Headers, sdk.Header{Name: name, Values: values})
	}
	return req
}

func channelCase(t *testing.T, s *sgserver.Server) sdktest.ChannelCase {
	return sdktest.ChannelCase{
		Config: config(s, "parallel: 4\n"),
		BadConfigs: [][]byte{
			nil,
			[]byte("base_url: " + s.URL + "\n"),
			[]byte("api_key: k\napi-key: k\n"),
			[]byte("api_key: k\nbase_url: ftp://example.com\n"),
			[]byte("api_key: k\nparallel: 0\n"),
			[]byte("api_key: k\nwebhook_public_key: not-a-key\n"),
		},
		Webhook: signedWebhook(t, s, []sgserver.Event{{
			Email: "ada@example.com", Timestamp: time.Now().Unix(), Event: "delivered",
			SGEventID: "conformance-event", SGMessageID: "conformanceMsg.filterdrecv-1.0",
			CustomArgs: map[string]string{"cohort_key": "conformance-1"},
		}}),
	}
}

// checkArrived checks the suite's messages reached the server.
func checkArrived(t *testing.T, s *sgserver.Server) {
	t.Helper()
	counts := s.CountByKey()
	for _, k := range []string{"conformance-1", "conformance-2", "conformance-3", "concurrent-0-1", "concurrent-3-1"} {
		assert.GreaterOrEqual(t, counts[k], 1, "message %q did not reach the server; got %v", k, counts)
	}
	for _, m := range s.Accepted() {
		if len(m.Keys()) == 1 && m.Keys()[0] == "conformance-2" {
			assert.Equal(t, "grace@example.com", m.Personalizations[0].To[0].Email)
			assert.Equal(t, "conformance", m.CustomArgsOf(0)["cohort_campaign"])
			assert.Contains(t, m.Categories, "conformance")
		}
	}
}

func TestConformance(t *testing.T) {
	s := startServer(t)
	sdktest.RunChannel(t, sendgridchannel.New(), channelCase(t, s))
	checkArrived(t, s)
}

func TestConformanceBinary(t *testing.T) {
	s := startServer(t)
	sdktest.RunChannelBinary(t, sdktest.BuildPlugin(t, pluginPkg), channelCase(t, s))
	checkArrived(t, s)
}

// TestBinaryOutcomes runs the built plugin as the daemon does and checks
// the results that matter most survive the process boundary: accepted
// with the provider id, permanent with SendGrid's reason, retryable with
// the rate limit's wait, and OutcomeUnknown for a lost response that the
// server did accept; and webhook events come back matched to keys.
func TestBinaryOutcomes(t *testing.T) {
	s := startServer(t)
	ch := sdktest.LaunchChannel(t, sdktest.BuildPlugin(t, pluginPkg))
	_, err := ch.Configure(t.Context(), sdk.ConfigureRequest{Instance: "sg", Config: config(s, "")})
	require.NoError(t, err)

	send := func(m sdk.Message) sdk.Result {
		t.Helper()
		results, err := ch.Send(t.Context(), []sdk.Message{m})
		require.NoError(t, err)
		require.Len(t, results, 1)
		return results[0]
	}
	msg := func(key, to string) sdk.Message {
		return sdk.Message{Key: key, To: to, From: "news@example.com", Subject: "Hi", Text: "Hi",
			Metadata: map[string]string{"campaign": "spring"}}
	}

	ok := send(msg("ok", "ada@example.com"))
	assert.Equal(t, sdk.Accepted, ok.Status, "%+v", ok)
	require.Len(t, s.Accepted(), 1)
	assert.Equal(t, s.Accepted()[0].MessageID, ok.ProviderID)

	bad := send(msg("bad", "ada@localhost"))
	assert.Equal(t, sdk.Permanent, bad.Status)
	assert.Equal(t, "400", bad.Code)
	assert.Contains(t, bad.Reason, "Does not contain a valid address.")

	s.SetFaults(sgserver.Faults{RateLimit: sgserver.RateLimitFault{Pick: sgserver.Pick{Every: 1}}})
	limited := send(msg("limited", "grace@example.com"))
	assert.Equal(t, sdk.Retryable, limited.Status)
	assert.Equal(t, time.Second, limited.RetryAfter)

	s.SetFaults(sgserver.Faults{Drop: sgserver.Pick{Every: 1}})
	lost := send(msg("lost", "alan@example.com"))
	assert.Equal(t, sdk.OutcomeUnknown, lost.Status, "%+v", lost)
	assert.Equal(t, 1, s.CountByKey()["lost"], "the server accepted the message whose answer was lost")

	wh, ok2 := ch.(sdk.ChannelWebhooker)
	require.True(t, ok2)
	resp, err := wh.Webhook(t.Context(), signedWebhook(t, s, s.EventsFor(sgserver.EventOptions{})))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.Response.Status)
	byKey := map[string][]sdk.DeliveryType{}
	for _, e := range resp.Events {
		byKey[e.Key] = append(byKey[e.Key], e.Type)
	}
	assert.Equal(t, map[string][]sdk.DeliveryType{
		"ok":   {sdk.DeliveryAccepted, sdk.DeliveryDelivered},
		"lost": {sdk.DeliveryAccepted, sdk.DeliveryDelivered},
	}, byKey, "the lost message's events resolve its unknown outcome")
}
