package filechannel

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

var fixedNow = time.Date(2025, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

func configure(t *testing.T, config string) *Channel {
	t.Helper()
	c := New()
	c.now = func() time.Time { return fixedNow }
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte(config)}); err != nil {
		t.Fatalf("Configure(%q): %v", config, err)
	}
	return c
}

// readLines reads the JSON lines of the file at path.
func readLines(t *testing.T, path string) []Line {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []Line
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		var l Line
		dec := json.NewDecoder(strings.NewReader(s.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("line %d of %s is not a message: %v: %s", len(lines)+1, path, err, s.Text())
		}
		lines = append(lines, l)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestConfigureRejects(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "a-file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		config, field, want string
	}{
		{"", "path", "path is required"},
		{"kind: sms\n", "path", "path is required"},
		{"path: x.jsonl\nkind: fax\n", "kind", `kind "fax" is not one of email, sms, webhook`},
		{"pth: x.jsonl\n", "", "field pth not found"},
		{"path: [\n", "", "file channel config"},
		{"path: " + filepath.Join(blocker, "sub", "m.jsonl") + "\n", "path", "cannot create its directory"},
		{"path: " + dir + "\n", "path", "cannot open for appending"},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			_, err := New().Configure(t.Context(), sdk.ConfigureRequest{Config: []byte(tt.config)})
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("Configure(%q) = %v, want an *sdk.Error", tt.config, err)
			}
			if e.Code != sdk.InvalidConfig || e.Field != tt.field || !strings.Contains(e.Message, tt.want) {
				t.Errorf("Configure(%q) = %+v, want INVALID_CONFIG on %q containing %q", tt.config, *e, tt.field, tt.want)
			}
		})
	}
}

func TestConfigureDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "dirs", "out.jsonl")
	c := New()
	defer c.Close()
	info, err := c.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte("path: " + path + "\n")})
	if err != nil {
		t.Fatal(err)
	}
	want := sdk.ChannelInfo{Name: "file", Version: Version, Kind: "email", MaxBatch: maxBatch}
	if info != want {
		t.Errorf("info = %+v, want %+v", info, want)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("Configure did not create the file: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600 (messages hold personal data)", st.Mode().Perm())
	}
}

func TestSendWritesLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	c := configure(t, "path: "+path+"\nkind: sms\n")
	msgs := []sdk.Message{
		{
			Key: "o-1", CustomerID: "c-1", To: "+15555550101", From: "+15555550100", ReplyTo: "help@example.com",
			Subject: "Hi", Text: "Hello <Ada> & co", HTML: "<p>Hello</p>",
			Headers:  []sdk.Header{{Name: "X-A", Values: []string{"1"}}, {Name: "X-A", Values: []string{"2"}}, {Name: "X-B", Values: []string{"b"}}},
			Metadata: map[string]string{"campaign": "spring"},
		},
		{Key: "o-2", CustomerID: "c-2", To: "+15555550102"},
	}
	results, err := c.Send(t.Context(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	wantResults := []sdk.Result{
		{Key: "o-1", Status: sdk.Accepted, ProviderID: "file:o-1"},
		{Key: "o-2", Status: sdk.Accepted, ProviderID: "file:o-2"},
	}
	if diff := cmp.Diff(wantResults, results); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	// A second Send appends.
	if _, err := c.Send(t.Context(), []sdk.Message{{Key: "o-3", To: "+15555550103"}}); err != nil {
		t.Fatal(err)
	}

	want := []Line{
		{
			Key: "o-1", CustomerID: "c-1", To: "+15555550101", From: "+15555550100", ReplyTo: "help@example.com",
			Subject: "Hi", Text: "Hello <Ada> & co", HTML: "<p>Hello</p>",
			Headers:  map[string][]string{"X-A": {"1", "2"}, "X-B": {"b"}},
			Metadata: map[string]string{"campaign": "spring"},
			Kind:     "sms", Time: fixedNow,
		},
		{Key: "o-2", CustomerID: "c-2", To: "+15555550102", Headers: map[string][]string{}, Metadata: map[string]string{}, Kind: "sms", Time: fixedNow},
		{Key: "o-3", To: "+15555550103", Headers: map[string][]string{}, Metadata: map[string]string{}, Kind: "sms", Time: fixedNow},
	}
	if diff := cmp.Diff(want, readLines(t, path)); diff != "" {
		t.Errorf("file (-want +got):\n%s", diff)
	}
	raw, _ := os.ReadFile(path)
	if !strings.Contains(string(raw), `"text":"Hello <Ada> & co"`) {
		t.Errorf("HTML is escaped in the file; want it as written:\n%s", raw)
	}
}

func TestSendCancelledWritesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	c := configure(t, "path: "+path+"\n")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Send(ctx, []sdk.Message{{Key: "o-1", To: "ada@example.com"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a cancelled context = %v, want context.Canceled", err)
	}
	if lines := readLines(t, path); len(lines) != 0 {
		t.Errorf("cancelled Send wrote %d lines", len(lines))
	}
}

func TestSendBeforeConfigure(t *testing.T) {
	if _, err := New().Send(t.Context(), []sdk.Message{{Key: "o-1"}}); err == nil {
		t.Error("Send on an unconfigured channel succeeded")
	}
}

func TestConcurrentSends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	c := configure(t, "path: "+path+"\n")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				msgs := []sdk.Message{
					{Key: fmt.Sprintf("g%d-%d-a", g, i), To: "ada@example.com", HTML: strings.Repeat("<p>x</p>", 500)},
					{Key: fmt.Sprintf("g%d-%d-b", g, i), To: "grace@example.com"},
				}
				if _, err := c.Send(t.Context(), msgs); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	lines := readLines(t, path)
	if len(lines) != 8*20*2 {
		t.Fatalf("file has %d lines, want %d", len(lines), 8*20*2)
	}
	// Each Send's lines are written together.
	for i := 0; i < len(lines); i += 2 {
		a, b := lines[i].Key, lines[i+1].Key
		if !strings.HasSuffix(a, "-a") || strings.TrimSuffix(a, "-a") != strings.TrimSuffix(b, "-b") {
			t.Fatalf("lines %d and %d are %q and %q: sends interleaved", i+1, i+2, a, b)
		}
	}
}

func TestReconfigureSwitchesFile(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "1.jsonl"), filepath.Join(dir, "2.jsonl")
	c := configure(t, "path: "+first+"\n")
	if _, err := c.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte("path: " + second + "\nkind: webhook\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(t.Context(), []sdk.Message{{Key: "o-1", To: "https://example.com/hook"}}); err != nil {
		t.Fatal(err)
	}
	if n := len(readLines(t, first)); n != 0 {
		t.Errorf("first file has %d lines, want 0", n)
	}
	if got := readLines(t, second); len(got) != 1 || got[0].Kind != "webhook" {
		t.Errorf("second file = %+v, want one webhook line", got)
	}
}

// conformanceCase is shared with the binary test in package main.
func conformanceCase(path string) sdktest.ChannelCase {
	return sdktest.ChannelCase{
		Config: []byte("path: " + path + "\n"),
		BadConfigs: [][]byte{
			[]byte("path: x.jsonl\nkind: fax\n"),
			[]byte("pth: x.jsonl\n"),
			[]byte("kind: email\n"),
			[]byte("path: [\n"),
		},
	}
}

func TestConformance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out", "messages.jsonl")
	c := New()
	t.Cleanup(func() { _ = c.Close() })
	sdktest.RunChannel(t, c, conformanceCase(path))

	lines := readLines(t, path)
	keys := map[string]bool{}
	for _, l := range lines {
		keys[l.Key] = true
		if l.Kind != "email" || !strings.HasSuffix(l.To, "@example.com") || l.Time.IsZero() {
			t.Errorf("unexpected line %+v", l)
		}
	}
	for _, k := range []string{"conformance-1", "conformance-2", "conformance-3"} {
		if !keys[k] {
			t.Errorf("message %q sent by the suite is not in the file", k)
		}
	}
}
