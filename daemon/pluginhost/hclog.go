package pluginhost

import (
	"context"
	"io"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger returns the hclog.Logger go-plugin needs, forwarding every
// record (including the plugin's own stderr lines, which go-plugin parses)
// into slog, tagged with the instance name.
func newHCLogger(log *slog.Logger) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Trace})
	l.RegisterSink(slogSink{log: log})
	return l
}

type slogSink struct{ log *slog.Logger }

func (s slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	var lv slog.Level
	switch level {
	case hclog.Trace, hclog.Debug:
		lv = slog.LevelDebug
	case hclog.Info:
		lv = slog.LevelInfo
	case hclog.Warn:
		lv = slog.LevelWarn
	default:
		lv = slog.LevelError
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, lv) {
		return
	}
	attrs := make([]any, 0, len(args)+2)
	if name != "" {
		attrs = append(attrs, "logger", name)
	}
	attrs = append(attrs, args...)
	s.log.Log(ctx, lv, msg, attrs...)
}
