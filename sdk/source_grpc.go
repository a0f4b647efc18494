package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

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

// Pull serves a Pull stream. With a host that reads them (PullRequest's
// flags), customers' traits go in the compact form, and batches are sent
// in groups from a goroutine of their own (see groupSender); otherwise each
// batch is sent in its own message, with maps, as to any v1 host.
func (s *sourceServer) Pull(req *pluginv1.PullRequest, stream grpc.ServerStreamingServer[pluginv1.Batch]) error {
	if !req.GetBatchGroups() {
		// stream.Send has copied the bytes into gRPC's own buffer when it
		// returns (no stats handler or binary log holds the message on this
		// server), so one encoding buffer serves the whole stream.
		return toStatus(s.pullEncoded(stream.Context(), req, func(buf []byte) error { return sendRaw(stream, buf) }))
	}
	// While one message is being sent, the batches the source hands over
	// are encoded and queued, and the next message carries all of them. A
	// source that waits between batches (a live one) still has each sent at
	// once, in a group of one.
	g := &groupSender{}
	g.cond.L = &g.mu
	sent := make(chan error, 1)
	go func() { sent <- g.run(stream) }()
	err := s.pullEncoded(stream.Context(), req, g.add)
	// Batches already handed over go out before the stream ends, even
	// when the source failed after them, as they would one by one.
	g.close()
	if serr := <-sent; err == nil && serr != nil {
		err = fmt.Errorf("source pull: send: %w", serr)
	}
	return toStatus(err)
}

// pullEncoded runs the plugin's Pull from the request's cursor, or its
// PullFlat when it is a FlatSource, and calls emit with the wire encoding
// of each batch, which is valid until emit returns.
func (s *sourceServer) pullEncoded(ctx context.Context, req *pluginv1.PullRequest, emit func([]byte) error) error {
	var buf []byte
	sendEncoded := func(cursor string, err error) error {
		if err != nil {
			return err
		}
		if err := emit(buf); err != nil {
			return fmt.Errorf("source pull: send batch at cursor %q: %w", cursor, err)
		}
		return nil
	}
	if fs, ok := s.impl.(FlatSource); ok {
		enc := flatEncoder{indexed: req.GetIndexedTraits(), columns: req.GetIndexedTraits() && req.GetColumns()}
		return fs.PullFlat(ctx, req.GetCursor(), func(b *FlatBatch) error {
			if b == nil {
				return Errorf(Internal, "", "source pull: send called with a nil batch")
			}
			var err error
			buf, err = enc.append(buf[:0], b)
			return sendEncoded(b.Cursor, err)
		})
	}
	var names *traitIndex
	if req.GetIndexedTraits() {
		names = &traitIndex{}
	}
	return s.impl.Pull(ctx, req.GetCursor(), func(b *Batch) error {
		if b == nil {
			return Errorf(Internal, "", "source pull: send called with a nil batch")
		}
		var err error
		buf, err = appendBatchTo(buf[:0], b, names)
		return sendEncoded(b.Cursor, err)
	})
}

// sendRaw sends the wire encoding of a Batch: the bytes go as the unknown
// fields of an empty message, which protobuf copies out as they are.
func sendRaw(stream grpc.ServerStreamingServer[pluginv1.Batch], buf []byte) error {
	m := &pluginv1.Batch{}
	m.ProtoReflect().SetUnknown(buf)
	return stream.Send(m)
}

// maxGroupBytes is how much a batch group holds before the source waits
// for it to be sent; a single batch may be larger.
const maxGroupBytes = 4 << 20

// groupSender queues encoded batches for one Pull stream and sends them in
// groups (Batch.batches) from its run goroutine.
type groupSender struct {
	mu   sync.Mutex
	cond sync.Cond // on mu: pending changed, or err, or closed
	// pending holds the queued batches as Batch.batches fields; spare is
	// the buffer of the message last sent, for reuse.
	pending, spare []byte
	closed         bool
	err            error // from Send: the stream is broken
}

