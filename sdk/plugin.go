package sdk

import (
	"context"
	"errors"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// Handshake is the go-plugin handshake shared by the host and every plugin.
// ProtocolVersion is the oldest protocol; VersionedPlugins lists them all.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolV1,
	MagicCookieKey:   "COHORT_PLUGIN",
	MagicCookieValue: "8c8890cf03791f8344c8b601deac1079ac926fbb4732fda15a26f398d2e17d2c",
}

// ProtocolV1 is the plugin protocol cohort.plugin.v1 (sdk/proto/cohort/plugin/v1).
const ProtocolV1 = 1

// Names under which plugins are dispensed: client.Dispense(sdk.SourcePluginName).
const (
	SourcePluginName  = "source"
	ChannelPluginName = "channel"
)

// maxMsgSize bounds one gRPC message (a Send request, a Pull batch) in both
// directions; gRPC's default of 4 MiB is too small for a batch of HTML mail.
const maxMsgSize = 64 << 20

// VersionedPlugins is the plugin sets for every protocol version the host
// speaks, for plugin.ClientConfig{VersionedPlugins: sdk.VersionedPlugins()}.
// Dispensing SourcePluginName gives a value implementing Source and
// SourceWebhooker; ChannelPluginName one implementing Channel and
// ChannelWebhooker. A future protocol adds an entry here; v1 plugins keep
// negotiating version 1.
func VersionedPlugins() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolV1: {
			SourcePluginName:  &sourcePluginV1{},
			ChannelPluginName: &channelPluginV1{},
		},
	}
}

// GRPCDialOptions are the gRPC options the host should dial plugins with:
// plugin.ClientConfig{GRPCDialOptions: sdk.GRPCDialOptions()}. Flow-control
// windows larger than gRPC's defaults keep a Pull stream of large batches
// from stalling on window updates between the two processes.
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(8 << 20),
		grpc.WithInitialConnWindowSize(16 << 20),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	}
}

// servedPlugins is VersionedPlugins for a plugin process: only what it serves.
func servedPlugins(src Source, ch Channel) map[int]plugin.PluginSet {
	v1 := plugin.PluginSet{}
	if src != nil {
		v1[SourcePluginName] = &sourcePluginV1{impl: src}
	}
	if ch != nil {
		v1[ChannelPluginName] = &channelPluginV1{impl: ch}
	}
	return map[int]plugin.PluginSet{ProtocolV1: v1}
}

// sourcePluginV1 serves a Source as cohort.plugin.v1.Source (plugin side)
// and dispenses a client for it (host side).
type sourcePluginV1 struct {
	plugin.NetRPCUnsupportedPlugin
	impl Source
}

var _ plugin.GRPCPlugin = (*sourcePluginV1)(nil)

// GRPCServer registers the source service.
func (p *sourcePluginV1) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.impl == nil {
		return errors.New("source plugin: no Source to serve")
	}
	pluginv1.RegisterSourceServer(s, &sourceServer{impl: p.impl})
	return nil
}

// GRPCClient returns the host's view of the source.
func (p *sourcePluginV1) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &sourceClient{client: pluginv1.NewSourceClient(c)}, nil
}

// channelPluginV1 serves a Channel as cohort.plugin.v1.Channel (plugin
// side) and dispenses a client for it (host side).
type channelPluginV1 struct {
	plugin.NetRPCUnsupportedPlugin
	impl Channel
}

var _ plugin.GRPCPlugin = (*channelPluginV1)(nil)

// GRPCServer registers the channel service.
func (p *channelPluginV1) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.impl == nil {
		return errors.New("channel plugin: no Channel to serve")
	}
	pluginv1.RegisterChannelServer(s, &channelServer{impl: p.impl})
	return nil
}

// GRPCClient returns the host's view of the channel.
func (p *channelPluginV1) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &channelClient{client: pluginv1.NewChannelClient(c)}, nil
}
