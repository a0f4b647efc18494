package tracksource

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Size limits of Segment's HTTP Tracking API, which analytics SDKs already
// respect: 32 KB per message and 500 KB per batch request, counted on the
// uncompressed JSON. (The SDKs count in decimal kilobytes; accepting binary
// ones is the lenient reading.)
const (
	maxMessageBytes = 32 << 10
	maxBatchBytes   = 500 << 10
)

// route is what an endpoint below the instance's webhook path receives.
type route struct {
	typ   callType // for single calls
	batch bool
}

// routes are the endpoints of Segment's HTTP Tracking API, and the one-letter
// forms analytics.js (Analytics 2.0) posts to: /v1/t, /v1/i, ... and /v1/b
// in batching mode. /v1/import is the old name of /v1/batch.
var routes = map[string]route{
	"/v1/identify": {typ: callIdentify}, "/v1/i": {typ: callIdentify},
	"/v1/track": {typ: callTrack}, "/v1/t": {typ: callTrack},
	"/v1/page": {typ: callPage}, "/v1/p": {typ: callPage},
	"/v1/screen": {typ: callScreen}, "/v1/s": {typ: callScreen},
	"/v1/alias": {typ: callAlias}, "/v1/a": {typ: callAlias},
	"/v1/group": {typ: callGroup}, "/v1/g": {typ: callGroup},
	"/v1/batch": {batch: true}, "/v1/b": {batch: true}, "/v1/import": {batch: true},
}

// typeName is what an unknown call type must look like to be quoted in a
// problem.
var typeName = regexp.MustCompile(`^[A-Za-z_]{1,32}$`)

// httpError is a request the plugin refuses, answered with a JSON error.
type httpError struct {
	status int
	code   string
	msg    string
}

