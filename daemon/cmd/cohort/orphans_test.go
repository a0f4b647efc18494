package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// buildBinaries builds cohort and the host's test plugin into dir.
func buildBinaries(t *testing.T, dir string) (cohort, plugin string) {
	t.Helper()
	cohort, plugin = filepath.Join(dir, "cohort"), filepath.Join(dir, "testplugin")
	for out, pkg := range map[string]string{cohort: ".", plugin: "../../pluginhost/internal/testplugin"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Run(), "build %s", pkg)
	}
	return cohort, plugin
}

// children lists the pids whose parent is pid, from /proc.
func children(t *testing.T, pid int) []int {
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var out []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, state, ok := procStat(n); ok && ppid == pid && state != "Z" {
			out = append(out, n)
		}
	}
	return out
}

// procStat returns a process's parent pid and state; ok is false once it is gone.
func procStat(pid int) (ppid int, state string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[0], true
}

func alive(pid int) bool {
	_, state, ok := procStat(pid)
	return ok && state != "Z"
}

// TestNoPluginSurvivesDaemonSIGKILL: after the daemon is killed with SIGKILL
// (no chance to clean up), its plugin processes exit too.
func TestNoPluginSurvivesDaemonSIGKILL(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Fatalf("this test reads /proc: %v", err)
	}
	dir := t.TempDir()
	cohort, plugin := buildBinaries(t, dir)
	addr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`storage:
  dsn: %s/cohort.db
http:
  listen: %s
log:
  format: json
channels:
  hook_a:
    plugin: %s
  hook_b:
    plugin: %s
`, dir, addr, plugin, plugin))
	cmd := exec.Command(cohort, "run", "--config", cfg)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// Both plugins up, as /metrics reports.
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return strings.Contains(b.String(), `cohort_plugin_up{instance="hook_a"} 1`) &&
			strings.Contains(b.String(), `cohort_plugin_up{instance="hook_b"} 1`)
	}, 60*time.Second, 100*time.Millisecond, "plugins never came up; logs:\n%s", &logs)
	kids := children(t, cmd.Process.Pid)
	require.Len(t, kids, 2, "the daemon should have two plugin processes")

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	<-exited
	require.Eventually(t, func() bool {
		for _, k := range kids {
			if alive(k) {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "plugin processes %v outlived the daemon", kids)
}
