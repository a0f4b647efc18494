// Package hookbridge serves a channel's webhooks over real HTTP for tests,
// the way the daemon routes /webhooks/{instance}/*: it passes the method,
// the full public URL as called, the path below the instance, the headers
// and the raw body to the channel's Webhook, records the delivery events
// and answers with what the channel returned.
package hookbridge

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// callTimeout bounds each Webhook call.
const callTimeout = 10 * time.Second

// Bridge is a running webhook server for one channel instance.
type Bridge struct {
	// URL is the public base URL, e.g. "http://127.0.0.1:40123".
	URL string
	// Path is the instance's webhook path, "/webhooks/" + instance.
	Path string

	wh     sdk.ChannelWebhooker
	mu     sync.Mutex
	events []sdk.DeliveryEvent
}

// Start serves wh's webhooks for instance until the test ends.
func Start(t testing.TB, wh sdk.ChannelWebhooker, instance string) *Bridge {
	t.Helper()
	b := &Bridge{Path: "/webhooks/" + instance, wh: wh}
	srv := httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(srv.Close)
	b.URL = srv.URL
	return b
}

// ConfigureRequest is a Configure request for the instance with config.
func (b *Bridge) ConfigureRequest(config string) sdk.ConfigureRequest {
	return sdk.ConfigureRequest{
		Instance:    strings.TrimPrefix(b.Path, "/webhooks/"),
		Config:      []byte(config),
		PublicURL:   b.URL,
		WebhookPath: b.Path,
	}
}

// Events returns the delivery events received so far.
func (b *Bridge) Events() []sdk.DeliveryEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]sdk.DeliveryEvent(nil), b.events...)
}

func (b *Bridge) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, b.Path)
	if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
		http.NotFound(w, r)
		return
	}
	if rest == "" {
		rest = "/"
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := &sdk.WebhookRequest{
		Method:     r.Method,
		URL:        b.URL + r.URL.RequestURI(),
		Path:       rest,
		Body:       body,
		RemoteAddr: r.RemoteAddr,
	}
	for name, values := range r.Header {
		req.Headers = append(req.Headers, sdk.Header{Name: name, Values: values})
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	resp, err := b.wh.Webhook(ctx, req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b.mu.Lock()
	b.events = append(b.events, resp.Events...)
	b.mu.Unlock()
	for _, h := range resp.Response.Headers {
		for _, v := range h.Values {
			w.Header().Add(h.Name, v)
		}
	}
	w.WriteHeader(resp.Response.Status)
	_, _ = w.Write(resp.Response.Body)
}
