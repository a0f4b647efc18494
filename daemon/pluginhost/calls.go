package pluginhost

import (
	"context"
	"fmt"

	"github.com/cohortd/cohort/sdk"
)

// The Instance's methods below are what the rest of the daemon calls. They
// wait for a live plugin (bounded by ctx), apply the instance's timeout, and
// report broken clients to the supervisor, so a crashed plugin is replaced and
// the next call goes to a fresh process.

var (
	_ sdk.Source           = (*SourceClient)(nil)
	_ sdk.FlatSource       = (*SourceClient)(nil)
	_ sdk.SourceWebhooker  = (*SourceClient)(nil)
	_ sdk.Channel          = (*ChannelClient)(nil)
	_ sdk.ChannelWebhooker = (*ChannelClient)(nil)
)

// SourceClient calls a source instance through its supervisor.
type SourceClient struct{ i *Instance }

// ChannelClient calls a channel instance through its supervisor.
type ChannelClient struct{ i *Instance }

// Configure returns the info from the current plugin's Configure, which the
// supervisor already called; it does not reconfigure.
func (c *SourceClient) Configure(ctx context.Context, _ sdk.ConfigureRequest) (sdk.SourceInfo, error) {
	if _, _, _, err := c.i.current(ctx); err != nil {
		return sdk.SourceInfo{}, err
	}
	return c.i.SourceInfo(), nil
}

// Pull streams from the current plugin. It has no per-call timeout (live
// sources keep the stream open); ctx bounds it.
func (c *SourceClient) Pull(ctx context.Context, cursor string, send func(*sdk.Batch) error) error {
	return c.pull(ctx, func(src sdk.Source) error { return src.Pull(ctx, cursor, send) })
}

// PullFlat is Pull with batches in the flat form ingestion consumes
// (sdk.FlatBatch), decoded from the wire without a map per customer.
func (c *SourceClient) PullFlat(ctx context.Context, cursor string, send func(*sdk.FlatBatch) error) error {
	return c.pull(ctx, func(src sdk.Source) error { return sdk.PullFlat(ctx, src, cursor, send) })
}

// pull runs pull on the current plugin and reports its outcome to the
// supervisor.
func (c *SourceClient) pull(ctx context.Context, pull func(sdk.Source) error) error {
	gen, src, _, err := c.i.current(ctx)
	if err != nil {
		return err
	}
	err = pull(src)
	c.i.report(ctx, gen, err)
	if err != nil {
		return fmt.Errorf("source %q: pull: %w", c.i.name, err)
	}
	return nil
}

// Webhook forwards a webhook to the current plugin.
func (c *SourceClient) Webhook(ctx context.Context, req *sdk.WebhookRequest) (*sdk.SourceWebhookResponse, error) {
	gen, src, _, err := c.i.current(ctx)
	if err != nil {
		return nil, err
	}
	wh, ok := src.(sdk.SourceWebhooker)
	if !ok {
		return nil, sdk.ErrNoWebhooks
	}
	cctx, cancel := c.i.callCtx(ctx)
	defer cancel()
	resp, err := wh.Webhook(cctx, req)
	c.i.report(cctx, gen, err)
	return resp, err
}

// Configure returns the info from the current plugin's Configure.
func (c *ChannelClient) Configure(ctx context.Context, _ sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	if _, _, _, err := c.i.current(ctx); err != nil {
		return sdk.ChannelInfo{}, err
	}
	return c.i.ChannelInfo(), nil
}

// Send sends through the current plugin. An error means nothing is known of
// any message in the call (the plugin may have crashed mid-call).
func (c *ChannelClient) Send(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	gen, _, ch, err := c.i.current(ctx)
	if err != nil {
		return nil, err
	}
	cctx, cancel := c.i.callCtx(ctx)
	defer cancel()
	res, err := ch.Send(cctx, msgs)
	c.i.report(cctx, gen, err)
	if err != nil {
		return nil, fmt.Errorf("channel %q: send: %w", c.i.name, err)
	}
	return res, nil
}

// Webhook forwards a provider webhook to the current plugin.
func (c *ChannelClient) Webhook(ctx context.Context, req *sdk.WebhookRequest) (*sdk.ChannelWebhookResponse, error) {
	gen, _, ch, err := c.i.current(ctx)
	if err != nil {
		return nil, err
	}
	wh, ok := ch.(sdk.ChannelWebhooker)
	if !ok {
		return nil, sdk.ErrNoWebhooks
	}
	cctx, cancel := c.i.callCtx(ctx)
	defer cancel()
	resp, err := wh.Webhook(cctx, req)
	c.i.report(cctx, gen, err)
	return resp, err
}
