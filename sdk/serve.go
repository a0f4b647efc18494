package sdk

import (
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// ServeOption configures Serve.
type ServeOption func(*serveOptions)

type serveOptions struct {
	source  Source
	channel Channel
}

// WithSource makes Serve serve src as the plugin's source. The SDK has
// encoded a batch when send returns, so Pull may reuse the Batch, its slices
// and its maps for the next one.
func WithSource(src Source) ServeOption {
	return func(c *serveOptions) { c.source = src }
}

// WithChannel makes Serve serve ch as the plugin's channel.
func WithChannel(ch Channel) ServeOption {
	return func(c *serveOptions) { c.channel = ch }
}

// Serve runs the plugin: it answers the go-plugin handshake on stdout and
// serves the given source and/or channel over gRPC until the host kills the
// process. It is meant to be the only call in a plugin's main:
//
//	func main() { sdk.Serve(sdk.WithChannel(&myChannel{})) }
//
// After Serve starts, a plugin must not write to stdout; log with Logger.
// Serve exits the process with status 1 when given nothing to serve, when
// started by anything other than the Cohort daemon, or (on Unix) when the
// daemon that started it has died without stopping it.
func Serve(opts ...ServeOption) {
	var cfg serveOptions
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.source == nil && cfg.channel == nil {
		fmt.Fprintln(os.Stderr, "cohort plugin: sdk.Serve needs sdk.WithSource or sdk.WithChannel")
		os.Exit(1)
	}
	exitWithParent(time.Second)
	plugin.Serve(serveConfig(cfg))
}

// exitWithParent exits the process once its parent has gone, checking
// every interval: a plugin must not outlive a daemon that crashed. On Unix
// an orphan is re-parented, so its parent process id changes.
func exitWithParent(interval time.Duration) {
	ppid := os.Getppid()
	if ppid <= 1 {
		return // started by init: there is no daemon to watch.
	}
	go func() {
		for range time.Tick(interval) {
			if os.Getppid() != ppid {
				Logger().Error("the daemon that started this plugin is gone: exiting", "daemon_pid", ppid)
				os.Exit(1)
			}
		}
	}()
}

// ServeConfig returns the go-plugin configuration that Serve uses. It is for
// tests and tools: serving in test mode (set its Test field), or taking
// VersionedPlugins[ProtocolV1] for plugin.TestPluginGRPCConn. Plugins call
// Serve.
func ServeConfig(opts ...ServeOption) *plugin.ServeConfig {
	var cfg serveOptions
	for _, o := range opts {
		o(&cfg)
	}
	return serveConfig(cfg)
}

func serveConfig(cfg serveOptions) *plugin.ServeConfig {
	return &plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: servedPlugins(cfg.source, cfg.channel),
		GRPCServer:       newGRPCServer,
	}
}

// newGRPCServer is plugin.DefaultGRPCServer with Cohort's message size limits.
func newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	return plugin.DefaultGRPCServer(slices.Concat(opts, []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.MaxSendMsgSize(maxMsgSize),
	}))
}
