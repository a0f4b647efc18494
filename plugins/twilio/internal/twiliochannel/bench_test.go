package twiliochannel

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cohortd/cohort/plugins/twilio/twilioserver"
	"github.com/cohortd/cohort/sdk"
)

// BenchmarkSend compares the channel (twilio-go, one call per message,
// parallel 8) with a bare net/http client making the same calls with the
// same concurrency against the same local Twilio: the design asks for at
// least 0.7x the bare client. Both report msgs/s.
func BenchmarkSend(b *testing.B) {
	const parallel, batch = 8, 100
	b.Run("bare-http", func(b *testing.B) {
		srv := twilioserver.New(testAccount, testToken)
		defer srv.Close()
		client := &http.Client{Transport: newTransport(parallel)}
		target := srv.URL() + "/2010-04-01/Accounts/" + testAccount + "/Messages.json"
		var next atomic.Int64
		var failed atomic.Int64
		b.ResetTimer()
		var wg sync.WaitGroup
		for range parallel {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					form := url.Values{
						"To": {fmt.Sprintf("+1555%07d", i%10_000_000)}, "From": {testSender}, "Body": {"Hello there"},
						"StatusCallback": {"https://cohort.example.com/webhooks/sms/status?key=row-" + fmt.Sprint(i)},
					}
					req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					req.SetBasicAuth(testAccount, testToken)
					resp, err := client.Do(req)
					if err != nil {
						failed.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		if failed.Load() > 0 {
			b.Fatalf("%d sends failed", failed.Load())
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("channel", func(b *testing.B) {
		srv := twilioserver.New(testAccount, testToken)
		defer srv.Close()
		ch := New(slog.New(slog.DiscardHandler))
		defer ch.Close()
		if _, err := ch.Configure(b.Context(), sdk.ConfigureRequest{
			Instance: "sms", PublicURL: "https://cohort.example.com", WebhookPath: "/webhooks/sms",
			Config: fmt.Appendf(nil, "account_sid: %s\nauth_token: %s\nfrom: %q\nbase_url: %s\nparallel: %d\n", testAccount, testToken, testSender, srv.URL(), parallel),
		}); err != nil {
			b.Fatal(err)
		}
		msgs := make([]sdk.Message, 0, batch)
		b.ResetTimer()
		for sent := 0; sent < b.N; sent += len(msgs) {
			msgs = msgs[:0]
			for i := sent; i < min(sent+batch, b.N); i++ {
				msgs = append(msgs, sdk.Message{Key: fmt.Sprint("row-", i), To: fmt.Sprintf("+1555%07d", i%10_000_000), Text: "Hello there"})
			}
			results, err := ch.Send(b.Context(), msgs)
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range results {
				if r.Status != sdk.Accepted {
					b.Fatalf("%s: %+v", r.Key, r)
				}
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
