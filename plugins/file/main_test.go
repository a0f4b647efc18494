package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// TestBinaryConformance runs the channel suite against the built plugin,
// launched as the daemon launches it, then checks what it wrote.
func TestBinaryConformance(t *testing.T) {
	bin := sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/file")
	path := filepath.Join(t.TempDir(), "out", "messages.jsonl")
	sdktest.RunChannelBinary(t, bin, sdktest.ChannelCase{
		Config: []byte("path: " + path + "\nkind: sms\n"),
		BadConfigs: [][]byte{
			[]byte("path: x.jsonl\nkind: fax\n"),
			[]byte("pth: x.jsonl\n"),
			[]byte("kind: email\n"),
		},
		Messages: []sdk.Message{
			{Key: "bin-1", CustomerID: "c-1", To: "+15555550101", Text: "one"},
			{Key: "bin-2", CustomerID: "c-2", To: "+15555550102", Text: "two", Metadata: map[string]string{"campaign": "demo"}},
		},
	})

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]map[string]any{}
	for i, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i+1, err, line)
		}
		byKey[m["key"].(string)] = m
	}
	got := byKey["bin-2"]
	if got == nil {
		t.Fatalf("message bin-2 not in %s:\n%s", path, raw)
	}
	for field, want := range map[string]any{"customer_id": "c-2", "to": "+15555550102", "text": "two", "kind": "sms"} {
		if got[field] != want {
			t.Errorf("bin-2 %s = %v, want %v", field, got[field], want)
		}
	}
	if md, _ := got["metadata"].(map[string]any); md["campaign"] != "demo" {
		t.Errorf("bin-2 metadata = %v, want campaign demo", got["metadata"])
	}
	for _, field := range []string{"from", "reply_to", "subject", "html", "headers", "time"} {
		if _, ok := got[field]; !ok {
			t.Errorf("bin-2 has no %q field", field)
		}
	}
}
