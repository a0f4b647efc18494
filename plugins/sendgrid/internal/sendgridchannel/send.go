package sendgridchannel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sendgrid/rest"
	"github.com/sendgrid/sendgrid-go"
	sgmail "github.com/sendgrid/sendgrid-go/helpers/mail"

	"github.com/cohortd/cohort/sdk"
)

// SendPath is SendGrid's Mail Send endpoint.
const SendPath = "/v3/mail/send"

// Retry delays the provider does not dictate.
const (
	// configRetryAfter is the wait after an answer that only a config fix
	// (api_key, base_url) can change.
	configRetryAfter = 5 * time.Minute
	// defaultRateLimitWait is the wait after a 429 without X-RateLimit-Reset.
	defaultRateLimitWait = time.Second
)

// BodyOptions are the parts of a Mail Send body that come from the config.
type BodyOptions struct {
	Categories []string
	ASMGroupID int
	Sandbox    bool
}

// Body returns the v3 Mail Send JSON body for one message: one
// personalization to m.To carrying custom_args cohort_key, cohort_campaign
// and cohort_variant; From ("Name <addr>" or a bare address), ReplyTo,
// Subject, text/plain then text/html content, and Headers (several values
// joined with ", "); the categories of opts plus the campaign name while
// there is room. ';' and ',' are removed from the recipient's display name,
// which SendGrid refuses. An error says what is wrong with the message.
//
// Body builds the body with sendgrid-go's mail helpers and encoding/json,
// as a bare sendgrid-go client does (sgbench uses it so). The channel
// writes the same bytes with a bodyWriter, without reflection.
func Body(m *sdk.Message, opts BodyOptions) ([]byte, error) {
	if strings.TrimSpace(m.From) == "" {
		return nil, fmt.Errorf("message has no from address: set from in the campaign or its channel defaults")
	}
	from, err := mail.ParseAddress(m.From)
	if err != nil {
		return nil, fmt.Errorf("from %q is not an email address: %w", m.From, err)
	}
	to, err := mail.ParseAddress(m.To)
	if err != nil {
		return nil, fmt.Errorf("recipient %q is not an email address: %w", m.To, err)
	}

	v3 := sgmail.NewV3Mail()
	v3.Attachments = nil
	v3.SetFrom(sgmail.NewEmail(from.Name, from.Address))
	if strings.TrimSpace(m.ReplyTo) != "" {
		rt, err := mail.ParseAddress(m.ReplyTo)
		if err != nil {
			return nil, fmt.Errorf("reply-to %q is not an email address: %w", m.ReplyTo, err)
		}
		v3.SetReplyTo(sgmail.NewEmail(rt.Name, rt.Address))
	}
	v3.Subject = m.Subject

	p := sgmail.NewPersonalization()
	p.AddTos(sgmail.NewEmail(recipientName(to.Name), to.Address))
	p.SetCustomArg("cohort_key", m.Key)
	campaign := m.Metadata["campaign"]
	if campaign != "" {
		p.SetCustomArg("cohort_campaign", campaign)
	}
	if v := m.Metadata["variant"]; v != "" {
		p.SetCustomArg("cohort_variant", v)
	}
	v3.AddPersonalizations(p)

	if m.Text != "" {
		v3.AddContent(sgmail.NewContent("text/plain", m.Text))
	}
	if m.HTML != "" {
		v3.AddContent(sgmail.NewContent("text/html", m.HTML))
	}
	for _, h := range m.Headers {
		if len(h.Values) > 0 {
			v3.SetHeader(h.Name, strings.Join(h.Values, ", "))
		}
	}

	cats := slices.Clone(opts.Categories)
	if campaign != "" && len(cats) < maxCategories && len(campaign) <= maxCategoryLen && !slices.Contains(cats, campaign) {
		cats = append(cats, campaign)
	}
	if len(cats) > 0 {
		v3.AddCategories(cats...)
	}
	if opts.ASMGroupID > 0 {
		v3.SetASM(sgmail.NewASM().SetGroupID(opts.ASMGroupID))
	}
	if opts.Sandbox {
		on := true
		v3.SetMailSettings(sgmail.NewMailSettings().SetSandboxMode(&sgmail.Setting{Enable: &on}))
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v3); err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// recipientName drops ';' and ',' from a display name, which SendGrid
// refuses in to.name, and tidies the spaces: "Lovelace, Ada" -> "Lovelace Ada".
func recipientName(name string) string {
	if isTidyName(name) {
		return name
	}
	return strings.Join(strings.Fields(nameSeparators.Replace(name)), " ")
}

// nameSeparators turns the separators SendGrid refuses in to.name into spaces.
var nameSeparators = strings.NewReplacer(";", " ", ",", " ")

// isTidyName reports whether recipientName would return name unchanged:
// ASCII without ';' or ',', single spaces between words, no other white
// space.
func isTidyName(name string) bool {
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == ' ':
			if i == 0 || i == len(name)-1 || name[i-1] == ' ' {
				return false
			}
		case c < ' ' || c >= utf8.RuneSelf || c == ';' || c == ',':
			return false
		}
	}
	return true
}

// NewRequest returns sendgrid-go's Mail Send request for a body.
func NewRequest(apiKey, baseURL string, body []byte) rest.Request {
	req := sendgrid.GetRequest(apiKey, SendPath, baseURL)
	req.Method = rest.Post
	req.Body = body
	return req
}

