package webhooksig

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	secret = []byte("test-secret-not-real")
	body   = []byte(`{"key":"k-1","to":"https://example.com/hook"}`)
	sentAt = time.Unix(1767225600, 0)
)

// TestKnownVector pins the format: the HMAC was computed independently with
// `printf '1767225600.{"key":"k-1","to":"https://example.com/hook"}' |
// openssl dgst -sha256 -hmac test-secret-not-real`.
func TestKnownVector(t *testing.T) {
	const want = "t=1767225600,v1=3352fa8f4934fc5e4a254caaaf024740cae57f99b2ad23e37fae09c0aa89029b"
	if got := Sign(secret, sentAt, body); got != want {
		t.Errorf("Sign = %s\nwant   %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	good := Sign(secret, sentAt, body)
	other := Sign([]byte("another-secret"), sentAt, body)
	tests := []struct {
		name, header string
		body         []byte
		now          time.Time
		want         error
	}{
		{"good", good, body, sentAt.Add(2 * time.Minute), nil},
		{"clock behind", good, body, sentAt.Add(-2 * time.Minute), nil},
		{"rotation: second v1 matches", other + ",v1=" + strings.SplitN(good, "v1=", 2)[1], body, sentAt, nil},
		{"unknown keys ignored", good + ",v2=zzz", body, sentAt, nil},
		{"tampered body", good, []byte(`{"key":"k-2","to":"https://example.com/hook"}`), sentAt, ErrMismatch},
		{"wrong secret", other, body, sentAt, ErrMismatch},
		{"tampered timestamp", strings.Replace(good, "t=1767225600", "t=1767225601", 1), body, sentAt, ErrMismatch},
		{"stale", good, body, sentAt.Add(6 * time.Minute), ErrStale},
		{"from the future", good, body, sentAt.Add(-6 * time.Minute), ErrStale},
		{"empty", "", body, sentAt, ErrMalformed},
		{"no v1", "t=1767225600", body, sentAt, ErrMalformed},
		{"bad hex", "t=1767225600,v1=xyz", body, sentAt, ErrMalformed},
		{"bad t", "t=soon,v1=" + strings.SplitN(good, "v1=", 2)[1], body, sentAt, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(secret, tt.header, tt.body, tt.now, 5*time.Minute)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	if err := Verify(nil, good, body, sentAt, time.Minute); err == nil {
		t.Error("Verify with an empty secret succeeded")
	}
}
