package pluginhost_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/daemon/config"
	"github.com/cohortd/cohort/daemon/pluginhost"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// testPlugin builds the test plugin once per test process and returns its path.
func testPlugin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "cohort-testplugin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, "testplugin"), "./internal/testplugin")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("build testplugin: %v\n%s", err, stderr.String())
		}
	})
	require.NoError(t, buildErr)
	return filepath.Join(buildDir, "testplugin")
}

// pluginAs returns a copy of the test plugin under another name in dir (the
// plugin picks its pre-handshake behaviour from its name).
func pluginAs(t *testing.T, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(testPlugin(t))
	require.NoError(t, err)
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, data, 0o755))
	return p
}

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

// newHost loads a config written to a temp dir and starts a host on it.
func newHost(t *testing.T, dir, yaml string) (*pluginhost.Host, *logBuffer) {
	t.Helper()
	p := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte(yaml), 0o644))
	cfg, err := config.Load(p)
	require.NoError(t, err)
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := pluginhost.New(cfg, log, prometheus.NewRegistry(), pluginhost.Options{StartTimeout: 5 * time.Second, HealthInterval: 500 * time.Millisecond})
	h.Start(context.Background())
	t.Cleanup(h.Close)
	return h, logs
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func msg(key, subject string) sdk.Message {
	return sdk.Message{Key: key, CustomerID: "c1", To: "https://hooks.example.com/x", Subject: subject}
}

func TestSendAfterPluginSIGKILLedMidSend(t *testing.T) {
	dir := t.TempDir()
	bin := pluginAs(t, dir, "testplugin")
	h, _ := newHost(t, dir, fmt.Sprintf("channels:\n  hook:\n    plugin: %s\n    timeout: 30s\n", bin))
	ctx := waitCtx(t)
	require.Empty(t, h.WaitStarted(ctx))
	ch, err := h.Channel("hook")
	require.NoError(t, err)

	res, err := ch.Send(ctx, []sdk.Message{msg("k1", "hello")})
	require.NoError(t, err)
	require.Len(t, res, 1)
	firstPID := h.Instance("hook").Status().PID
	require.NotZero(t, firstPID)

	// A Send that blocks inside the plugin; kill the plugin while it waits.
	errc := make(chan error, 1)
	go func() {
		_, err := ch.Send(ctx, []sdk.Message{msg("k2", "block")})
		errc <- err
	}()
	marker := filepath.Join(dir, "sending")
	require.Eventually(t, func() bool { _, err := os.Stat(marker); return err == nil }, 30*time.Second, 20*time.Millisecond)
	require.NoError(t, syscall.Kill(firstPID, syscall.SIGKILL))
	select {
	case err := <-errc:
		require.Error(t, err, "a Send whose plugin died must fail, not succeed")
	case <-ctx.Done():
		t.Fatal("Send did not return after its plugin was killed")
	}

	// The next call goes to a fresh process and succeeds.
	res, err = ch.Send(ctx, []sdk.Message{msg("k3", "hello again")})
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.Equal(t, sdk.Accepted, res[0].Status)
	st := h.Instance("hook").Status()
	require.Equal(t, pluginhost.StateRunning, st.State)
	require.GreaterOrEqual(t, st.Restarts, 1)
	require.NotEqual(t, firstPID, st.PID)
	require.True(t, strings.HasPrefix(res[0].ProviderID, "test-"+strconv.Itoa(st.PID)+"-"), "answered by the new process: %s", res[0].ProviderID)
}

func TestCrashedPluginIsReplacedByHealthCheck(t *testing.T) {
	dir := t.TempDir()
	bin := pluginAs(t, dir, "testplugin")
	h, _ := newHost(t, dir, fmt.Sprintf("channels:\n  hook:\n    plugin: %s\n", bin))
	ctx := waitCtx(t)
	require.Empty(t, h.WaitStarted(ctx))
	pid := h.Instance("hook").Status().PID
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		st := h.Instance("hook").Status()
		return st.State == pluginhost.StateRunning && st.PID != 0 && st.PID != pid
	}, 60*time.Second, 50*time.Millisecond, "a killed idle plugin must be detected and replaced")
}

func TestChecksum(t *testing.T) {
	dir := t.TempDir()
	bin := pluginAs(t, dir, "testplugin")
	good, err := exec.Command("sha256sum", bin).Output()
	require.NoError(t, err)
	sum := strings.Fields(string(good))[0]
	wrong := strings.Repeat("ab", 32)
	h, logs := newHost(t, dir, fmt.Sprintf(`channels:
  pinned_ok:
    plugin: %[1]s
    sha256: %[2]s
  pinned_wrong:
    plugin: %[1]s
    sha256: %[3]s
`, bin, sum, wrong))
	errs := h.WaitStarted(waitCtx(t))
	require.NotContains(t, errs, "pinned_ok")
	require.Equal(t, sum, h.Instance("pinned_ok").Status().SHA256)
	require.Contains(t, errs, "pinned_wrong")
	msg := errs["pinned_wrong"].Error()
	require.Contains(t, msg, `channel "pinned_wrong"`)
	require.Contains(t, msg, fmt.Sprintf("has sha256 %s but the config pins %s; refusing to run it", sum, wrong))
	require.Equal(t, pluginhost.StateFailed, h.Instance("pinned_wrong").Status().State)
	require.Contains(t, logs.String(), `"instance":"pinned_wrong"`)
	// The failed instance does not disturb the good one.
	ch, err := h.Channel("pinned_ok")
	require.NoError(t, err)
	_, err = ch.Send(waitCtx(t), []sdk.Message{msg1()})
	require.NoError(t, err)
}

