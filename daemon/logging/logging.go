// Package logging builds the daemon's slog logger: text on a terminal, JSON
// otherwise (or as configured).
package logging

import (
	"io"
	"log/slog"
	"os"

	"github.com/mattn/go-isatty"
)

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("auto", "text", "json"). In auto, text is used when w is
// a terminal.
func New(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	switch level {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" || format == "auto" && IsTerminal(w) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}
