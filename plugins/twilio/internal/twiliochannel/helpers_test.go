package twiliochannel

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/twilio/internal/hookbridge"
	"github.com/cohortd/cohort/plugins/twilio/twilioserver"
	"github.com/cohortd/cohort/sdk"
)

// Made-up credentials and numbers in Twilio's shapes.
const (
	testAccount = "AC00000000000000000000000000000001"
	testToken   = "0123456789abcdef0123456789abcdef"
	testSender  = "+15555550199"
	testService = "MG00000000000000000000000000000001"
)

var fixedNow = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// rig is a configured channel, a Twilio stand-in it sends to, and a webhook
// bridge that routes Twilio's callbacks back to it.
type rig struct {
	ch     *Channel
	twilio *twilioserver.Server
	hooks  *hookbridge.Bridge
}

// newChannel returns an unconfigured channel that logs to the test.
func newChannel(t *testing.T) *Channel {
	t.Helper()
	ch := New(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
	ch.now = func() time.Time { return fixedNow }
	t.Cleanup(func() { _ = ch.Close() })
	return ch
}

// configFor is a valid config for srv plus extra lines.
func configFor(srv *twilioserver.Server, extra string) string {
	return fmt.Sprintf("account_sid: %s\nauth_token: %s\nbase_url: %s\n%s", srv.AccountSID(), srv.AuthToken(), srv.URL(), extra)
}

// newRig starts a stand-in and a configured channel; extra is added to the
// config (default: from: +15555550199).
func newRig(t *testing.T, extra string) *rig {
	t.Helper()
	srv := twilioserver.New(testAccount, testToken)
	t.Cleanup(srv.Close)
	ch := newChannel(t)
	hooks := hookbridge.Start(t, ch, "sms")
	if extra == "" {
		extra = "from: \"" + testSender + "\"\n"
	}
	info, err := ch.Configure(t.Context(), hooks.ConfigureRequest(configFor(srv, extra)))
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if info.Kind != "sms" || info.Name != "twilio" {
		t.Fatalf("ChannelInfo = %+v", info)
	}
	srv.SetInboundURL(hooks.URL + hooks.Path + "/inbound")
	return &rig{ch: ch, twilio: srv, hooks: hooks}
}

// send sends msgs and returns the results by key, checking there is one
// per message.
func (r *rig) send(t *testing.T, msgs ...sdk.Message) map[string]sdk.Result {
	t.Helper()
	results, err := r.ch.Send(t.Context(), msgs)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	return byKey(t, msgs, results)
}

func byKey(t *testing.T, msgs []sdk.Message, results []sdk.Result) map[string]sdk.Result {
	t.Helper()
	if len(results) != len(msgs) {
		t.Fatalf("%d results for %d messages", len(results), len(msgs))
	}
	out := make(map[string]sdk.Result, len(results))
	for _, res := range results {
		if _, dup := out[res.Key]; dup {
			t.Fatalf("two results for %q", res.Key)
		}
		out[res.Key] = res
	}
	for _, m := range msgs {
		if _, ok := out[m.Key]; !ok {
			t.Fatalf("no result for %q", m.Key)
		}
	}
	return out
}

func sms(key, to, text string) sdk.Message {
	return sdk.Message{Key: key, CustomerID: "cust-" + key, To: to, Text: text, From: "ignored@example.com"}
}
