package main

import (
	"bytes"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

const pkg = "github.com/cohortd/cohort/examples/gochannel"

func TestConformance(t *testing.T) {
	sdktest.RunChannelBinary(t, sdktest.BuildPlugin(t, pkg), sdktest.ChannelCase{
		Config:     []byte("kind: email\n"),
		BadConfigs: [][]byte{[]byte("kind: fax\n"), []byte("colour: blue\n")},
	})
}

func TestConformanceInProcess(t *testing.T) {
	sdktest.RunChannel(t, &console{}, sdktest.ChannelCase{
		BadConfigs: [][]byte{[]byte("kind: fax\n")},
	})
}

// syncBuffer is a bytes.Buffer safe for the host logger's goroutines.
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

// TestLogsReachTheHostWithLevels checks that what the plugin logs with
// sdk.Logger is parsed by the host's go-plugin client into levelled lines.
func TestLogsReachTheHostWithLevels(t *testing.T) {
	var hostLog syncBuffer
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.VersionedPlugins(),
		Cmd:              exec.Command(sdktest.BuildPlugin(t, pkg)),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           hclog.New(&hclog.LoggerOptions{Output: &hostLog, Level: hclog.Info}),
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rpc.Dispense(sdk.ChannelPluginName)
	if err != nil {
		t.Fatal(err)
	}
	ch := raw.(sdk.Channel)
	if _, err := ch.Configure(t.Context(), sdk.ConfigureRequest{Instance: "demo", Config: []byte("kind: sms\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Send(t.Context(), []sdk.Message{{Key: "o-42", To: "+15555550101", Subject: "Hi"}}); err != nil {
		t.Fatal(err)
	}

	// The log line crosses a pipe: wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(hostLog.String(), "o-42") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	var line string
	for l := range strings.SplitSeq(hostLog.String(), "\n") {
		if strings.Contains(l, "o-42") {
			line = l
		}
	}
	t.Logf("host log line: %s", line)
	for _, want := range []string{"[INFO]", "message accepted", "key=o-42", "instance=demo", "kind=sms"} {
		if !strings.Contains(line, want) {
			t.Errorf("host log line %q lacks %q; host log:\n%s", line, want, hostLog.String())
		}
	}
}