// add queues one encoded batch, waiting while the queue is full.
func (g *groupSender) add(batch []byte) error {
	size := 1 + protowire.SizeBytes(len(batch))
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.err == nil && len(g.pending) > 0 &&
		(len(g.pending) >= maxGroupBytes || len(g.pending)+size > maxMsgSize) {
		g.cond.Wait()
	}
	if g.err != nil {
		return g.err
	}
	g.pending = protowire.AppendTag(g.pending, fBatchBatches, protowire.BytesType)
	g.pending = append(protowire.AppendVarint(g.pending, uint64(len(batch))), batch...)
	g.cond.Broadcast()
	return nil
}

// close tells run that no batch will be added.
func (g *groupSender) close() {
	g.mu.Lock()
	g.closed = true
	g.cond.Broadcast()
	g.mu.Unlock()
}

// run sends what is queued until the queue is closed and empty, or a Send
// fails.
func (g *groupSender) run(stream grpc.ServerStreamingServer[pluginv1.Batch]) error {
	for {
		g.mu.Lock()
		for len(g.pending) == 0 && !g.closed {
			g.cond.Wait()
		}
		if len(g.pending) == 0 {
			g.mu.Unlock()
			return nil
		}
		buf := g.pending
		g.pending = g.spare[:0]
		g.cond.Broadcast() // room for the source
		g.mu.Unlock()

		err := sendRaw(stream, buf)

		g.mu.Lock()
		g.spare = buf
		if err != nil {
			g.err = err
			g.cond.Broadcast()
		}
		g.mu.Unlock()
		if err != nil {
			return err
		}
	}
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
	// legacy makes Pull ask for neither compact form, as a host that
	// predates them (for tests and benchmarks).
	legacy bool
	// noColumns makes Pull ask for the compact forms but not for
	// columns, as a host that predates columns (for tests and benchmarks).
	noColumns bool
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
	stream, err := c.client.Pull(streamCtx, c.pullRequest(cursor),
		grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.ForceCodecV2(batchCodec{}))
	if err != nil {
		return fromStatus(ctx, "source pull", err, false)
	}
	dec := &flatDecoder{}
	w := wireBatch{dec: dec}
	for {
		err := stream.RecvMsg(&w)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fromStatus(ctx, "source pull", err, false)
		}
		group, err := dec.split(w.raw)
		if err != nil {
			return malformedBatch(err)
		}
		if group == nil {
			b, err := dec.decode(w.raw)
			if err != nil {
				return malformedBatch(err)
			}
			if err := send(b); err != nil {
				return err
			}
			continue
		}
		if err := dec.decodeGroup(group, send); err != nil {
			return err
		}
	}
}

// pullRequest is what PullFlat asks a plugin for: both compact forms,
// which plugins built with an SDK that predates them ignore.
func (c *sourceClient) pullRequest(cursor string) *pluginv1.PullRequest {
	return &pluginv1.PullRequest{Cursor: cursor, IndexedTraits: !c.legacy, BatchGroups: !c.legacy, Columns: !c.legacy && !c.noColumns}
}

func malformedBatch(err error) error {
	return Errorf(Internal, "", "source pull: plugin sent a %v", err)
}

// wireBatch receives one Pull message through batchCodec.
type wireBatch struct {
	raw []byte       // the message, in dec.buf
	dec *flatDecoder // shared by the messages of one Pull
}

// batchCodec is the proto codec, except that it copies a Pull message into
// a *wireBatch, to be decoded straight from the wire (see flatDecoder). It
// is used for Pull calls only; the content-subtype stays "proto".
type batchCodec struct{}

var protoCodec = encoding.GetCodecV2(proto.Name)

func (batchCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (batchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	w, ok := v.(*wireBatch)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	// A message arrives in several buffers (HTTP/2 frames), which gRPC
	// frees when this returns; they are copied into the decoder's own
	// buffer, reused without being zeroed.
	n := data.Len()
	if cap(w.dec.buf) < n {
		w.dec.buf = make([]byte, n)
	}
	w.raw = w.dec.buf[:n]
	data.CopyTo(w.raw)
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