func reject(status int, code, format string, args ...any) *httpError {
	return &httpError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// corsHeaders let browsers (analytics.js) post from any origin: write keys
// are public in web pages anyway, and no cookies are used.
var corsHeaders = []sdk.Header{
	{Name: "Access-Control-Allow-Origin", Values: []string{"*"}},
}

var preflightHeaders = append([]sdk.Header{
	{Name: "Access-Control-Allow-Methods", Values: []string{"POST, OPTIONS"}},
	{Name: "Access-Control-Allow-Headers", Values: []string{"Authorization, Content-Type, Content-Encoding"}},
	{Name: "Access-Control-Max-Age", Values: []string{"86400"}},
}, corsHeaders...)

var okBody = []byte(`{"success":true}`)

func jsonResponse(status int, body []byte, extra ...sdk.Header) sdk.HTTPResponse {
	h := append([]sdk.Header{{Name: "Content-Type", Values: []string{"application/json"}}}, corsHeaders...)
	return sdk.HTTPResponse{Status: status, Headers: append(h, extra...), Body: body}
}

func (e *httpError) response() sdk.HTTPResponse {
	body, _ := json.Marshal(struct {
		Success bool   `json:"success"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}{false, e.code, e.msg})
	var extra []sdk.Header
	switch e.status {
	case http.StatusUnauthorized:
		extra = append(extra, sdk.Header{Name: "WWW-Authenticate", Values: []string{`Basic realm="cohort"`}})
	case http.StatusMethodNotAllowed:
		extra = append(extra, sdk.Header{Name: "Allow", Values: []string{"POST, OPTIONS"}})
	}
	return jsonResponse(e.status, body, extra...)
}

// handle answers one request. It never fails: a bad request is answered
// with an error status and nothing to commit.
func (st *state) handle(req *sdk.WebhookRequest, receivedAt time.Time, log *slog.Logger) *sdk.SourceWebhookResponse {
	if req.Method == http.MethodOptions {
		return &sdk.SourceWebhookResponse{Response: sdk.HTTPResponse{Status: http.StatusNoContent, Headers: preflightHeaders}}
	}
	b, herr := st.request(req, receivedAt, log)
	if herr != nil {
		st.count(log, "rejected", herr.code)
		return &sdk.SourceWebhookResponse{Response: herr.response()}
	}
	return &sdk.SourceWebhookResponse{Response: jsonResponse(http.StatusOK, okBody), Batch: b}
}

func (st *state) request(req *sdk.WebhookRequest, receivedAt time.Time, log *slog.Logger) (*sdk.Batch, *httpError) {
	path := req.Path
	if len(path) > 1 {
		path = strings.TrimSuffix(path, "/")
	}
	rt, ok := routes[path]
	if !ok {
		return nil, reject(http.StatusNotFound, "not_found", "no endpoint %q here; post to /v1/batch, /v1/identify, /v1/track, /v1/page, /v1/screen, /v1/alias or /v1/group", path)
	}
	if req.Method != http.MethodPost {
		return nil, reject(http.StatusMethodNotAllowed, "method_not_allowed", "use POST, not %s", req.Method)
	}

	// A key in the Authorization header is checked before the body is read.
	key, inHeader, herr := basicKey(req.Header("Authorization"))
	if herr != nil {
		return nil, herr
	}
	if inHeader && !st.keyOK(key) {
		return nil, reject(http.StatusUnauthorized, "invalid_write_key", "the write key is not valid for this source")
	}

	limit := maxMessageBytes
	if rt.batch {
		limit = maxBatchBytes
	}
	body, herr := readBody(req, limit)
	if herr != nil {
		return nil, herr
	}

	bl := newBuilder(st, log, receivedAt)
	if !rt.batch {
		var msg map[string]any
		if herr := decodeObject(body, &msg); herr != nil {
			return nil, herr
		}
		if !inHeader && !st.keyOK(bodyKey(msg)) {
			return nil, missingKey(bodyKey(msg))
		}
		bl.add(rt.typ, msg, "")
		return bl.batch(), nil
	}

	var top map[string]json.RawMessage
	if herr := decodeObject(body, &top); herr != nil {
		return nil, herr
	}
	raw, ok := top["batch"]
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, reject(http.StatusBadRequest, "invalid_request", `the body has no "batch"; send {"batch": [messages...]}`)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, reject(http.StatusBadRequest, "invalid_request", `"batch" must be a list of messages`)
	}
	for i, item := range items {
		if len(item) > maxMessageBytes {
			return nil, reject(http.StatusBadRequest, "message_too_large", "batch item %d is %d bytes; a message may have at most %d bytes (32 KB); nothing in this batch was accepted", i, len(item), maxMessageBytes)
		}
	}
	msgs := make([]map[string]any, len(items))
	for i, item := range items {
		// Not an object: reported below, as the item's problem.
		_ = decodeObject(item, &msgs[i])
	}
	if !inHeader {
		key, _ := decodeValue(top["writeKey"]).(string)
		if key == "" && len(msgs) > 0 {
			key = bodyKey(msgs[0])
		}
		if !st.keyOK(key) {
			return nil, missingKey(key)
		}
	}
	bl.sentAt = decodeValue(top["sentAt"])
	bl.context, _ = decodeValue(top["context"]).(map[string]any)
	for i, msg := range msgs {
		where := fmt.Sprintf("batch item %d", i)
		if msg == nil {
			bl.problem("", "batch", "%s is %s, not a message object; it was skipped", where, kindOfRaw(items[i]))
			continue
		}
		ts, _ := msg["type"].(string)
		typ, ok := parseCallType(ts)
		if !ok {
			switch {
			case ts == "":
				bl.problem("", "type", "%s has no type; it was skipped (use identify, track, page, screen, alias or group)", where)
			case typeName.MatchString(ts):
				bl.problem("", "type", "%s has type %q; it was skipped (use identify, track, page, screen, alias or group)", where, ts)
			default:
				// Not quoted: it could be anything, personal data included.
				bl.problem("", "type", "%s has an unknown type; it was skipped (use identify, track, page, screen, alias or group)", where)
			}
			continue
		}
		bl.add(typ, msg, where)
	}
	return bl.batch(), nil
}

func missingKey(key string) *httpError {
	if key == "" {
		return reject(http.StatusUnauthorized, "missing_write_key", "no write key: send it as the HTTP Basic user name (empty password) or as \"writeKey\" in the body")
	}
	return reject(http.StatusUnauthorized, "invalid_write_key", "the write key is not valid for this source")
}

func bodyKey(msg map[string]any) string {
	k, _ := msg["writeKey"].(string)
	return k
}

// basicKey reads the write key from an HTTP Basic Authorization header: the
// user name; the password is ignored (Segment's SDKs send it empty).
func basicKey(h string) (key string, present bool, herr *httpError) {
	h = strings.TrimSpace(h)
	if h == "" {
		return "", false, nil
	}
	scheme, cred, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", true, reject(http.StatusUnauthorized, "invalid_authorization", "Authorization must be HTTP Basic with the write key as the user name and an empty password")
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", true, reject(http.StatusUnauthorized, "invalid_authorization", "the Authorization header is not valid base64")
	}
	user, _, _ := strings.Cut(string(dec), ":")
	return user, true, nil
}

// keyOK reports whether key is one of the configured write keys, comparing
// in constant time.
func (st *state) keyOK(key string) bool {
	if key == "" {
		return false
	}
	sum := sha256.Sum256([]byte(key))
	ok := 0
	for _, k := range st.set.keys {
		ok |= subtle.ConstantTimeCompare(sum[:], k[:])
	}
	return ok == 1
}

// readBody returns the request body, gunzipped when it is gzip-encoded,
// refusing bodies larger than limit once uncompressed.
func readBody(req *sdk.WebhookRequest, limit int) ([]byte, *httpError) {
	body := req.Body
	gz := false
	switch enc := strings.ToLower(strings.TrimSpace(req.Header("Content-Encoding"))); enc {
	case "gzip", "x-gzip":
		gz = true
	case "", "identity":
		// A gzip stream cannot be JSON: take it as gzip, for clients that
		// compress without saying so.
		gz = len(body) >= 2 && body[0] == 0x1f && body[1] == 0x8b
	default:
		return nil, reject(http.StatusUnsupportedMediaType, "unsupported_encoding", "Content-Encoding %q is not supported; send gzip or no encoding", enc)
	}
	if gz {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, reject(http.StatusBadRequest, "invalid_gzip", "the body is not valid gzip: %v", err)
		}
		body, err = io.ReadAll(io.LimitReader(zr, int64(limit)+1))
		if err == nil && len(body) <= limit {
			err = zr.Close()
		}
		if err != nil {
			return nil, reject(http.StatusBadRequest, "invalid_gzip", "the body is not valid gzip: %v", err)
		}
	}
	if len(body) > limit {
		what := "a single call"
		if limit == maxBatchBytes {
			what = "a batch"
		}
		return nil, reject(http.StatusBadRequest, "request_too_large", "the body is over %d bytes uncompressed, the limit for %s (32 KB per message, 500 KB per batch); send smaller batches", limit, what)
	}
	return body, nil
}

// decodeObject decodes one JSON object (numbers as json.Number) and nothing
// after it.
func decodeObject[T any](data []byte, v *T) *httpError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field == "" {
			return reject(http.StatusBadRequest, "invalid_json", "the body must be a JSON object, not %s", ute.Value)
		}
		return reject(http.StatusBadRequest, "invalid_json", "malformed JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return reject(http.StatusBadRequest, "invalid_json", "malformed JSON: data after the end of the object")
	}
	if isNilMap(v) {
		return reject(http.StatusBadRequest, "invalid_json", "the body must be a JSON object, not null")
	}
	return nil
}

func isNilMap[T any](v *T) bool {
	switch m := any(*v).(type) {
	case map[string]any:
		return m == nil
	case map[string]json.RawMessage:
		return m == nil
	}
	return false
}

// decodeValue decodes a JSON value already checked to be valid (numbers as
// json.Number); nil when raw is empty.
func decodeValue(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return nil
	}
	return v
}

// kindOfRaw describes a JSON value that is not an object.
func kindOfRaw(raw json.RawMessage) string {
	return kind(decodeValue(raw))
}
