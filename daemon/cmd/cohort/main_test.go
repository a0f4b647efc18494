package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/sdk/sdktest"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// writeConfig writes a config file into a temp dir beside an empty rules
// directory (the default rules.dir).
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "rules"), 0o755))
	p := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

// TestCheckRepositoryConfig: `cohort check` passes on the repository's
// config.yaml, running the example's rules, templates and fixtures (with
// their campaign expectations) with freshly built csv and file plugins.
func TestCheckRepositoryConfig(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"csv", "file"} {
		require.NoError(t, os.Symlink(sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/"+name), filepath.Join(dir, name)))
	}
	t.Setenv("COHORT_PLUGINS_DIR", dir)
	code, out, errOut := runCLI(t, "check", "--config", "../../../config.yaml")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "ok (storage sqlite, 1 sources, 1 channels, timezone UTC)")
	require.Contains(t, out, "rules: ok (17 segments")
	require.Contains(t, out, "templates: ok (2 variants of 1 campaigns render for 7 fixture customers)")
}

func TestCheckBadConfigExits2(t *testing.T) {
	p := writeConfig(t, "http:\n  listen: 127.0.0.1:8080\n  bogus: 1\n")
	code, _, errOut := runCLI(t, "check", "--config", p)
	require.Equal(t, 2, code)
	require.Equal(t, fmt.Sprintf("cohort: %s:3:3: unknown key \"bogus\" in http (known keys: listen, public_url, shutdown_timeout)\n", p), errOut)
}

func TestMissingConfigExits2(t *testing.T) {
	code, _, errOut := runCLI(t, "check", "--config", filepath.Join(t.TempDir(), "nope.yaml"))
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "config file not found; pass --config FILE")
}

func TestUnknownFlagExits2(t *testing.T) {
	code, _, errOut := runCLI(t, "check", "--confg", "x")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "unknown flag: --confg")
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	require.Equal(t, 0, code)
	require.True(t, strings.HasPrefix(out, "cohort "), out)
}

func TestRunUnwritableSQLiteExits2AndCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(blocker, nil, 0o644))
	p := writeConfig(t, fmt.Sprintf("storage:\n  dsn: %s/sub/cohort.db\nhttp:\n  listen: 127.0.0.1:0\nlog:\n  format: json\n", blocker))
	code, _, errOut := runCLI(t, "run", "--config", p)
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "cohort: storage.dsn: cannot create directory "+blocker+"/sub")
}

func TestRunUnreachablePostgresExits2(t *testing.T) {
	p := writeConfig(t, "storage:\n  driver: postgres\n  dsn: postgres://cohort@127.0.0.1:1/cohort?connect_timeout=5\nhttp:\n  listen: 127.0.0.1:0\nlog:\n  format: json\n")
	code, _, errOut := runCLI(t, "run", "--config", p)
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, `cohort: storage: cannot reach PostgreSQL at 127.0.0.1:1 database "cohort" as user "cohort"`)
}

func TestRunAddressInUseExits2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	p := writeConfig(t, fmt.Sprintf("storage:\n  dsn: %s/cohort.db\nhttp:\n  listen: %s\nlog:\n  format: json\n", t.TempDir(), ln.Addr()))
	code, _, errOut := runCLI(t, "run", "--config", p)
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "http.listen: cannot listen on "+ln.Addr().String())
}

// TestRunServesAndStopsOnSIGTERM runs the real binary: /healthz answers 200,
// and SIGTERM makes it exit 0.
func TestRunServesAndStopsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "cohort")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())

	addr := freeAddr(t)
	dir := t.TempDir()
	p := writeConfig(t, fmt.Sprintf("storage:\n  dsn: %s/cohort.db\nhttp:\n  listen: %s\nlog:\n  format: json\n", dir, addr))
	cmd := exec.Command(bin, "run", "--config", p)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	client := &http.Client{Timeout: 2 * time.Second}
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "healthz never answered 200; logs:\n%s", &logs)

	resp, err := client.Get("http://" + addr + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = client.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "cohort run must exit 0 after SIGTERM; logs:\n%s", logs.String())
	case <-ctx.Done():
		t.Fatalf("cohort run did not exit after SIGTERM; logs:\n%s", logs.String())
	}
	require.Contains(t, logs.String(), `"msg":"cohort stopped"`)
	_, err = os.Stat(filepath.Join(dir, "cohort.db"))
	require.NoError(t, err, "database file created")
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}
