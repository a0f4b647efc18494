//go:build unix

package sdk_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

const hostHelperEnv = "SDK_TEST_HOST_HELPER_PLUGIN"

// TestPluginExitsWhenDaemonDies starts a stand-in daemon that starts a
// plugin and dies without stopping it: the plugin must exit by itself.
func TestPluginExitsWhenDaemonDies(t *testing.T) {
	bin := sdktest.BuildPlugin(t, "github.com/cohortd/cohort/sdk/internal/benchsource")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostHelper$")
	cmd.Env = append(os.Environ(), hostHelperEnv+"="+bin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stand-in daemon: %v\n%s", err, out)
	}
	_, after, ok := strings.Cut(string(out), "plugin pid ")
	pid, err := strconv.Atoi(strings.TrimSpace(after))
	if !ok || err != nil {
		t.Fatalf("stand-in daemon did not print the plugin's pid:\n%s", out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("plugin %d still running 15s after its daemon died", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// alive reports whether pid runs; a zombie no one reaps has exited.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ESRCH)
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// TestHostHelper is the stand-in daemon of TestPluginExitsWhenDaemonDies.
func TestHostHelper(t *testing.T) {
	bin := os.Getenv(hostHelperEnv)
	if bin == "" {
		t.Skip("helper for TestPluginExitsWhenDaemonDies")
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		sdk.Handshake.MagicCookieKey+"="+sdk.Handshake.MagicCookieValue,
		"PLUGIN_PROTOCOL_VERSIONS=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let it start serving
	fmt.Printf("plugin pid %d\n", cmd.Process.Pid)
	os.Exit(0) // die without stopping the plugin
}
