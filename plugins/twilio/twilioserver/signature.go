package twilioserver

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"sort"
	"strings"
)

// SignatureHeader is the header Twilio signs its webhook requests with.
const SignatureHeader = "X-Twilio-Signature"

// Signature computes the X-Twilio-Signature of a form POST to fullURL, as
// Twilio does: base64(HMAC-SHA1(authToken, fullURL + for each form key in
// sorted order, the key followed by its value)). A key with several values
// contributes key+value once per value, values in sorted order.
//
// fullURL is the URL exactly as configured (scheme, host, port if any, path
// and query), which is why a webhook receiver must validate against the URL
// it was called at, not the one it thinks it serves.
func Signature(authToken, fullURL string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(fullURL)
	for _, k := range keys {
		vs := append([]string(nil), form[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
