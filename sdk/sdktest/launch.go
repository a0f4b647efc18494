package sdktest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/cohortd/cohort/sdk"
)

// builds caches BuildPlugin's binaries for the life of the test process.
var builds = struct {
	sync.Mutex
	dir  string
	pkgs map[string]*build
}{pkgs: map[string]*build{}}

type build struct {
	once sync.Once
	path string
	err  error
}

// BuildPlugin builds the plugin package pkg (an import path such as
// "github.com/cohortd/cohort/plugins/file") with `go build`, once per test
// process, and returns the binary's path. Binaries live in a directory of
// the system temp dir that the next test process removes.
func BuildPlugin(t testing.TB, pkg string) string {
	t.Helper()
	builds.Lock()
	if builds.dir == "" {
		dir, err := buildDir()
		if err != nil {
			builds.Unlock()
			t.Fatalf("build plugin %s: %v", pkg, err)
		}
		builds.dir = dir
	}
	b, ok := builds.pkgs[pkg]
	if !ok {
		b = &build{}
		builds.pkgs[pkg] = b
	}
	dir := builds.dir
	builds.Unlock()

	b.once.Do(func() {
		name := strings.NewReplacer("/", "_", ".", "_").Replace(pkg)
		if runtime.GOOS == "windows" {
			name += ".exe"
		}
		out := filepath.Join(dir, name)
		cmd := exec.Command(goTool(), "build", "-o", out, pkg)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", pkg, err, stderr.Bytes())
			return
		}
		b.path = out
	})
	if b.err != nil {
		t.Fatalf("build plugin: %v", b.err)
	}
	return b.path
}

// buildDir makes this process's directory for binaries under
// $TMPDIR/cohort-sdktest, removing those of processes that have exited.
func buildDir() (string, error) {
	root := filepath.Join(os.TempDir(), "cohort-sdktest")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", fmt.Errorf("plugin build dir: %w", err)
	}
	if entries, err := os.ReadDir(root); err == nil {
		for _, e := range entries {
			pid, _, _ := strings.Cut(e.Name(), "-")
			if n, err := strconv.Atoi(pid); err == nil && !processAlive(n) {
				_ = os.RemoveAll(filepath.Join(root, e.Name()))
			}
		}
	}
	dir, err := os.MkdirTemp(root, strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", fmt.Errorf("plugin build dir: %w", err)
	}
	return dir, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// LaunchChannel starts the plugin binary at path the way the daemon does
// (go-plugin, gRPC only, AutoMTLS, sdk.Handshake, sdk.VersionedPlugins,
// sdk.GRPCDialOptions), checks that protocol 1 was negotiated, dispenses its
// channel and kills the process when the test ends. The host's log, with
// the plugin's log lines, goes to t.Log.
func LaunchChannel(t testing.TB, path string) sdk.Channel {
	t.Helper()
	raw := launch(t, path, sdk.ChannelPluginName)
	ch, ok := raw.(sdk.Channel)
	if !ok {
		t.Fatalf("plugin %s: dispensed %T, not an sdk.Channel", path, raw)
	}
	return ch
}

// LaunchSource is LaunchChannel for a source.
func LaunchSource(t testing.TB, path string) sdk.Source {
	t.Helper()
	raw := launch(t, path, sdk.SourcePluginName)
	src, ok := raw.(sdk.Source)
	if !ok {
		t.Fatalf("plugin %s: dispensed %T, not an sdk.Source", path, raw)
	}
	return src
}

func launch(t testing.TB, path, name string) any {
	t.Helper()
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.VersionedPlugins(),
		Cmd:              exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Managed:          true,
		StartTimeout:     30 * time.Second,
		GRPCDialOptions:  sdk.GRPCDialOptions(),
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:   "host",
			Output: testWriter{t},
			Level:  hclog.Info,
		}),
	})
	t.Cleanup(client.Kill)
	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("plugin %s: start: %v", path, err)
	}
	if v := client.NegotiatedVersion(); v != sdk.ProtocolV1 {
		t.Fatalf("plugin %s: negotiated protocol %d, want %d", path, v, sdk.ProtocolV1)
	}
	raw, err := rpc.Dispense(name)
	if err != nil {
		t.Fatalf("plugin %s: dispense %s: %v", path, name, err)
	}
	return raw
}

// testWriter sends the host logger's lines to t.Log. go-plugin's Kill, run
// in t.Cleanup, waits for the plugin's stderr to be drained, so no line
// arrives after the test ends.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ConnectChannel serves ch in this process over a real go-plugin gRPC
// connection (plugin.TestPluginGRPCConn) and returns the host's view of it:
// every call goes through the SDK's conversions and error mapping.
func ConnectChannel(t testing.TB, ch sdk.Channel) sdk.Channel {
	t.Helper()
	raw := connect(t, sdk.ServeConfig(sdk.WithChannel(ch)), sdk.ChannelPluginName)
	return raw.(sdk.Channel)
}

// ConnectSource is ConnectChannel for a source.
func ConnectSource(t testing.TB, src sdk.Source) sdk.Source {
	t.Helper()
	raw := connect(t, sdk.ServeConfig(sdk.WithSource(src)), sdk.SourcePluginName)
	return raw.(sdk.Source)
}

func connect(t testing.TB, cfg *plugin.ServeConfig, name string) any {
	t.Helper()
	client, server := plugin.TestPluginGRPCConn(t, false, cfg.VersionedPlugins[sdk.ProtocolV1])
	t.Cleanup(func() {
		// Closing the client shuts the server down through go-plugin's
		// controller; stopping it here as well would race with that.
		_ = client.Close()
		select {
		case <-server.DoneCh:
		case <-time.After(10 * time.Second):
			t.Errorf("in-process plugin server did not stop within 10s of closing the client")
		}
	})
	raw, err := client.Dispense(name)
	if err != nil {
		t.Fatalf("dispense %s: %v", name, err)
	}
	return raw
}
