package sdk

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"
)

func TestLoggerWritesHCLogJSON(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(&buf).With("instance", "mail")
	log.Debug("connecting", "host", "smtp.example.com")
	log.Info("sent", slog.Group("msg_info", "key", "o-1"), "count", 3)
	log.Warn("slow provider")
	log.Error("send failed", "error", "timeout")
	log.Log(t.Context(), LevelTrace, "wire dump")

	wantLevels := []string{"debug", "info", "warn", "error", "trace"}
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) != len(wantLevels) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(wantLevels), buf.String())
	}
	for i, line := range lines {
		var entry map[string]any
		if err := json.Unmarshal(line, &entry); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i+1, err, line)
		}
		if entry["@level"] != wantLevels[i] {
			t.Errorf("line %d: @level = %v, want %s", i+1, entry["@level"], wantLevels[i])
		}
		if m, _ := entry["@message"].(string); m == "" {
			t.Errorf("line %d: no @message: %s", i+1, line)
		}
		ts, _ := entry["@timestamp"].(string)
		// go-plugin's host parses exactly this layout.
		when, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", ts)
		if err != nil || time.Since(when) > time.Minute {
			t.Errorf("line %d: @timestamp %q does not parse as hclog's layout: %v", i+1, ts, err)
		}
		if entry["instance"] != "mail" {
			t.Errorf("line %d: instance = %v, want mail", i+1, entry["instance"])
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := entry[k]; ok {
				t.Errorf("line %d: has slog key %q: %s", i+1, k, line)
			}
		}
	}
	var info map[string]any
	_ = json.Unmarshal(lines[1], &info)
	if g, _ := info["msg_info"].(map[string]any); g["key"] != "o-1" || info["count"] != float64(3) {
		t.Errorf("attributes lost: %s", lines[1])
	}
}
