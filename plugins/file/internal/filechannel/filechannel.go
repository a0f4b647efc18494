// Package filechannel is the file channel: it appends each message as one
// JSON line to a file and accepts it.
package filechannel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cohortd/cohort/sdk"
)

// Version is the plugin's version, reported in ChannelInfo.
const Version = "0.1.0"

// maxBatch is the most messages accepted in one Send.
const maxBatch = 500

// Config is the channel's config block.
type Config struct {
	// Path is the JSON-lines file messages are appended to. Required.
	Path string `yaml:"path"`
	// Kind is the channel kind the file stands in for: email (default),
	// sms or webhook.
	Kind string `yaml:"kind"`
}

// Line is one message as written to the file.
type Line struct {
	Key        string              `json:"key"`
	CustomerID string              `json:"customer_id"`
	To         string              `json:"to"`
	From       string              `json:"from"`
	ReplyTo    string              `json:"reply_to"`
	Subject    string              `json:"subject"`
	Text       string              `json:"text"`
	HTML       string              `json:"html"`
	Headers    map[string][]string `json:"headers"`
	Metadata   map[string]string   `json:"metadata"`
	Kind       string              `json:"kind"`
	Time       time.Time           `json:"time"`
}

// Channel is the file channel. Configure it before Send.
type Channel struct {
	now func() time.Time

	mu   sync.Mutex // guards the fields below and writes to f.
	cfg  Config
	f    *os.File
	path string // absolute path of f
}

var _ sdk.Channel = (*Channel)(nil)

// New returns an unconfigured file channel.
func New() *Channel {
	return &Channel{now: time.Now}
}

// Configure checks the config and opens the file for appending, creating
// it and its directories. A second Configure replaces the first.
func (c *Channel) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	cfg, err := parseConfig(req.Config)
	if err != nil {
		return sdk.ChannelInfo{}, err
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return sdk.ChannelInfo{}, sdk.Errorf(sdk.InvalidConfig, "path", "path %q: %v", cfg.Path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return sdk.ChannelInfo{}, sdk.Errorf(sdk.InvalidConfig, "path",
			"path %q: cannot create its directory: %v; choose a path in a writable directory", cfg.Path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return sdk.ChannelInfo{}, sdk.Errorf(sdk.InvalidConfig, "path",
			"path %q: cannot open for appending: %v; choose a writable file", cfg.Path, err)
	}

	c.mu.Lock()
	old := c.f
	c.cfg, c.f, c.path = cfg, f, path
	c.mu.Unlock()
	if old != nil {
		if err := old.Close(); err != nil {
			sdk.Logger().Warn("closing the previous file", "path", old.Name(), "error", err)
		}
	}
	return sdk.ChannelInfo{
		Name:     "file",
		Version:  Version,
		Kind:     cfg.Kind,
		MaxBatch: maxBatch,
	}, nil
}

func parseConfig(raw []byte) (Config, error) {
	cfg := Config{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, sdk.Errorf(sdk.InvalidConfig, "",
			"file channel config: %v (the keys are path and kind)", err)
	}
	if cfg.Path == "" {
		return Config{}, sdk.Errorf(sdk.InvalidConfig, "path",
			"path is required: set it to the file messages are written to, e.g. path: ./out/messages.jsonl")
	}
	switch cfg.Kind {
	case "":
		cfg.Kind = "email"
	case "email", "sms", "webhook":
	default:
		return Config{}, sdk.Errorf(sdk.InvalidConfig, "kind", "kind %q is not one of email, sms, webhook", cfg.Kind)
	}
	return cfg, nil
}

// Send appends one line per message to the file, syncs it, and accepts
// every message with provider id "file:<key>". It writes nothing if ctx is
// done before it starts.
func (c *Channel) Send(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil, sdk.Errorf(sdk.Internal, "", "file channel: Send before Configure")
	}
	now := c.now().UTC()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for i := range msgs {
		if err := enc.Encode(newLine(&msgs[i], c.cfg.Kind, now)); err != nil {
			return nil, sdk.Errorf(sdk.InvalidArgument, "", "message %q: %v", msgs[i].Key, err)
		}
	}
	if _, err := c.f.Write(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("file channel: append to %s: %w", c.path, err)
	}
	if err := c.f.Sync(); err != nil {
		return nil, fmt.Errorf("file channel: sync %s: %w", c.path, err)
	}
	results := make([]sdk.Result, len(msgs))
	for i, m := range msgs {
		results[i] = sdk.Result{Key: m.Key, Status: sdk.Accepted, ProviderID: "file:" + m.Key}
	}
	return results, nil
}

func newLine(m *sdk.Message, kind string, now time.Time) Line {
	headers := make(map[string][]string, len(m.Headers))
	for _, h := range m.Headers {
		headers[h.Name] = append(headers[h.Name], h.Values...)
	}
	metadata := m.Metadata
	if metadata == nil {
		metadata = map[string]string{}
	}
	return Line{
		Key:        m.Key,
		CustomerID: m.CustomerID,
		To:         m.To,
		From:       m.From,
		ReplyTo:    m.ReplyTo,
		Subject:    m.Subject,
		Text:       m.Text,
		HTML:       m.HTML,
		Headers:    headers,
		Metadata:   metadata,
		Kind:       kind,
		Time:       now,
	}
}

// Close closes the file.
func (c *Channel) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	if err != nil {
		return fmt.Errorf("file channel: close %s: %w", c.path, err)
	}
	return nil
}
