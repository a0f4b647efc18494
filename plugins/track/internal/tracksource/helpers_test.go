package tracksource

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
)

const (
	testKey  = "test-key-0123456789abcdef"
	otherKey = "second-key-0123456789abcdef"
)

// baseConfig is the config most tests use.
const baseConfig = `
write_keys: [test-key-0123456789abcdef, second-key-0123456789abcdef]
traits:
  email: string
  first_name: {type: string, from: firstName}
  city: {type: string, from: address.city}
  plan: string
  ltv: number
  vip: bool
  signed_up_at: {type: time, from: createdAt}
  tags: list
events: [Order Completed, Signed Up]
`

// received is the test clock: when every request arrives.
var received = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// newTestSource returns a Source configured with config, whose clock reads
// received and whose logs (debug and up) go to the returned buffer and the
// test's output.
func newTestSource(t *testing.T, config string) (*Source, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	h := slog.NewTextHandler(io.MultiWriter(logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug})
	s := New(WithLogger(slog.New(h)), WithClock(func() time.Time { return received }))
	if _, err := s.Configure(t.Context(), sdk.ConfigureRequest{Instance: "web", Config: []byte(config), WebhookPath: "/webhooks/web"}); err != nil {
		t.Fatalf("Configure: %v\nconfig:\n%s", err, config)
	}
	return s, logs
}

// reqOpt changes a test request.
type reqOpt func(*sdk.WebhookRequest)

func basicAuth(key, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":"+password))
}

// withAuth sets the Authorization header (replacing the default one);
// "" removes it.
func withAuth(value string) reqOpt {
	return func(r *sdk.WebhookRequest) {
		var hs []sdk.Header
		for _, h := range r.Headers {
			if !strings.EqualFold(h.Name, "Authorization") {
				hs = append(hs, h)
			}
		}
		if value != "" {
			hs = append(hs, sdk.Header{Name: "Authorization", Values: []string{value}})
		}
		r.Headers = hs
	}
}

func withHeader(name, value string) reqOpt {
	return func(r *sdk.WebhookRequest) {
		r.Headers = append(r.Headers, sdk.Header{Name: name, Values: []string{value}})
	}
}

func withMethod(m string) reqOpt { return func(r *sdk.WebhookRequest) { r.Method = m } }

// gzipped compresses the body and says so in Content-Encoding.
func gzipped(r *sdk.WebhookRequest) {
	r.Body = gzipBytes(r.Body)
	r.Headers = append(r.Headers, sdk.Header{Name: "Content-Encoding", Values: []string{"gzip"}})
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// post builds a POST to path with body, authenticated with testKey.
func post(path, body string, opts ...reqOpt) *sdk.WebhookRequest {
	r := &sdk.WebhookRequest{
		Method:  "POST",
		URL:     "https://cohort.example.com/webhooks/web" + path,
		Path:    path,
		Headers: []sdk.Header{{Name: "Content-Type", Values: []string{"application/json"}}, {Name: "Authorization", Values: []string{basicAuth(testKey, "")}}},
		Body:    []byte(body),
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// call sends req to s and fails the test on an error return.
func call(t *testing.T, s *Source, req *sdk.WebhookRequest) *sdk.SourceWebhookResponse {
	t.Helper()
	resp, err := s.Webhook(t.Context(), req)
	if err != nil {
		t.Fatalf("Webhook(%s %s): %v", req.Method, req.Path, err)
	}
	if resp == nil {
		t.Fatalf("Webhook(%s %s): nil response", req.Method, req.Path)
	}
	return resp
}

// errorBody decodes a JSON error answer.
type errorBody struct {
	Success bool   `json:"success"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func decodeError(t *testing.T, body []byte) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("response body %q is not JSON: %v", body, err)
	}
	return e
}

func header(resp sdk.HTTPResponse, name string) string {
	for _, h := range resp.Headers {
		if strings.EqualFold(h.Name, name) && len(h.Values) > 0 {
			return h.Values[0]
		}
	}
	return ""
}

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// batchOf wraps items in a /v1/batch body.
func batchOf(extra string, items ...string) string {
	body := `{"batch":[` + strings.Join(items, ",") + `]`
	if extra != "" {
		body += "," + extra
	}
	return body + "}"
}
