package sdk

import (
	"io"
	"log/slog"
	"os"
)

// processStderr is the process's stderr as it was at start-up. go-plugin's
// Serve later points os.Stderr at a pipe that the host discards by default;
// the host parses log lines only from the real stderr.
var processStderr io.Writer = os.Stderr

// LevelTrace is hclog's trace level, below slog.LevelDebug.
const LevelTrace = slog.LevelDebug - 4

// hclogTimeFormat is the timestamp layout go-plugin's host parses.
const hclogTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// Logger returns a logger for plugin code. It writes hclog-compatible JSON
// lines ("@level", "@message", "@timestamp" and the attributes) to the
// process's stderr, which the host reads and logs at the same level with the
// plugin instance's name. Every level from LevelTrace up is written; the
// host filters.
// Attribute keys "time", "level" and "msg" at the top level are reserved.
func Logger() *slog.Logger {
	return newLogger(processStderr)
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       LevelTrace,
		ReplaceAttr: hclogAttr,
	}))
}

// hclogAttr renames slog's built-in keys to hclog's and formats their values
// the way go-plugin's host parses them.
func hclogAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		if a.Value.Kind() == slog.KindTime {
			return slog.String("@timestamp", a.Value.Time().Format(hclogTimeFormat))
		}
	case slog.LevelKey:
		if l, ok := a.Value.Any().(slog.Level); ok {
			return slog.String("@level", hclogLevel(l))
		}
	case slog.MessageKey:
		if a.Value.Kind() == slog.KindString {
			return slog.String("@message", a.Value.String())
		}
	}
	return a
}

func hclogLevel(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}
