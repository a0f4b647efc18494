package twiliochannel

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"sync/atomic"
)

// maxAnswer bounds how much of an API answer is read.
const maxAnswer = 1 << 20

// call is the network as one twilio-go API call sees it. twilio-go builds
// its requests with context.Background() and has no base-URL option, and on
// an HTTP error it returns only the decoded error body; so call
//
//   - sends the request under ctx (the message's deadline and the caller's
//     cancellation),
//   - points it at the configured base URL (scheme, host and path prefix),
//   - notes whether the request was completely written, which tells a
//     request that never left (safe to retry) from one whose answer was lost
//     (the provider may have the message),
//   - keeps the answer's status and headers (Retry-After), and
//   - reads the answer's body in full and closes it, because twilio-go does
//     not close the body of an error answer.
//
// A call serves one API call; it holds a context because twilio-go gives no
// other way to pass one.
type call struct {
	ctx  context.Context
	base *url.URL
	rt   http.RoundTripper

	written atomic.Bool

	mu     sync.Mutex
	status int
	header http.Header
}

var _ http.RoundTripper = (*call)(nil)

func (c *call) RoundTrip(req *http.Request) (*http.Response, error) {
	trace := &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				c.written.Store(true)
			}
		},
	}
	out := req.Clone(httptrace.WithClientTrace(c.ctx, trace))
	out.URL.Scheme = c.base.Scheme
	out.URL.Host = c.base.Host
	out.URL.Path = c.base.Path + req.URL.Path
	out.URL.RawPath = ""
	out.Host = ""
	resp, err := c.rt.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.status, c.header = resp.StatusCode, resp.Header
	c.mu.Unlock()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	_ = resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading twilio's answer (HTTP %d): %w", resp.StatusCode, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// answer returns the status and headers of the answer, if one came.
func (c *call) answer() (int, http.Header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status, c.header
}

// newTransport returns the connection pool one configured channel shares
// between its calls.
func newTransport(parallel int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = parallel
	return t
}
