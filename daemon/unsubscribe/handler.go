package unsubscribe

import (
	"context"
	"errors"
	"html/template"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Store records unsubscribes. It must be idempotent: the same link may be
// used many times (a mail client retrying a one-click POST, a person
// clicking twice), and each use calls Unsubscribe again.
type Store interface {
	// Unsubscribe records that c.CustomerID leaves channel kind c.Kind at
	// at; via is "one-click" (RFC 8058 POST from a mail client) or "page"
	// (the button on the unsubscribe page).
	Unsubscribe(ctx context.Context, c Claims, at time.Time, via string) error
}

// Via values passed to Store.Unsubscribe.
const (
	ViaOneClick = "one-click"
	ViaPage     = "page"
)

const (
	// maxBody bounds a POST body: a one-click body is 26 bytes.
	maxBody = 64 << 10
	// storeTimeout bounds the Store call.
	storeTimeout = 10 * time.Second
)

// Handler serves /unsubscribe; the token is the query parameter t for GET
// and POST alike.
//
//   - POST with the form body List-Unsubscribe=One-Click (RFC 8058, from a
//     mail client; multipart/form-data or urlencoded): unsubscribes and
//     answers 200 with no confirmation step.
//   - GET (or HEAD): a small page with a button that POSTs. A GET never
//     unsubscribes: mail scanners fetch links.
//   - POST from that page (form field confirm): unsubscribes and shows a
//     done page.
//
// Both POSTs are idempotent. An invalid or expired token gets a 400 page
// saying so and how else to unsubscribe; a Store error a 500 (logged with
// the customer id only); other methods 405. now is the clock (nil:
// time.Now); log may be nil.
func Handler(s *Signer, st Store, now func() time.Time, log *slog.Logger) http.Handler {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{signer: s, store: st, now: now, log: log, pages: template.Must(template.New("pages").Parse(pagesHTML))}
}

type handler struct {
	signer *Signer
	store  Store
	now    func() time.Time
	log    *slog.Logger
	pages  *template.Template
}

// page is the data of a page.
type page struct {
	Title string
	Token string
	Kind  string
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	// The token is in the URL: do not hand it to other sites.
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.get(w, r)
	case http.MethodPost:
		h.post(w, r)
	default:
		hd.Set("Allow", "GET, HEAD, POST")
		h.render(w, http.StatusMethodNotAllowed, "method", page{Title: "Method not allowed"})
	}
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("t")
	c, err := h.signer.Verify(token, h.now())
	if err != nil {
		h.invalid(w, err)
		return
	}
	h.render(w, http.StatusOK, "confirm", page{Title: "Unsubscribe", Token: token, Kind: kindText(c.Kind)})
}

