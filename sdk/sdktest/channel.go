package sdktest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Limits of the suite. They are generous: they catch hangs, not slowness.
const (
	// callTimeout bounds Configure, Send and Webhook.
	callTimeout = 30 * time.Second
	// pullTimeout bounds a Pull until it is caught up.
	pullTimeout = 60 * time.Second
	// promptly bounds how long a call may take to return once its context
	// is done.
	promptly = 10 * time.Second
)

// ChannelCase configures the channel conformance suite.
type ChannelCase struct {
	// Config is a valid config (YAML) that the suite uses for its checks.
	// Send is called with it, so point it at a test double, not a provider.
	Config []byte
	// BadConfigs are configs Configure must reject.
	BadConfigs [][]byte
	// Messages are sent by the send checks. Default: three messages to
	// example.com addresses (to +1 555-01xx numbers or https://example.com
	// URLs for sms and webhook channels).
	Messages []sdk.Message
	// Webhook, if set, is a request the plugin must answer with a status.
	Webhook *sdk.WebhookRequest
}

// RunChannel runs the channel suite against ch in this process, through the
// SDK's gRPC shims over a real connection (plugin.TestPluginGRPCConn).
func RunChannel(t *testing.T, ch sdk.Channel, c ChannelCase) {
	t.Helper()
	runChannel(t, ConnectChannel(t, ch), c)
}

// RunChannelBinary runs the channel suite against the plugin binary at path,
// launched as the daemon launches it (see LaunchChannel).
func RunChannelBinary(t *testing.T, path string, c ChannelCase) {
	t.Helper()
	runChannel(t, LaunchChannel(t, path), c)
}

func runChannel(t *testing.T, ch sdk.Channel, c ChannelCase) {
	t.Run("configure rejects bad configs", func(t *testing.T) {
		checkBadConfigs(t, c.BadConfigs, func(ctx context.Context, req sdk.ConfigureRequest) error {
			_, err := ch.Configure(ctx, req)
			return err
		})
	})

	var info sdk.ChannelInfo
	if !t.Run("configure", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
		defer cancel()
		var err error
		info, err = ch.Configure(ctx, configureRequest(c.Config))
		if err != nil {
			t.Fatalf("Configure with ChannelCase.Config: %v", err)
		}
		checkChannelInfo(t, info)
	}) {
		t.Fatal("channel not configured: skipping the other checks")
	}

	msgs := c.Messages
	if len(msgs) == 0 {
		msgs = defaultMessages(info.Kind, "conformance")
	}
	batch := max(info.MaxBatch, 1)

	t.Run("send", func(t *testing.T) {
		for chunk := range slices.Chunk(msgs, batch) {
			ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
			results, err := ch.Send(ctx, chunk)
			cancel()
			if err != nil {
				t.Fatalf("Send(%d messages): %v", len(chunk), err)
			}
			checkResults(t, chunk, results)
		}
	})

	t.Run("send nothing", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
		defer cancel()
		results, err := ch.Send(ctx, nil)
		if err != nil {
			t.Errorf("Send(no messages) = %v, want no error", err)
		}
		if len(results) != 0 {
			t.Errorf("Send(no messages) returned %d results, want none", len(results))
		}
	})

	t.Run("send concurrently", func(t *testing.T) {
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				chunk := defaultMessages(info.Kind, fmt.Sprintf("concurrent-%d", g))[:1]
				if len(c.Messages) > 0 {
					chunk = []sdk.Message{c.Messages[0]}
					chunk[0].Key = fmt.Sprintf("%s-concurrent-%d", chunk[0].Key, g)
				}
				ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
				defer cancel()
				results, err := ch.Send(ctx, chunk)
				if err != nil {
					t.Errorf("goroutine %d: Send: %v", g, err)
					return
				}
				checkResults(t, chunk, results)
			})
		}
		wg.Wait()
	})

	t.Run("send honours cancellation", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		checkPrompt(t, "Send with a cancelled context", func() error {
			_, err := ch.Send(ctx, msgs[:1])
			return err
		}, true)
	})

	t.Run("send honours deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		defer cancel()
		checkPrompt(t, "Send with a 1ms deadline", func() error {
			_, err := ch.Send(ctx, msgs[:1])
			return err
		}, false)
	})

	t.Run("webhook", func(t *testing.T) {
		wh, ok := ch.(sdk.ChannelWebhooker)
		if !ok {
			t.Fatalf("%T does not implement sdk.ChannelWebhooker", ch)
		}
		ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
		defer cancel()
		if c.Webhook == nil {
			if info.Webhooks {
				t.Skip("plugin has webhooks but ChannelCase.Webhook is not set")
			}
			_, err := wh.Webhook(ctx, &sdk.WebhookRequest{Method: "POST", Path: "/"})
			if !errors.Is(err, sdk.ErrNoWebhooks) {
				t.Errorf("Webhook on a channel without webhooks = %v, want sdk.ErrNoWebhooks", err)
			}
			return
		}
		if !info.Webhooks {
			t.Error("ChannelCase.Webhook is set but ChannelInfo.Webhooks is false: implement sdk.ChannelWebhooker")
		}
		resp, err := wh.Webhook(ctx, c.Webhook)
		if err != nil {
			t.Fatalf("Webhook: %v", err)
		}
		checkStatus(t, resp.Response.Status)
		for i, e := range resp.Events {
			if e.Type <= sdk.DeliveryUnknown || e.Type > sdk.DeliveryFailed {
				t.Errorf("delivery event %d: unknown type %d", i, int(e.Type))
			}
			if e.Key == "" && e.ProviderID == "" {
				t.Errorf("delivery event %d: neither key nor provider id: the host cannot match it to a message", i)
			}
		}
	})
}