func msg1() sdk.Message { return msg("k1", "hi") }

// TestBadPlugins: each broken plugin gives a clear error naming its
// instance, and a good instance beside them keeps working.
func TestBadPlugins(t *testing.T) {
	dir := t.TempDir()
	good := pluginAs(t, dir, "testplugin")
	stdoutFirst := pluginAs(t, dir, "stdout-first")
	hang := pluginAs(t, dir, "hang")
	v99 := pluginAs(t, dir, "v99")
	writable := pluginAs(t, dir, "writable")
	require.NoError(t, os.Chmod(writable, 0o777))
	h, logs := newHost(t, dir, fmt.Sprintf(`sources:
  not_a_source:
    plugin: %[1]s
channels:
  good:
    plugin: %[1]s
  missing:
    plugin: %[2]s/does-not-exist
  stdout_first:
    plugin: %[3]s
  hangs:
    plugin: %[4]s
  old_protocol:
    plugin: %[5]s
  world_writable:
    plugin: %[6]s
  bad_config:
    plugin: %[1]s
    config:
      fail_configure: true
`, good, dir, stdoutFirst, hang, v99, writable))
	errs := h.WaitStarted(waitCtx(t))
	want := map[string]string{
		"not_a_source":   `source "not_a_source": plugin ` + good + ` does not serve a source`,
		"missing":        `channel "missing": plugin binary ` + dir + `/does-not-exist not found; run ` + "`make build`",
		"stdout_first":   `channel "stdout_first": start plugin ` + stdoutFirst + `: the plugin wrote to stdout before its handshake`,
		"hangs":          `channel "hangs": start plugin ` + hang + `: the plugin did not complete its handshake in time`,
		"old_protocol":   `channel "old_protocol": start plugin ` + v99 + `: the plugin speaks a protocol version this daemon does not`,
		"world_writable": `channel "world_writable": plugin binary ` + writable + ` is world-writable`,
		"bad_config":     `channel "bad_config": invalid plugin config: fail_configure`,
	}
	for name, prefix := range want {
		require.Contains(t, errs, name)
		require.True(t, strings.HasPrefix(errs[name].Error(), prefix), "%s:\n got  %s\n want prefix %s", name, errs[name], prefix)
	}
	require.NotContains(t, errs, "good")
	ch, err := h.Channel("good")
	require.NoError(t, err)
	res, err := ch.Send(waitCtx(t), []sdk.Message{msg1()})
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.Contains(t, logs.String(), `"instance":"stdout_first"`)
}

func TestWebhookForwarding(t *testing.T) {
	dir := t.TempDir()
	bin := pluginAs(t, dir, "testplugin")
	h, _ := newHost(t, dir, fmt.Sprintf("channels:\n  hook:\n    plugin: %s\n", bin))
	require.Empty(t, h.WaitStarted(waitCtx(t)))
	require.True(t, h.Instance("hook").ChannelInfo().Webhooks)
	require.False(t, h.Instance("hook").NoDeliveryEvents(), "a channel with a webhook may report delivery events")
	mux := http.NewServeMux()
	sink := &recordingSink{}
	mux.Handle("/webhooks/{instance}/{rest...}", h.WebhookHandler("https://cohort.example.com/", sink))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, err := http.NewRequest("POST", srv.URL+"/webhooks/hook/v1/events?a=1&b=2", strings.NewReader(`{"raw":true}`))
	require.NoError(t, err)
	req.Header.Set("X-Signature", "abc")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 202, resp.StatusCode)
	require.Equal(t, "yes", resp.Header.Get("X-Test"))
	require.Equal(t, `POST https://cohort.example.com/webhooks/hook/v1/events?a=1&b=2 /v1/events {"raw":true} sig=abc`, string(body))

	resp, err = http.Post(srv.URL+"/webhooks/nobody/x", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 404, resp.StatusCode)
}

type recordingSink struct{}

func (*recordingSink) SourceBatch(context.Context, string, *sdk.Batch) error { return nil }
func (*recordingSink) DeliveryEvents(context.Context, string, []sdk.DeliveryEvent) error {
	return nil
}

// TestSourcePullFlat pulls a real source plugin (csv) through the host in
// flat form, as ingestion does, and in map form, and gets the same data.
func TestSourcePullFlat(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "crm.csv")
	require.NoError(t, os.WriteFile(csv, []byte("customer_id,email,plan\nc1,ada@example.com,pro\nc2,grace@example.com,\n"), 0o644))
	bin := sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/csv")
	h, _ := newHost(t, dir, fmt.Sprintf("sources:\n  crm:\n    plugin: %s\n    config:\n      path: %s\n      id_column: customer_id\n      email: email\n      watch: false\n", bin, csv))
	ctx := waitCtx(t)
	require.Empty(t, h.WaitStarted(ctx))
	src, err := h.Source("crm")
	require.NoError(t, err)

	var flat []sdk.Customer
	require.NoError(t, sdk.PullFlat(ctx, src, "", func(b *sdk.FlatBatch) error {
		flat = append(flat, b.Batch().Customers...)
		return nil
	}))
	var maps []sdk.Customer
	require.NoError(t, src.Pull(ctx, "", func(b *sdk.Batch) error {
		maps = append(maps, b.Customers...)
		return nil
	}))
	require.Len(t, flat, 2)
	require.Equal(t, sdk.String("pro"), flat[0].Traits["plan"])
	require.Equal(t, maps, flat)
}
