package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/cohortd/cohort/sdk"
)

// console logs every message and accepts it.
type console struct {
	mu   sync.Mutex
	kind string
	log  *slog.Logger
}

var _ sdk.Channel = (*console)(nil)

type config struct {
	Kind string `yaml:"kind"`
}

// Configure reads the config strictly: an unknown key is an error.
func (c *console) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	cfg := config{Kind: "email"}
	dec := yaml.NewDecoder(bytes.NewReader(req.Config))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return sdk.ChannelInfo{}, sdk.Errorf(sdk.InvalidConfig, "", "console config: %v (the only key is kind)", err)
	}
	switch cfg.Kind {
	case "email", "sms", "webhook":
	default:
		return sdk.ChannelInfo{}, sdk.Errorf(sdk.InvalidConfig, "kind", "kind %q is not one of email, sms, webhook", cfg.Kind)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kind = cfg.Kind
	c.log = sdk.Logger().With("instance", req.Instance)
	return sdk.ChannelInfo{Name: "console", Version: "0.1.0", Kind: cfg.Kind, MaxBatch: 100}, nil
}

// Send logs each message and accepts it.
func (c *console) Send(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	log, kind := c.log, c.kind
	c.mu.Unlock()
	if log == nil {
		return nil, sdk.Errorf(sdk.Internal, "", "console: Send before Configure")
	}
	results := make([]sdk.Result, len(msgs))
	for i, m := range msgs {
		log.Info("message accepted", "key", m.Key, "kind", kind, "to", m.To, "subject", m.Subject)
		results[i] = sdk.Result{Key: m.Key, Status: sdk.Accepted, ProviderID: "console:" + m.Key}
	}
	return results, nil
}
