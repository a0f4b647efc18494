package sendgridchannel

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/sdk"
)

// fixedNow is the clock of the channel and the server in tests that
// compare times.
var fixedNow = time.Unix(1_750_000_000, 0)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newChannel returns an unconfigured channel on the fixed clock whose log
// goes to the returned buffer and to the test's output.
func newChannel(t *testing.T) (*Channel, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	h := slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	c := NewWithLogger(slog.New(h))
	c.now = func() time.Time { return fixedNow }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("channel log:\n%s", logs.String())
		}
	})
	return c, logs
}

// startServer starts a local SendGrid on the fixed clock.
func startServer(t *testing.T, cfg sgserver.Config) *sgserver.Server {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return fixedNow }
	}
	s, err := sgserver.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// configure configures c with config, failing the test on an error.
func configure(t *testing.T, c *Channel, config string) {
	t.Helper()
	_, err := c.Configure(t.Context(), sdk.ConfigureRequest{Instance: "sg", Config: []byte(config)})
	require.NoError(t, err, "config:\n%s", config)
}

// channelFor returns a channel configured against s with extra config lines.
func channelFor(t *testing.T, s *sgserver.Server, extra string) (*Channel, *syncBuffer) {
	t.Helper()
	c, logs := newChannel(t)
	configure(t, c, fmt.Sprintf("api_key: %s\nbase_url: %s\nwebhook_public_key: %s\n%s",
		s.APIKey(), s.URL, s.PublicKeyBase64(), extra))
	return c, logs
}

// msg returns a valid message to addr with key.
func msg(key, addr string) sdk.Message {
	return sdk.Message{
		Key:        key,
		CustomerID: "cust-" + key,
		To:         addr,
		From:       "News <news@example.com>",
		Subject:    "Hello",
		Text:       "Hello there",
		HTML:       "<p>Hello there</p>",
		Metadata:   map[string]string{"campaign": "spring"},
	}
}

// byKey indexes results by message key, failing on a duplicate.
func byKey(t *testing.T, results []sdk.Result) map[string]sdk.Result {
	t.Helper()
	m := make(map[string]sdk.Result, len(results))
	for _, r := range results {
		_, dup := m[r.Key]
		require.False(t, dup, "two results for %q", r.Key)
		m[r.Key] = r
	}
	return m
}

// sendMsg sends one message and returns its result.
func sendMsg(t *testing.T, c *Channel, m sdk.Message) sdk.Result {
	t.Helper()
	results, err := c.Send(t.Context(), []sdk.Message{m})
	require.NoError(t, err)
	require.Len(t, results, 1)
	require.Equal(t, m.Key, results[0].Key)
	return results[0]
}
