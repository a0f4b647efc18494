// Package webhooksig signs and verifies the X-Cohort-Signature header that
// Cohort's webhook channel puts on every POST, for receivers written in Go.
//
// The header is
//
//	X-Cohort-Signature: t=1767225600,v1=5f2b…(64 hex digits)
//
// where t is the time of sending in Unix seconds and v1 is the lower-case
// hex HMAC-SHA256, keyed with the channel's secret, of the ASCII decimal t,
// a full stop, and the raw request body exactly as received:
//
//	v1 = hex(HMAC-SHA256(secret, t + "." + body))
//
// A receiver in any language verifies it so:
//  1. Split the header on "," and each part on the first "="; take t and
//     every v1 (there may be several while a secret is being rotated; other
//     keys are ignored, so later versions can be added).
//  2. Refuse the request when t is further than a tolerance (5 minutes is
//     usual) from the receiver's clock: this stops replays of old requests.
//  3. Compute the HMAC over the raw body bytes (before any JSON parsing)
//     and compare it with each v1 in constant time (hmac.compare_digest in
//     Python, crypto.timingSafeEqual in Node); accept when one matches.
//
// Deduplicate on the Idempotency-Key header: a message may be delivered
// more than once when a response was lost and the sender was configured to
// resend.
package webhooksig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header is the name of the signature header.
const Header = "X-Cohort-Signature"

// Errors returned (wrapped) by Verify; test with errors.Is.
var (
	// ErrMalformed: the header is missing or cannot be parsed.
	ErrMalformed = errors.New("malformed signature header")
	// ErrStale: the timestamp is outside the tolerance.
	ErrStale = errors.New("signature timestamp outside the tolerance")
	// ErrMismatch: no v1 matches the body and secret.
	ErrMismatch = errors.New("signature does not match")
)

// Sign returns the header value for body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks header (the X-Cohort-Signature value) against the raw body:
// its timestamp must be within tolerance of now (either side) and one of
// its v1 signatures must be the HMAC of the body under secret.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if len(secret) == 0 {
		return errors.New("webhook signature: empty secret")
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if sig, err := hex.DecodeString(v); err == nil && len(sig) == sha256.Size {
				sigs = append(sigs, sig)
			}
		}
	}
	if ts == "" || len(sigs) == 0 {
		return fmt.Errorf("webhook signature %q: want t=<unix seconds>,v1=<hex>: %w", header, ErrMalformed)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook signature: timestamp %q: %w", ts, ErrMalformed)
	}
	sent := time.Unix(sec, 0)
	if d := now.Sub(sent); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook signature: sent at %s, %v from now (tolerance %v): %w", sent.UTC().Format(time.RFC3339), d.Round(time.Second), tolerance, ErrStale)
	}
	want := mac(secret, ts, body)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return fmt.Errorf("webhook signature: %w", ErrMismatch)
}