// sendOne sends one message. reached reports whether the request was
// written in full (the provider may have acted on it).
func (c *Channel) sendOne(ctx context.Context, st *state, w *bodyWriter, m *sdk.Message) (sdk.Result, bool) {
	r, reached := c.attempt(ctx, st, w, m)
	// Reasons cross gRPC as protobuf strings, which must be UTF-8.
	r.Reason = strings.ToValidUTF8(r.Reason, "\uFFFD")
	return r, reached
}

func (c *Channel) attempt(ctx context.Context, st *state, w *bodyWriter, m *sdk.Message) (sdk.Result, bool) {
	// The transport may still hold the body after the answer came, so each
	// request has its own.
	body, err := w.appendBody(make([]byte, 0, len(m.Text)+len(m.HTML)+768), m)
	if err != nil {
		return sdk.Result{Key: m.Key, Status: sdk.Permanent, Reason: err.Error(), Code: "invalid_message"}, false
	}
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
				if c.wrote != nil {
					c.wrote(m.Key)
				}
			}
		},
	}
	req := st.request
	req.Body = body
	resp, err := st.client.SendWithContext(httptrace.WithClientTrace(ctx, trace), req)
	if resp != nil && resp.StatusCode != 0 {
		// A status arrived; a failure reading the rest of the body does not
		// change what it says.
		return classify(m.Key, resp, c.now()), true
	}
	if err == nil {
		err = fmt.Errorf("no response")
	}
	if wrote.Load() {
		return sdk.Result{Key: m.Key, Status: sdk.OutcomeUnknown, Code: "no_response",
			Reason: fmt.Sprintf("no answer from SendGrid after the request was sent, it may have the message: %v", err)}, true
	}
	return sdk.Result{Key: m.Key, Status: sdk.Retryable, Code: "not_sent",
		Reason: fmt.Sprintf("request not sent to SendGrid: %v", err)}, false
}

// classify maps a Mail Send answer to a result.
func classify(key string, resp *rest.Response, now time.Time) sdk.Result {
	h := http.Header(resp.Headers)
	code := strconv.Itoa(resp.StatusCode)
	r := sdk.Result{Key: key, Code: code}
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		r.Status = sdk.Accepted
		r.ProviderID = h.Get("X-Message-Id")
		r.Code = ""
	case s == http.StatusBadRequest:
		r.Status = sdk.Permanent
		r.Reason = "SendGrid rejected the message: " + errorText(resp.Body)
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		r.Status = sdk.Retryable
		r.RetryAfter = configRetryAfter
		r.Reason = fmt.Sprintf("SendGrid refused the API key (HTTP %d: %s): check api_key in this instance's config; the key needs Mail Send permission",
			s, errorText(resp.Body))
	case s == http.StatusRequestEntityTooLarge:
		r.Status = sdk.Permanent
		r.Reason = "message too large for SendGrid: the whole email must be under 30 MB"
	case s == http.StatusTooManyRequests:
		r.Status = sdk.Retryable
		r.RetryAfter = rateLimitWait(h, now)
		r.Reason = "SendGrid rate limit: " + errorText(resp.Body)
	case s >= 500:
		r.Status = sdk.Retryable
		r.RetryAfter = retryAfter(h.Get("Retry-After"), now)
		r.Reason = fmt.Sprintf("SendGrid server error (HTTP %d): %s", s, errorText(resp.Body))
	case s == http.StatusNotFound || s == http.StatusMethodNotAllowed || (s >= 300 && s < 400):
		r.Status = sdk.Retryable
		r.RetryAfter = configRetryAfter
		r.Reason = fmt.Sprintf("HTTP %d from %s: check base_url in this instance's config", s, SendPath)
	default:
		r.Status = sdk.Permanent
		r.Reason = fmt.Sprintf("SendGrid answered HTTP %d: %s", s, errorText(resp.Body))
	}
	return r
}

// rateLimitWait is the wait until X-RateLimit-Reset (epoch seconds), at
// least a second; a second when the header is absent or unreadable.
func rateLimitWait(h http.Header, now time.Time) time.Duration {
	reset, err := strconv.ParseInt(strings.TrimSpace(h.Get("X-RateLimit-Reset")), 10, 64)
	if err != nil {
		return defaultRateLimitWait
	}
	return max(time.Unix(reset, 0).Sub(now), time.Second)
}

// retryAfter reads a Retry-After header (seconds or an HTTP date); 0 when
// absent or unreadable, leaving the wait to the host's backoff.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		return max(time.Duration(secs)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// maxReasonLen bounds the provider text kept in a Reason.
const maxReasonLen = 1000

// errorText turns a SendGrid errors body into "field: message; message",
// or returns the body itself (shortened) when it is not one.
func errorText(body string) string {
	var eb struct {
		Errors []struct {
			Message string  `json:"message"`
			Field   *string `json:"field"`
		} `json:"errors"`
	}
	text := strings.TrimSpace(body)
	if json.Unmarshal([]byte(body), &eb) == nil && len(eb.Errors) > 0 {
		parts := make([]string, 0, len(eb.Errors))
		for _, e := range eb.Errors {
			if e.Field != nil && *e.Field != "" {
				parts = append(parts, *e.Field+": "+e.Message)
			} else {
				parts = append(parts, e.Message)
			}
		}
		text = strings.Join(parts, "; ")
	}
	if text == "" {
		text = "no details"
	}
	if len(text) > maxReasonLen {
		cut := maxReasonLen
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "..."
	}
	return strings.ToValidUTF8(text, "\uFFFD")
}
