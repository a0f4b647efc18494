// Command testplugin is a channel plugin for the plugin host's fault tests.
// Its behaviour before the handshake comes from the name it is run under
// (tests symlink it): "stdout-first" prints to stdout before the handshake,
// "hang" never completes a handshake, "v99" speaks only protocol version 99.
// After the handshake, its config decides: `fail_configure: true` rejects the
// config; a message with subject "block" makes Send wait (writing the file
// "sending" in its working directory first) so a test can kill it mid-call.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/cohortd/cohort/sdk"
)

type channel struct{}

func (channel) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	if strings.Contains(string(req.Config), "fail_configure: true") {
		return sdk.ChannelInfo{}, sdk.Errorf(sdk.InvalidConfig, "fail_configure", "fail_configure is set; remove it")
	}
	return sdk.ChannelInfo{Name: "testplugin", Version: "1.2.3", Kind: "webhook", MaxBatch: 10}, nil
}

func (channel) Send(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	out := make([]sdk.Result, 0, len(msgs))
	for _, m := range msgs {
		if m.Subject == "block" {
			if err := os.WriteFile("sending", []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
				return nil, err
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Hour):
			}
		}
		out = append(out, sdk.Result{Key: m.Key, Status: sdk.Accepted, ProviderID: fmt.Sprintf("test-%d-%s", os.Getpid(), m.Key)})
	}
	return out, nil
}

// Webhook echoes the request so tests can check what the daemon forwarded.
func (channel) Webhook(_ context.Context, req *sdk.WebhookRequest) (*sdk.ChannelWebhookResponse, error) {
	body := fmt.Sprintf("%s %s %s %s sig=%s", req.Method, req.URL, req.Path, req.Body, req.Header("X-Signature"))
	return &sdk.ChannelWebhookResponse{
		Response: sdk.HTTPResponse{Status: 202, Headers: []sdk.Header{{Name: "X-Test", Values: []string{"yes"}}}, Body: []byte(body)},
	}, nil
}

func main() {
	switch filepath.Base(os.Args[0]) {
	case "stdout-first":
		fmt.Println("hello from a plugin that forgot stdout is for the handshake")
	case "hang":
		time.Sleep(time.Hour)
	case "v99":
		cfg := sdk.ServeConfig(sdk.WithChannel(channel{}))
		cfg.HandshakeConfig.ProtocolVersion = 99
		cfg.VersionedPlugins = map[int]plugin.PluginSet{99: cfg.VersionedPlugins[1]}
		plugin.Serve(cfg)
		return
	}
	sdk.Serve(sdk.WithChannel(channel{}))
}
