package main_test

import (
	"encoding/base64"
	"testing"

	"github.com/cohortd/cohort/plugins/track/internal/tracksource"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

const pluginPkg = "github.com/cohortd/cohort/plugins/track"

const conformanceKey = "conformance-key-0123456789abcdef"

const conformanceConfig = `
write_keys: ["conformance-key-0123456789abcdef"]
traits:
  email: string
  first_name: {type: string, from: firstName}
  plan: string
  ltv: number
  vip: bool
  signed_up_at: {type: time, from: createdAt}
  tags: list
events: [Order Completed]
`

// signedBatch is a /v1/batch request as analytics SDKs send it: HTTP Basic
// with the write key as the user name and an empty password.
func signedBatch() *sdk.WebhookRequest {
	return &sdk.WebhookRequest{
		Method: "POST",
		URL:    "https://cohort.example.com/webhooks/conformance/v1/batch",
		Path:   "/v1/batch",
		Headers: []sdk.Header{
			{Name: "Content-Type", Values: []string{"application/json"}},
			{Name: "Authorization", Values: []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(conformanceKey+":"))}},
		},
		Body: []byte(`{"sentAt":"2025-06-01T12:00:00Z","batch":[
			{"type":"identify","messageId":"c-1","userId":"u1","timestamp":"2025-06-01T11:59:00Z",
			 "traits":{"email":"ada@example.com","firstName":"Ada","plan":"pro","ltv":120.5,"vip":true,
			 "createdAt":"2024-01-02T03:04:05Z","tags":["beta"],"email_opt_in":true}},
			{"type":"track","messageId":"c-2","userId":"u1","event":"Order Completed","timestamp":"2025-06-01T11:59:30Z",
			 "properties":{"revenue":42.5,"currency":"EUR"}},
			{"type":"page","messageId":"c-3","userId":"u1","name":"Pricing","timestamp":"2025-06-01T11:59:40Z"},
			{"type":"screen","messageId":"c-4","userId":"u1","name":"Home","timestamp":"2025-06-01T11:59:50Z"}
		]}`),
	}
}

func sourceCase() sdktest.SourceCase {
	return sdktest.SourceCase{
		Config: []byte(conformanceConfig),
		BadConfigs: [][]byte{
			nil,
			[]byte("write_keys: []\n"),
			[]byte("write_keys: [\"\"]\n"),
			[]byte("write_keys: [k-0123456789abcdef]\ntraits:\n  plan: integer\n"),
			[]byte("write_keys: [k-0123456789abcdef]\ntraits:\n  first-name: string\n"),
			[]byte("write_keys: [k-0123456789abcdef]\nanonymous: maybe\n"),
			[]byte("write_keys: [k-0123456789abcdef]\nevents: [a, a]\n"),
			[]byte("write_keys: [k-0123456789abcdef]\nunknown: 1\n"),
			[]byte("write_keys: [k-0123456789abcdef]\nemail: mail\n"),
		},
		Webhook: signedBatch(),
	}
}

func TestConformance(t *testing.T) {
	sdktest.RunSource(t, tracksource.New(), sourceCase())
}

func TestConformanceBinary(t *testing.T) {
	sdktest.RunSourceBinary(t, sdktest.BuildPlugin(t, pluginPkg), sourceCase())
}

// TestConformanceWebhookIsAccepted checks that the suite's webhook request
// is what it claims, a valid signed batch: the suite accepts any status,
// so a 401 would pass it unnoticed.
func TestConformanceWebhookIsAccepted(t *testing.T) {
	src := sdktest.LaunchSource(t, sdktest.BuildPlugin(t, pluginPkg))
	if _, err := src.Configure(t.Context(), sdk.ConfigureRequest{Instance: "conformance", Config: []byte(conformanceConfig)}); err != nil {
		t.Fatal(err)
	}
	resp, err := src.(sdk.SourceWebhooker).Webhook(t.Context(), signedBatch())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Response.Status != 200 || resp.Batch == nil {
		t.Fatalf("status %d, batch %v: %s", resp.Response.Status, resp.Batch, resp.Response.Body)
	}
	b := resp.Batch
	traits := 0
	for _, c := range b.Customers {
		traits += len(c.Traits)
	}
	if len(b.Customers) != 1 || traits != 7 || len(b.Events) != 3 || len(b.Consents) != 1 || len(b.Problems) != 0 {
		t.Errorf("batch = %d customers (%d traits), %d events, %d consents, %d problems; want 1 (7), 3, 1, 0: %+v",
			len(b.Customers), traits, len(b.Events), len(b.Consents), len(b.Problems), b)
	}
}
