// Package unsubscribe signs unsubscribe links and serves /unsubscribe
// (DESIGN.md section 5, "Messages"; RFC 8058 one-click unsubscribe).
//
// A link is http.public_url + "/unsubscribe?t=<token>". The token is
// base64url (no padding) of a versioned payload (customer id, channel kind,
// campaign, issue time) followed by its HMAC-SHA256 under the daemon's
// unsubscribe key, so the daemon can honour a link without storing it.
// A token is valid for the signer's ttl: at least 60 days (CAN-SPAM wants
// the mechanism alive for 30 days after a message), 90 by default.
//
// Configuration (read by the daemon's config, passed to NewSigner):
//
//	key: at least 32 random bytes (e.g. `openssl rand -hex 32`); rotating it
//	     invalidates every link already sent
//	ttl: how long a link works, at least 60 days, default 90 days
//
// Email carries Headers(url): List-Unsubscribe always, and
// List-Unsubscribe-Post: List-Unsubscribe=One-Click when the url is https
// (RFC 8058 also needs a DKIM signature covering both headers).
package unsubscribe

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Claims is what an unsubscribe link stands for.
type Claims struct {
	CustomerID string
	// Kind is the channel kind the customer leaves (email, sms).
	Kind string
	// Campaign is the campaign whose message carried the link.
	Campaign string
	// Issued is when the link was made (kept to the second); the token
	// expires ttl after it. Set it: a zero Issued is long expired.
	Issued time.Time
}

// Key and lifetime limits.
const (
	MinKeyLen  = 32
	MinTTL     = 60 * 24 * time.Hour
	DefaultTTL = 90 * 24 * time.Hour
)

const (
	tokenVersion = 1
	macLen       = sha256.Size
	// maxField bounds each string in a token, so a forged length cannot
	// make Verify allocate much.
	maxField = 1024
	// macContext separates these MACs from any other use of the key.
	macContext = "cohort unsubscribe token\x00"
)

// Verify's errors; test with errors.Is.
var (
	ErrMalformed    = errors.New("unsubscribe token is malformed")
	ErrBadSignature = errors.New("unsubscribe token signature does not match")
	ErrExpired      = errors.New("unsubscribe token has expired")
)

// Signer makes and checks unsubscribe tokens. It is immutable and safe for
// concurrent use.
type Signer struct {
	key []byte
	ttl time.Duration
}

// NewSigner returns a signer with key (at least 32 bytes) whose tokens are
// valid for ttl (0 means 90 days; at least 60 days).
func NewSigner(key []byte, ttl time.Duration) (*Signer, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("unsubscribe key is %d bytes: use at least %d random bytes (e.g. the output of `openssl rand -hex 32`)", len(key), MinKeyLen)
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < MinTTL {
		return nil, fmt.Errorf("unsubscribe link lifetime %s is too short: set at least 60 days (CAN-SPAM keeps opt-out working 30 days after a message)", ttl)
	}
	return &Signer{key: append([]byte(nil), key...), ttl: ttl}, nil
}

// TTL is how long a token is valid after it was issued.
func (s *Signer) TTL() time.Duration { return s.ttl }

// Token returns the compact, URL-safe token for c.
func (s *Signer) Token(c Claims) string {
	p := make([]byte, 0, 16+len(c.CustomerID)+len(c.Kind)+len(c.Campaign)+macLen)
	p = append(p, tokenVersion)
	p = binary.AppendVarint(p, c.Issued.Unix())
	for _, f := range []string{c.CustomerID, c.Kind, c.Campaign} {
		p = binary.AppendUvarint(p, uint64(len(f)))
		p = append(p, f...)
	}
	p = append(p, s.mac(p)...)
	return base64.RawURLEncoding.EncodeToString(p)
}

func (s *Signer) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(macContext))
	m.Write(payload)
	return m.Sum(nil)
}

// Verify checks token and returns its claims. The errors are ErrMalformed,
// ErrBadSignature and ErrExpired (wrapped; the expiry says when).
func (s *Signer) Verify(token string, now time.Time) (Claims, error) {
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) < 1+macLen {
		return Claims{}, ErrMalformed
	}
	if raw[0] != tokenVersion {
		return Claims{}, fmt.Errorf("%w: unknown version %d", ErrMalformed, raw[0])
	}
	payload, sum := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	if !hmac.Equal(sum, s.mac(payload)) {
		return Claims{}, ErrBadSignature
	}
	// The payload is ours (the MAC matched); parse it carefully anyway.
	p := payload[1:]
	issued, n := binary.Varint(p)
	if n <= 0 {
		return Claims{}, ErrMalformed
	}
	p = p[n:]
	var fields [3]string
	for i := range fields {
		l, n := binary.Uvarint(p)
		if n <= 0 || l > maxField || l > uint64(len(p)-n) {
			return Claims{}, ErrMalformed
		}
		fields[i] = string(p[n : n+int(l)])
		p = p[n+int(l):]
	}
	if len(p) != 0 {
		return Claims{}, ErrMalformed
	}
	c := Claims{CustomerID: fields[0], Kind: fields[1], Campaign: fields[2], Issued: time.Unix(issued, 0).UTC()}
	if expires := c.Issued.Add(s.ttl); now.After(expires) {
		return c, fmt.Errorf("%w: it was valid until %s", ErrExpired, expires.Format(time.RFC3339))
	}
	return c, nil
}

// URL is the unsubscribe link for c under publicURL (config
// http.public_url): publicURL + "/unsubscribe?t=" + token.
func (s *Signer) URL(publicURL string, c Claims) string {
	return strings.TrimRight(publicURL, "/") + "/unsubscribe?t=" + s.Token(c)
}

// Headers are the email headers for an unsubscribe url: List-Unsubscribe
// always; List-Unsubscribe-Post: List-Unsubscribe=One-Click only when the
// url is https, as RFC 8058 requires (it also requires DKIM covering both).
// An empty url gives no headers.
func Headers(rawURL string) []sdk.Header {
	if rawURL == "" {
		return nil
	}
	hs := []sdk.Header{{Name: "List-Unsubscribe", Values: []string{"<" + rawURL + ">"}}}
	if u, err := url.Parse(rawURL); err == nil && strings.EqualFold(u.Scheme, "https") && u.Host != "" {
		hs = append(hs, sdk.Header{Name: "List-Unsubscribe-Post", Values: []string{"List-Unsubscribe=One-Click"}})
	}
	return hs
}
