// Package sgbench is the baseline for send benchmarks through SendGrid: a
// bare sendgrid-go client posting single-recipient messages to a Mail Send
// endpoint (normally a local sgserver) at a fixed concurrency, building
// each body as the plugin does, on net/http's stock Transport with the
// plugin's pool size, timeout and redirect policy (NewStockHTTPClient): what
// a user of sendgrid-go gets. The plugin has a transport of its own.
// A benchmark of the daemon (or of the plugin) sends the same messages and
// prints its rate beside DirectSend's, measured in the same run.
package sgbench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sendgrid/rest"

	"github.com/cohortd/cohort/plugins/sendgrid/internal/sendgridchannel"
	"github.com/cohortd/cohort/sdk"
)

// requestTimeout is the per-request timeout, the plugin's default.
const requestTimeout = sendgridchannel.DefaultTimeout

// htmlBody is a typical campaign body of about 1.5 KB.
var htmlBody = "<html><body><h1>Spring offers</h1>" +
	strings.Repeat("<p>Our spring collection is here: light jackets, linen shirts and more.</p>", 18) +
	"<p><a href=\"https://example.com/u/{token}\">Unsubscribe</a></p></body></html>"

// Message returns the i-th benchmark message: key "bench-<i>", recipient
// user<i>@example.com, a subject, a text part, a ~1.5 KB HTML part, a
// List-Unsubscribe header and campaign metadata.
func Message(i int) sdk.Message {
	n := strconv.Itoa(i)
	return sdk.Message{
		Key:        "bench-" + n,
		CustomerID: "cust-" + n,
		To:         "user" + n + "@example.com",
		From:       "Example News <news@example.com>",
		ReplyTo:    "help@example.com",
		Subject:    "Spring offers for customer " + n,
		Text:       "Our spring collection is here. Unsubscribe: https://example.com/u/" + n,
		HTML:       strings.Replace(htmlBody, "{token}", n, 1),
		Headers: []sdk.Header{
			{Name: "List-Unsubscribe", Values: []string{"<https://example.com/u/" + n + ">"}},
		},
		Metadata: map[string]string{"campaign": "bench", "variant": "a"},
	}
}

// DirectSend sends Message(0) .. Message(n-1) to baseURL's Mail Send with
// sendgrid-go, concurrency requests at a time, and returns the elapsed
// time. Every request must be accepted (2xx): the first other answer or
// transport error stops the run and is returned.
func DirectSend(ctx context.Context, baseURL, apiKey string, n, concurrency int) (time.Duration, error) {
	if n < 0 || concurrency < 1 {
		return 0, fmt.Errorf("sgbench: DirectSend(n=%d, concurrency=%d): n must be ≥ 0 and concurrency ≥ 1", n, concurrency)
	}
	client := &rest.Client{HTTPClient: sendgridchannel.NewStockHTTPClient(concurrency, requestTimeout)}
	defer client.HTTPClient.CloseIdleConnections()

	run, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	start := time.Now()
	for range min(concurrency, max(n, 1)) {
		wg.Go(func() {
			for run.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				m := Message(i)
				body, err := sendgridchannel.Body(&m, sendgridchannel.BodyOptions{})
				if err != nil {
					fail(fmt.Errorf("sgbench: message %d: %w", i, err))
					return
				}
				resp, err := client.SendWithContext(run, sendgridchannel.NewRequest(apiKey, baseURL, body))
				if err != nil {
					fail(fmt.Errorf("sgbench: message %d: %w", i, err))
					return
				}
				if resp.StatusCode < 200 || resp.StatusCode > 299 {
					fail(fmt.Errorf("sgbench: message %d: HTTP %d: %s", i, resp.StatusCode, resp.Body))
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return elapsed, firstErr
	}
	if err := ctx.Err(); err != nil {
		return elapsed, fmt.Errorf("sgbench: stopped after %v: %w", elapsed.Round(time.Millisecond), err)
	}
	return elapsed, nil
}
