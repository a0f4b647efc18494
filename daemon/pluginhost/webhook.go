package pluginhost

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/cohortd/cohort/sdk"
)

// MaxWebhookBody is the largest webhook body accepted (SendGrid batches
// events up to a few MB).
const MaxWebhookBody = 16 << 20

// WebhookSink commits what plugins return from webhooks. The HTTP answer is
// given only after the sink returns; an error answers 503 so the provider
// retries and nothing is lost.
type WebhookSink interface {
	SourceBatch(ctx context.Context, instance string, b *sdk.Batch) error
	DeliveryEvents(ctx context.Context, instance string, evs []sdk.DeliveryEvent) error
}

// WebhookHandler serves /webhooks/{instance}/{rest...}: it forwards the
// method, the full public URL, headers and raw body to the instance's
// Webhook, commits what it returns through sink, then answers with the
// plugin's response.
func (h *Host) WebhookHandler(publicURL string, sink WebhookSink) http.Handler {
	publicURL = strings.TrimRight(publicURL, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("instance")
		in := h.instances[name]
		if in == nil {
			http.Error(w, "no such webhook", http.StatusNotFound)
			return
		}
		log := in.log.With("remote", r.RemoteAddr, "path", r.URL.Path)
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWebhookBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "cannot read request body", http.StatusBadRequest)
			return
		}
		rest := "/" + r.PathValue("rest")
		req := &sdk.WebhookRequest{
			Method:     r.Method,
			URL:        publicURL + r.URL.RequestURI(),
			Path:       rest,
			Body:       body,
			RemoteAddr: r.RemoteAddr,
		}
		for k, vs := range r.Header {
			req.Headers = append(req.Headers, sdk.Header{Name: k, Values: vs})
		}
		ctx := r.Context()
		var resp sdk.HTTPResponse
		switch in.role {
		case RoleSource:
			out, err := (&SourceClient{in}).Webhook(ctx, req)
			if !webhookOK(w, log, err) {
				return
			}
			if out.Batch != nil && sink != nil {
				if err := sink.SourceBatch(ctx, name, out.Batch); err != nil {
					log.Error("webhook data not committed; asking the caller to retry", "err", err)
					http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
					return
				}
			}
			resp = out.Response
		case RoleChannel:
			out, err := (&ChannelClient{in}).Webhook(ctx, req)
			if !webhookOK(w, log, err) {
				return
			}
			if len(out.Events) > 0 && sink != nil {
				if err := sink.DeliveryEvents(ctx, name, out.Events); err != nil {
					log.Error("delivery events not committed; asking the caller to retry", "err", err)
					http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
					return
				}
			}
			resp = out.Response
		}
		for _, hd := range resp.Headers {
			for _, v := range hd.Values {
				w.Header().Add(hd.Name, v)
			}
		}
		status := resp.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		_, _ = w.Write(resp.Body)
	})
}

// webhookOK answers the caller when the plugin call failed.
func webhookOK(w http.ResponseWriter, log *slog.Logger, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, sdk.ErrNoWebhooks):
		http.Error(w, "this instance does not accept webhooks", http.StatusNotFound)
	default:
		log.Error("webhook failed in the plugin; asking the caller to retry", "err", err)
		http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
	}
	return false
}
