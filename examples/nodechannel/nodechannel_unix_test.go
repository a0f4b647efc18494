//go:build unix

package nodechannel_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// exitDeadline is how long a plugin may take to go after it was told to,
// or after its host died (it polls its parent once a second).
const exitDeadline = 10 * time.Second

// processGone reports whether pid has exited: no such process, or a zombie
// nobody has reaped yet.
func processGone(pid int) bool {
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// "pid (comm) S ...": the state follows the last ')'.
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
			return stat[i+2] == 'Z'
		}
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// waitGone polls until pid has exited and returns how long that took.
func waitGone(t *testing.T, pid int, what string) time.Duration {
	t.Helper()
	begin := time.Now()
	for !processGone(pid) {
		if time.Since(begin) > exitDeadline {
			t.Fatalf("%s: plugin process %d still running after %v", what, pid, exitDeadline)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(begin)
}

// TestKillLeavesNoOrphan: go-plugin's Client.Kill calls
// plugin.GRPCController/Shutdown; the plugin answers and exits on its own,
// so Kill neither waits its 2 s grace period nor falls back to SIGKILL.
func TestKillLeavesNoOrphan(t *testing.T) {
	path := pluginPath(t)
	h := launch(t, path, true)
	pid := h.client.ReattachConfig().Pid
	begin := time.Now()
	h.client.Kill()
	killed := time.Since(begin)
	gone := waitGone(t, pid, "after Client.Kill")
	t.Logf("Client.Kill returned after %v; process gone %v later", killed.Round(time.Millisecond), gone.Round(time.Millisecond))
	if strings.Contains(h.log.String(), "plugin failed to exit gracefully") {
		t.Errorf("go-plugin had to force-kill the plugin: GRPCController/Shutdown did not make it exit; host log:\n%s", h.log)
	}
	if len(h.entries(t, "plugin process exited")) != 1 {
		t.Errorf("host log does not record the plugin's exit:\n%s", h.log)
	}
}

// TestShutdownAndQuietStdout calls GRPCController/Shutdown by hand: the
// plugin answers, exits with status 0, and never wrote anything to stdout
// but its handshake line, although every call was made.
func TestShutdownAndQuietStdout(t *testing.T) {
	path := pluginPath(t)
	p := startRaw(t, path, pluginEnv(cookie(), "PLUGIN_PROTOCOL_VERSIONS=1"))
	addr := strings.Split(p.handshake, "|")[3]
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch := pluginv1.NewChannelClient(conn)
	if _, err := ch.Configure(ctx, &pluginv1.ConfigureRequest{ConfigYaml: []byte("kind: webhook\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Send(ctx, &pluginv1.SendRequest{Messages: []*pluginv1.Message{{Key: "a", To: "https://hook.example/x"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Webhook(ctx, &pluginv1.WebhookRequest{Method: "POST"}); err != nil {
		t.Fatal(err)
	}
	// plugin.Empty and google.protobuf.Empty are both empty messages: the same bytes.
	if err := conn.Invoke(ctx, "/plugin.GRPCController/Shutdown", &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		t.Fatalf("GRPCController/Shutdown: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("plugin exit after Shutdown: %v, want status 0; stderr:\n%s", err, p.stderr)
		}
	case <-time.After(exitDeadline):
		t.Fatalf("plugin still running %v after Shutdown", exitDeadline)
	}
	<-p.restDone
	if rest := p.rest.String(); rest != "" {
		t.Errorf("plugin wrote to stdout after its handshake: %q", rest)
	}
}

// TestExitsWhenHostDies: when its host is killed outright (kill -9, OOM),
// nobody calls Shutdown; the plugin notices it was re-parented and exits.
// The plugin's stdin is /dev/null here (a background job of sh), so this
// also shows it does not take EOF on stdin as "host gone".
func TestExitsWhenHostDies(t *testing.T) {
	path := pluginPath(t)
	stderr, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	// The stand-in host: a shell that starts the plugin in the background,
	// says its pid, and becomes a sleep (same pid) until it is killed.
	parent := exec.Command("sh", "-c", `"$0" & echo "$!"; exec sleep 120`, path)
	parent.Env = pluginEnv(cookie(), "PLUGIN_PROTOCOL_VERSIONS=1")
	parent.Stderr = stderr // a file, so Wait does not wait for the orphan to close it
	stdout, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = parent.Process.Kill(); _ = parent.Wait() })

	type read struct {
		lines []string
		err   error
	}
	got := make(chan read, 1)
	go func() {
		r := bufio.NewReader(stdout)
		var lines []string
		for len(lines) < 2 {
			line, err := r.ReadString('\n')
			if err != nil {
				got <- read{lines, err}
				return
			}
			lines = append(lines, strings.TrimSpace(line))
		}
		got <- read{lines, nil}
	}()
	var lines []string
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("reading pid and handshake: %v (got %q)", r.err, r.lines)
		}
		lines = r.lines
	case <-time.After(startTimeout):
		t.Fatalf("no pid and handshake within %v", startTimeout)
	}
	pid, err := strconv.Atoi(lines[0])
	if err != nil {
		t.Fatalf("first line %q is not a pid", lines[0])
	}
	t.Cleanup(func() {
		if !processGone(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	// Alive and serving while its host lives (stdin at EOF notwithstanding).
	parts := strings.Split(lines[1], "|")
	if len(parts) != 5 {
		t.Fatalf("handshake %q, want 5 fields", lines[1])
	}
	conn, err := grpc.NewClient(parts[3], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pluginv1.NewChannelClient(conn).Configure(ctx, &pluginv1.ConfigureRequest{}); err != nil {
		t.Fatalf("Configure while the host lives: %v", err)
	}

	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	took := waitGone(t, pid, "after its host was killed")
	t.Logf("plugin exited %v after its host was killed", took.Round(time.Millisecond))
	log, err := os.ReadFile(stderr.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), `"@message":"host process went away; exiting"`) {
		t.Errorf("plugin stderr lacks the parent-death log line:\n%s", log)
	}
}
