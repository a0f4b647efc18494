package sdk

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// channelServer is the plugin side: it serves cohort.plugin.v1.Channel by
// calling the plugin's Channel.
type channelServer struct {
	pluginv1.UnimplementedChannelServer
	impl Channel
}

var _ pluginv1.ChannelServer = (*channelServer)(nil)

func (s *channelServer) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) (*pluginv1.ChannelInfo, error) {
	info, err := s.impl.Configure(ctx, configureRequestFromPB(req))
	if err != nil {
		return nil, toStatus(err)
	}
	_, info.Webhooks = s.impl.(ChannelWebhooker)
	return channelInfoToPB(&info), nil
}

func (s *channelServer) Send(ctx context.Context, req *pluginv1.SendRequest) (*pluginv1.SendResponse, error) {
	results, err := s.impl.Send(ctx, messagesFromPB(req))
	if err != nil {
		return nil, toStatus(err)
	}
	return sendResponseToPB(results), nil
}

func (s *channelServer) Webhook(ctx context.Context, req *pluginv1.WebhookRequest) (*pluginv1.ChannelWebhookResponse, error) {
	wh, ok := s.impl.(ChannelWebhooker)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "channel does not implement webhooks")
	}
	resp, err := wh.Webhook(ctx, webhookRequestFromPB(req))
	if err != nil {
		return nil, toStatus(err)
	}
	if resp == nil {
		return nil, status.Error(codes.Internal, "channel webhook: returned a nil response")
	}
	return channelWebhookResponseToPB(resp), nil
}

// channelClient is the host side: a Channel backed by a plugin process.
type channelClient struct {
	client pluginv1.ChannelClient
}

var (
	_ Channel          = (*channelClient)(nil)
	_ ChannelWebhooker = (*channelClient)(nil)
)

// Configure calls the plugin's Configure.
func (c *channelClient) Configure(ctx context.Context, req ConfigureRequest) (ChannelInfo, error) {
	info, err := c.client.Configure(ctx, configureRequestToPB(&req))
	if err != nil {
		return ChannelInfo{}, fromStatus(ctx, "channel configure", err, true)
	}
	return channelInfoFromPB(info), nil
}

// Send sends msgs through the plugin.
func (c *channelClient) Send(ctx context.Context, msgs []Message) ([]Result, error) {
	codec := &sendCodec{}
	req := &pluginv1.SendRequest{}
	if b, ok := appendSendRequest(make([]byte, 0, sendRequestSizeHint(msgs)), msgs); ok {
		codec.req = b
	} else {
		req = messagesToPB(msgs)
	}
	resp, err := c.client.Send(ctx, req, grpc.MaxCallSendMsgSize(maxMsgSize), grpc.MaxCallRecvMsgSize(maxMsgSize),
		grpc.ForceCodecV2(codec))
	if err != nil {
		return nil, fromStatus(ctx, "channel send", err, false)
	}
	if codec.decoded {
		return codec.results, nil
	}
	return resultsFromPB(resp), nil
}

// Webhook forwards a webhook request to the plugin. It returns an error
// wrapping ErrNoWebhooks when the plugin has none.
func (c *channelClient) Webhook(ctx context.Context, req *WebhookRequest) (*ChannelWebhookResponse, error) {
	resp, err := c.client.Webhook(ctx, webhookRequestToPB(req), grpc.MaxCallRecvMsgSize(maxMsgSize))
	if err != nil {
		if status.Code(err) == codes.Unimplemented && ctx.Err() == nil {
			return nil, fmt.Errorf("channel webhook: %w", ErrNoWebhooks)
		}
		return nil, fromStatus(ctx, "channel webhook", err, false)
	}
	out := channelWebhookResponseFromPB(resp)
	if out.Response.Status == 0 {
		out.Response.Status = 200
	}
	return out, nil
}