func (h *handler) post(w http.ResponseWriter, r *http.Request) {
	form, err := readForm(w, r)
	if err != nil {
		h.render(w, http.StatusBadRequest, "badform", page{Title: "Bad request"})
		return
	}
	c, err := h.signer.Verify(r.URL.Query().Get("t"), h.now())
	if err != nil {
		h.invalid(w, err)
		return
	}
	var via string
	switch {
	case form.Get("List-Unsubscribe") == "One-Click":
		via = ViaOneClick
	case form.Get("confirm") != "":
		via = ViaPage
	default:
		h.render(w, http.StatusBadRequest, "badform", page{Title: "Bad request"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	if err := h.store.Unsubscribe(ctx, c, h.now(), via); err != nil {
		h.log.Error("recording an unsubscribe failed", "customer", c.CustomerID, "campaign", c.Campaign, "kind", c.Kind, "via", via, "err", err)
		h.render(w, http.StatusInternalServerError, "error", page{Title: "Please try again"})
		return
	}
	h.log.Info("unsubscribed", "customer", c.CustomerID, "campaign", c.Campaign, "kind", c.Kind, "via", via)
	if via == ViaOneClick {
		// RFC 8058 section 3.2: no confirmation step, just success.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "unsubscribed\n")
		return
	}
	h.render(w, http.StatusOK, "done", page{Title: "Unsubscribed", Kind: kindText(c.Kind)})
}

// readForm reads a POST body: multipart/form-data or urlencoded (RFC 8058
// allows both); a body without a content type is read as urlencoded.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "multipart/form-data" {
		if err := r.ParseMultipartForm(maxBody); err != nil {
			return nil, err
		}
		defer func() { _ = r.MultipartForm.RemoveAll() }()
		return r.PostForm, nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	return url.ParseQuery(strings.TrimSpace(string(body)))
}

func (h *handler) invalid(w http.ResponseWriter, err error) {
	reason := "malformed"
	switch {
	case errors.Is(err, ErrExpired):
		reason = "expired"
	case errors.Is(err, ErrBadSignature):
		reason = "bad signature"
	}
	// The token holds the customer id, but an unverified one: log neither.
	h.log.Info("unsubscribe link rejected", "reason", reason)
	h.render(w, http.StatusBadRequest, "invalid", page{Title: "Link invalid or expired"})
}

func (h *handler) render(w http.ResponseWriter, status int, name string, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var b strings.Builder
	if err := h.pages.ExecuteTemplate(&b, name, p); err != nil {
		h.log.Error("rendering the unsubscribe page failed", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, b.String())
}

func kindText(kind string) string {
	switch kind {
	case "email":
		return "emails"
	case "sms":
		return "text messages"
	}
	return "messages"
}

const pagesHTML = `
{{define "head"}}<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{.Title}}</title>
<style>
body { font: 1.125rem/1.5 system-ui, sans-serif; margin: 0; padding: 2rem 1rem; color: #1a1a1a; background: #fff; }
main { max-width: 32rem; margin: 0 auto; }
button { font: inherit; padding: 0.6rem 1.4rem; border: 2px solid #1a1a1a; border-radius: 0.3rem; background: #1a1a1a; color: #fff; cursor: pointer; }
button:focus-visible { outline: 3px solid #0b57d0; outline-offset: 2px; }
</style>
</head>
<body>
<main>
{{end}}
{{define "foot"}}</main>
</body>
</html>
{{end}}
{{define "confirm"}}{{template "head" .}}<h1>Unsubscribe</h1>
<p>Press the button to stop receiving marketing {{.Kind}} from us.</p>
<form method="post" action="?t={{.Token}}">
<input type="hidden" name="confirm" value="yes">
<button type="submit">Unsubscribe</button>
</form>
{{template "foot" .}}{{end}}
{{define "done"}}{{template "head" .}}<h1 role="status">You are unsubscribed</h1>
<p>You will not receive marketing {{.Kind}} from us any more. It can take a few minutes for a message already on its way to arrive.</p>
{{template "foot" .}}{{end}}
{{define "invalid"}}{{template "head" .}}<h1>This link is invalid or has expired</h1>
<p>We could not unsubscribe you with this link. Unsubscribe links work for a limited time and must be copied whole.</p>
<p>To unsubscribe, use the unsubscribe link in a more recent message from us, or reply to one of our messages asking to be unsubscribed.</p>
{{template "foot" .}}{{end}}
{{define "badform"}}{{template "head" .}}<h1>Bad request</h1>
<p>This request did not come from our unsubscribe page. Open the unsubscribe link from your message and press the button there.</p>
{{template "foot" .}}{{end}}
{{define "error"}}{{template "head" .}}<h1>Please try again</h1>
<p>We could not record your request just now. Please try again in a few minutes, or reply to one of our messages asking to be unsubscribed.</p>
{{template "foot" .}}{{end}}
{{define "method"}}{{template "head" .}}<h1>Method not allowed</h1>
<p>Open the unsubscribe link from your message in a browser.</p>
{{template "foot" .}}{{end}}
`
