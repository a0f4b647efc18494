package smtpchannel

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/smtp/smtpsink"
	"github.com/cohortd/cohort/sdk"
)

var fixedNow = time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC)

func startSink(t testing.TB, opts smtpsink.Options) *smtpsink.Sink {
	t.Helper()
	s, err := smtpsink.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// sinkConfig is a config sending to sink without TLS, plus extra lines.
func sinkConfig(sink *smtpsink.Sink, extra string) string {
	return "host: 127.0.0.1\nport: " + strconv.Itoa(sink.Port()) + "\ntls: none\ntimeout: 10s\n" + extra
}

func configure(t testing.TB, config string) *Channel {
	t.Helper()
	c := New()
	c.now = func() time.Time { return fixedNow }
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Configure(context.Background(), sdk.ConfigureRequest{Config: []byte(config)}); err != nil {
		t.Fatalf("Configure:\n%s\n%v", config, err)
	}
	return c
}

func message(key, to string) sdk.Message {
	return sdk.Message{
		Key:        key,
		CustomerID: "cust-" + key,
		To:         to,
		From:       "Cohort News <news@example.com>",
		ReplyTo:    "help@example.com",
		Subject:    "Hello " + key,
		Text:       "Hello, this is " + key + ".",
		HTML:       "<p>Hello, this is " + key + ".</p>",
		Headers: []sdk.Header{
			{Name: "List-Unsubscribe", Values: []string{"<https://cohort.example.com/unsubscribe?t=" + key + ">"}},
			{Name: "List-Unsubscribe-Post", Values: []string{"List-Unsubscribe=One-Click"}},
		},
	}
}

func send(t *testing.T, c *Channel, msgs ...sdk.Message) map[string]sdk.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	results, err := c.Send(ctx, msgs)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(results) != len(msgs) {
		t.Fatalf("Send returned %d results for %d messages", len(results), len(msgs))
	}
	byKey := map[string]sdk.Result{}
	for _, r := range results {
		byKey[r.Key] = r
	}
	return byKey
}

func resultString(r sdk.Result) string {
	return fmt.Sprintf("%v code=%q id=%q after=%v reason=%q", r.Status, r.Code, r.ProviderID, r.RetryAfter, r.Reason)
}
