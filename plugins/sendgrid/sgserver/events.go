package sgserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Event Webhook headers.
const (
	SignatureHeader = "X-Twilio-Email-Event-Webhook-Signature"
	TimestampHeader = "X-Twilio-Email-Event-Webhook-Timestamp"
)

// postTimeout bounds PostEvents when ctx has no earlier deadline.
const postTimeout = 30 * time.Second

// Event is one Event Webhook event. It marshals as SendGrid sends it: the
// custom_args of the email become top-level keys, and a single category is
// a string, several an array.
type Event struct {
	Email     string
	Timestamp int64
	// Event is processed, dropped, delivered, deferred, bounce, open,
	// click, spamreport, unsubscribe, group_unsubscribe or
	// group_resubscribe.
	Event       string
	SGEventID   string
	SGMessageID string
	SMTPID      string
	Category    []string
	// Type is "bounce" or "blocked" for a bounce event.
	Type     string
	Reason   string
	Status   string
	Response string
	Attempt  string
	URL      string
	// ASMGroupID is the unsubscribe group, 0 for none.
	ASMGroupID int
	CustomArgs map[string]string
}

// MarshalJSON encodes e as SendGrid does.
func (e Event) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(e.CustomArgs)+12)
	for k, v := range e.CustomArgs {
		m[k] = v
	}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	m["email"] = e.Email
	m["timestamp"] = e.Timestamp
	m["event"] = e.Event
	set("sg_event_id", e.SGEventID)
	set("sg_message_id", e.SGMessageID)
	set("smtp-id", e.SMTPID)
	switch len(e.Category) {
	case 0:
	case 1:
		m["category"] = e.Category[0]
	default:
		m["category"] = e.Category
	}
	set("type", e.Type)
	set("reason", e.Reason)
	set("status", e.Status)
	set("response", e.Response)
	set("attempt", e.Attempt)
	set("url", e.URL)
	if e.ASMGroupID != 0 {
		m["asm_group_id"] = e.ASMGroupID
	}
	// SendGrid does not escape <, > and & (smtp-id is "<id@host>").
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// EventOptions chooses what EventsFor reports.
type EventOptions struct {
	// Bounce lists addresses that bounce (type "bounce", 550 5.1.1)
	// instead of being delivered.
	Bounce []string
	// Block lists addresses whose receiving server blocks the message
	// (a bounce event of type "blocked").
	Block []string
	// Drop lists addresses SendGrid drops instead of processing.
	Drop []string
	// Open and Click list addresses that also open the message, and click
	// https://example.com/offer in it.
	Open, Click []string
	// Time is the events' timestamp. Default: the server's clock.
	Time time.Time
}

// EventsFor returns the events SendGrid would post for every recipient of
// every accepted message (dropped ones included: SendGrid has them):
// processed then delivered, or what opts says instead.
func (s *Server) EventsFor(opts EventOptions) []Event {
	at := opts.Time
	if at.IsZero() {
		at = s.now()
	}
	in := func(list []string, addr string) bool {
		return slices.ContainsFunc(list, func(a string) bool { return strings.EqualFold(a, addr) })
	}
	var events []Event
	for _, m := range s.Accepted() {
		n := 0
		for pi, p := range m.Personalizations {
			args := m.CustomArgsOf(pi)
			for _, list := range [][]Address{p.To, p.Cc, p.Bcc} {
				for _, a := range list {
					n++
					base := Event{
						Email:       a.Email,
						Timestamp:   at.Unix(),
						SGMessageID: fmt.Sprintf("%s.filterdrecv-p3mdw1-756b745b58-kmzbl-18-%X-%d.0", m.MessageID, at.Unix(), n-1),
						SMTPID:      "<" + m.MessageID + "@ismtpd0039p1iad1.sendgrid.net>",
						Category:    m.Categories,
						CustomArgs:  args,
					}
					if m.ASM != nil {
						base.ASMGroupID = m.ASM.GroupID
					}
					ev := func(kind string, f func(*Event)) {
						e := base
						e.Event = kind
						e.SGEventID = newEventID()
						if f != nil {
							f(&e)
						}
						events = append(events, e)
					}
					if in(opts.Drop, a.Email) {
						ev("dropped", func(e *Event) { e.Reason = "Bounced Address" })
						continue
					}
					ev("processed", nil)
					switch {
					case in(opts.Bounce, a.Email):
						ev("bounce", func(e *Event) {
							e.Type, e.Status = "bounce", "5.1.1"
							e.Reason = "550 5.1.1 The email account that you tried to reach does not exist."
						})
						continue
					case in(opts.Block, a.Email):
						ev("bounce", func(e *Event) {
							e.Type, e.Status = "blocked", "5.7.1"
							e.Reason = "550 5.7.1 Message rejected due to local policy"
						})
						continue
					}
					ev("delivered", func(e *Event) { e.Response = "250 2.0.0 OK" })
					if in(opts.Open, a.Email) {
						ev("open", nil)
					}
					if in(opts.Click, a.Email) {
						ev("click", func(e *Event) { e.URL = "https://example.com/offer" })
					}
				}
			}
		}
	}
	return events
}

// newEventID returns an id like sg_event_id.
func newEventID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func marshalPublicKey(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// PublicKeyBase64 returns the Event Webhook verification key as SendGrid's
// settings page shows it: the base64 of the DER (PKIX) ECDSA P-256 public
// key.
func (s *Server) PublicKeyBase64() string { return s.pubB64 }

// Sign returns the X-Twilio-Email-Event-Webhook-Signature of a post made
// at timestamp (epoch seconds, as sent in the timestamp header): base64 of
// the ASN.1 ECDSA signature of SHA-256(timestamp || payload).
func (s *Server) Sign(timestamp string, payload []byte) (string, error) {
	h := sha256.New()
	h.Write([]byte(timestamp))
	h.Write(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, h.Sum(nil))
	if err != nil {
		return "", fmt.Errorf("sgserver: sign webhook payload: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// SignEvents encodes events as SendGrid posts them (a JSON array ending in
// CRLF) and signs the body as of at. It returns the body and the headers to
// send with it (Content-Type, signature, timestamp).
func (s *Server) SignEvents(events []Event, at time.Time) ([]byte, http.Header, error) {
	if events == nil {
		events = []Event{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(events); err != nil {
		return nil, nil, fmt.Errorf("sgserver: encode events: %w", err)
	}
	body := append(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), '\r', '\n')
	ts := strconv.FormatInt(at.Unix(), 10)
	sig, err := s.Sign(ts, body)
	if err != nil {
		return nil, nil, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "SendGrid Event API")
	h.Set(SignatureHeader, sig)
	h.Set(TimestampHeader, ts)
	return body, h, nil
}

// PostEvents signs events as of now and POSTs them to url as SendGrid's
// Event Webhook does. It returns the status the receiver answered with.
func (s *Server) PostEvents(ctx context.Context, url string, events []Event) (int, error) {
	body, h, err := s.SignEvents(events, s.now())
	if err != nil {
		return 0, err
	}
	return PostSigned(ctx, url, body, h)
}

// PostSigned POSTs a body and its headers (from SignEvents, possibly
// tampered with by a test) to url and returns the status.
func PostSigned(ctx context.Context, url string, body []byte, h http.Header) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, postTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("sgserver: event webhook request to %s: %w", url, err)
	}
	req.Header = h.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("sgserver: post events to %s: %w", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}