func checkChannelInfo(t *testing.T, info sdk.ChannelInfo) {
	t.Helper()
	checkNameVersion(t, info.Name, info.Version)
	switch info.Kind {
	case "email", "sms", "webhook":
	default:
		t.Errorf("ChannelInfo.Kind = %q, want email, sms or webhook", info.Kind)
	}
	if info.MaxBatch < 0 {
		t.Errorf("ChannelInfo.MaxBatch = %d, want ≥ 0", info.MaxBatch)
	}
	if !(info.RateHint >= 0) { // also catches NaN
		t.Errorf("ChannelInfo.RateHint = %v, want ≥ 0", info.RateHint)
	}
}

func checkResults(t *testing.T, msgs []sdk.Message, results []sdk.Result) {
	t.Helper()
	if len(results) != len(msgs) {
		t.Errorf("Send(%d messages) returned %d results, want one per message", len(msgs), len(results))
	}
	want := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		want[m.Key] = true
	}
	seen := make(map[string]bool, len(results))
	for _, r := range results {
		switch {
		case !want[r.Key]:
			t.Errorf("result for key %q, which was not sent", r.Key)
		case seen[r.Key]:
			t.Errorf("two results for key %q", r.Key)
		}
		seen[r.Key] = true
		switch r.Status {
		case sdk.Accepted:
			if r.ProviderID == "" {
				t.Logf("hint: result %q is accepted without a provider id; webhooks match on it", r.Key)
			}
		case sdk.Retryable:
			if r.RetryAfter < 0 {
				t.Errorf("result %q: retry after %v, want ≥ 0", r.Key, r.RetryAfter)
			}
		case sdk.OutcomeUnknown:
			// The provider may have the message; the host will not resend it.
		case sdk.Permanent, sdk.Suppress:
			if r.Reason == "" {
				t.Errorf("result %q is %v without a reason", r.Key, r.Status)
			}
		default:
			t.Errorf("result %q has unknown status %d", r.Key, int(r.Status))
		}
	}
	for _, m := range msgs {
		if !seen[m.Key] {
			t.Errorf("no result for message %q", m.Key)
		}
	}
}

// defaultMessages returns three messages for a channel of the given kind.
func defaultMessages(kind, prefix string) []sdk.Message {
	names := []string{"ada", "grace", "alan"}
	msgs := make([]sdk.Message, len(names))
	for i, n := range names {
		to := n + "@example.com"
		switch kind {
		case "sms":
			to = fmt.Sprintf("+1555555010%d", i+1)
		case "webhook":
			to = "https://example.com/hooks/" + n
		}
		msgs[i] = sdk.Message{
			Key:        fmt.Sprintf("%s-%d", prefix, i+1),
			CustomerID: "cust-" + n,
			To:         to,
			From:       "news@example.com",
			ReplyTo:    "help@example.com",
			Subject:    "Hello " + n,
			Text:       "Hello " + n + ", this is a conformance test.",
			HTML:       "<p>Hello " + n + ", this is a conformance test.</p>",
			Headers:    []sdk.Header{{Name: "List-Unsubscribe", Values: []string{"<https://example.com/unsubscribe/" + n + ">"}}},
			Metadata:   map[string]string{"campaign": "conformance"},
		}
	}
	return msgs
}
