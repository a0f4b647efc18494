package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// sourceServer is the plugin side: it serves cohort.plugin.v1.Source by
// calling the plugin's Source.
type sourceServer struct {
	pluginv1.UnimplementedSourceServer
	impl Source
}

var _ pluginv1.SourceServer = (*sourceServer)(nil)

func (s *sourceServer) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) (*pluginv1.SourceInfo, error) {
	info, err := s.impl.Configure(ctx, configureRequestFromPB(req))
	if err != nil {
		return nil, toStatus(err)
	}
	_, info.Webhooks = s.impl.(SourceWebhooker)
	return sourceInfoToPB(&info), nil
}

func (s *sourceServer) Pull(req *pluginv1.PullRequest, stream grpc.ServerStreamingServer[pluginv1.Batch]) error {
	// One encoding buffer serves the whole stream: stream.Send has copied
	// the bytes into gRPC's own buffer when it returns (no stats handler or
	// binary log holds the message on this server).
	var buf []byte
	err := s.impl.Pull(stream.Context(), req.GetCursor(), func(b *Batch) error {
		if b == nil {
			return Errorf(Internal, "", "source pull: send called with a nil batch")
		}
		var err error
		if buf, err = appendBatch(buf[:0], b); err != nil {
			return err
		}
		m := &pluginv1.Batch{}
		m.ProtoReflect().SetUnknown(buf)
		if err := stream.Send(m); err != nil {
			return fmt.Errorf("source pull: send batch at cursor %q: %w", b.Cursor, err)
		}
		return nil
	})
	return toStatus(err)
}

func (s *sourceServer) Webhook(ctx context.Context, req *pluginv1.WebhookRequest) (*pluginv1.SourceWebhookResponse, error) {
	wh, ok := s.impl.(SourceWebhooker)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "source does not implement webhooks")
	}
	resp, err := wh.Webhook(ctx, webhookRequestFromPB(req))
	if err != nil {
		return nil, toStatus(err)
	}
	if resp == nil {
		return nil, status.Error(codes.Internal, "source webhook: returned a nil response")
	}
	out, err := sourceWebhookResponseToPB(resp)
	if err != nil {
		return nil, toStatus(err)
	}
	return out, nil
}

// sourceClient is the host side: a Source backed by a plugin process.
type sourceClient struct {
	client pluginv1.SourceClient
}

var (
	_ Source          = (*sourceClient)(nil)
	_ FlatSource      = (*sourceClient)(nil)
	_ SourceWebhooker = (*sourceClient)(nil)
)

// Configure calls the plugin's Configure.
func (c *sourceClient) Configure(ctx context.Context, req ConfigureRequest) (SourceInfo, error) {
	info, err := c.client.Configure(ctx, configureRequestToPB(&req))
	if err != nil {
		return SourceInfo{}, fromStatus(ctx, "source configure", err, true)
	}
	return sourceInfoFromPB(info), nil
}

// Pull streams batches from the plugin and calls send for each, in order.
// It returns nil when the plugin ends the stream, ctx's error when ctx is
// done, and send's error (ending the stream) when send fails.
func (c *sourceClient) Pull(ctx context.Context, cursor string, send func(*Batch) error) error {
	return c.PullFlat(ctx, cursor, func(b *FlatBatch) error { return send(b.Batch()) })
}

// PullFlat is Pull with batches in flat form, decoded straight from the
// wire into one reused FlatBatch.
func (c *sourceClient) PullFlat(ctx context.Context, cursor string, send func(*FlatBatch) error) error {
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.client.Pull(streamCtx, &pluginv1.PullRequest{Cursor: cursor},
		grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.ForceCodecV2(batchCodec{}))
	if err != nil {
		return fromStatus(ctx, "source pull", err, false)
	}
	w := wireBatch{dec: &flatDecoder{}}
	for {
		err := stream.RecvMsg(&w)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fromStatus(ctx, "source pull", err, false)
		}
		if err := send(w.batch); err != nil {
			return err
		}
	}
}

// wireBatch receives one Pull batch through batchCodec.
type wireBatch struct {
	batch *FlatBatch
	dec   *flatDecoder // shared by the batches of one Pull
}

// batchCodec is the proto codec, except that it decodes a Pull batch into
// a *wireBatch straight from the wire (see flatDecoder). It is used for
// Pull calls only; the content-subtype stays "proto".
type batchCodec struct{}

var protoCodec = encoding.GetCodecV2(proto.Name)

func (batchCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (batchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	w, ok := v.(*wireBatch)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	// A batch arrives in several buffers (HTTP/2 frames); they are copied
	// into the decoder's own buffer, reused without being zeroed.
	var raw []byte
	if len(data) == 1 {
		raw = data[0].ReadOnlyData()
	} else {
		n := data.Len()
		if cap(w.dec.buf) < n {
			w.dec.buf = make([]byte, n)
		}
		raw = w.dec.buf[:n]
		data.CopyTo(raw)
	}
	b, err := w.dec.decode(raw)
	if err != nil {
		return Errorf(Internal, "", "source pull: plugin sent a %v", err)
	}
	w.batch = b
	return nil
}

func (batchCodec) Name() string { return proto.Name }

// Webhook forwards a webhook request to the plugin. It returns an error
// wrapping ErrNoWebhooks when the plugin has none.
func (c *sourceClient) Webhook(ctx context.Context, req *WebhookRequest) (*SourceWebhookResponse, error) {
	resp, err := c.client.Webhook(ctx, webhookRequestToPB(req), grpc.MaxCallRecvMsgSize(maxMsgSize))
	if err != nil {
		if status.Code(err) == codes.Unimplemented && ctx.Err() == nil {
			return nil, fmt.Errorf("source webhook: %w", ErrNoWebhooks)
		}
		return nil, fromStatus(ctx, "source webhook", err, false)
	}
	out := sourceWebhookResponseFromPB(resp)
	if out.Response.Status == 0 {
		out.Response.Status = 200
	}
	return out, nil
}
