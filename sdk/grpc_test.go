package sdk

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// connect serves src and ch over a real gRPC connection and returns what
// the host dispenses for them.
func connect(t *testing.T, src Source, ch Channel) (*sourceClient, *channelClient) {
	t.Helper()
	client := testConn(t, servedPlugins(src, ch)[ProtocolV1])
	var sc *sourceClient
	var cc *channelClient
	if src != nil {
		raw, err := client.Dispense(SourcePluginName)
		if err != nil {
			t.Fatalf("dispense source: %v", err)
		}
		sc = raw.(*sourceClient)
	}
	if ch != nil {
		raw, err := client.Dispense(ChannelPluginName)
		if err != nil {
			t.Fatalf("dispense channel: %v", err)
		}
		cc = raw.(*channelClient)
	}
	return sc, cc
}

// errChannel fails every call with err, or blocks until ctx is done when
// err is nil.
type errChannel struct{ err error }

func (c *errChannel) Configure(context.Context, ConfigureRequest) (ChannelInfo, error) {
	return ChannelInfo{}, c.err
}

func (c *errChannel) Send(ctx context.Context, _ []Message) ([]Result, error) {
	if c.err != nil {
		return nil, c.err
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

type hookChannel struct{ errChannel }

func (c *hookChannel) Configure(context.Context, ConfigureRequest) (ChannelInfo, error) {
	return ChannelInfo{Name: "hook", Version: "1", Kind: "sms"}, nil
}

func (c *hookChannel) Webhook(_ context.Context, req *WebhookRequest) (*ChannelWebhookResponse, error) {
	return &ChannelWebhookResponse{
		Response: HTTPResponse{Body: []byte(req.Header("X-Echo"))},
		Events:   []DeliveryEvent{{Key: "o-1", Type: DeliveryDelivered}},
	}, nil
}

func TestErrorsCrossTheBoundary(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		want    Error
		wantMsg string
	}{
		{
			name:    "typed",
			err:     Errorf(InvalidConfig, "kind", "kind %q is not one of email, sms, webhook", "fax"),
			want:    Error{Code: InvalidConfig, Field: "kind", Message: `kind "fax" is not one of email, sms, webhook`},
			wantMsg: `kind "fax" is not one of email, sms, webhook`,
		},
		{
			name:    "typed without field",
			err:     Errorf(Unavailable, "", "provider answered 503"),
			want:    Error{Code: Unavailable, Message: "provider answered 503"},
			wantMsg: "provider answered 503",
		},
		{
			name:    "wrapped",
			err:     fmt.Errorf("smtp relay: %w", Errorf(Unauthenticated, "password", "login refused")),
			want:    Error{Code: Unauthenticated, Field: "password", Message: "login refused"},
			wantMsg: "smtp relay: password: login refused",
		},
		{
			name:    "plain",
			err:     errors.New("disk full"),
			want:    Error{Code: Unknown, Message: "channel send: disk full"},
			wantMsg: "channel send: disk full",
		},
		{
			name:    "grpc status",
			err:     status.Error(codes.NotFound, "no such list"),
			want:    Error{Code: NotFound, Message: "channel send: no such list"},
			wantMsg: "channel send: no such list",
		},
	}
	for _, code := range []ErrorCode{InvalidArgument, NotFound, DeadlineExceeded, PermissionDenied, ResourceExhausted, Internal} {
		tests = append(tests, struct {
			name    string
			err     error
			want    Error
			wantMsg string
		}{
			name:    code.String(),
			err:     Errorf(code, "to", "bad thing"),
			want:    Error{Code: code, Field: "to", Message: "bad thing"},
			wantMsg: "to: bad thing",
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ch := connect(t, nil, &errChannel{err: tt.err})
			_, err := ch.Send(t.Context(), []Message{{Key: "o-1", To: "ada@example.com"}})
			var got *Error
			if !errors.As(err, &got) {
				t.Fatalf("Send error %v (%T) is not an *sdk.Error", err, err)
			}
			if *got != tt.want {
				t.Errorf("error = %+v, want %+v", *got, tt.want)
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("message = %q, want %q", err.Error(), tt.wantMsg)
			}
		})
	}
}

func TestConfigureInvalidArgumentIsInvalidConfig(t *testing.T) {
	// A plugin in another language may send a bare status.
	_, ch := connect(t, nil, &errChannel{err: status.Error(codes.InvalidArgument, "path is required")})
	_, err := ch.Configure(t.Context(), ConfigureRequest{})
	var got *Error
	if !errors.As(err, &got) || got.Code != InvalidConfig {
		t.Fatalf("Configure error = %#v, want an *Error with code INVALID_CONFIG", err)
	}
}

func TestContextErrorsCrossTheBoundary(t *testing.T) {
	_, ch := connect(t, nil, &errChannel{})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := ch.Send(ctx, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Send error = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := ch.Send(ctx, nil)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Send error = %v, want context.Canceled", err)
		}
	})
	t.Run("plugin clock a moment ahead", func(t *testing.T) {
		// A plugin in another process (Node.js counts whole milliseconds)
		// may call the deadline it was sent passed just before the host's
		// own timer fires: that is still the host's deadline.
		_, ch := connect(t, nil, &errChannel{err: status.Error(codes.DeadlineExceeded, "deadline exceeded before sending")})
		ctx, cancel := context.WithTimeout(t.Context(), deadlineSlack-2*time.Millisecond)
		defer cancel()
		_, err := ch.Send(ctx, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Send error = %#v, want context.DeadlineExceeded", err)
		}
		// Well before the host's deadline, it is the plugin's own.
		ctx, cancel = context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err = ch.Send(ctx, nil)
		var e *Error
		if !errors.As(err, &e) || e.Code != DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Send error = %#v, want an *Error DEADLINE_EXCEEDED, not the host's context error", err)
		}
	})
	t.Run("plugin side", func(t *testing.T) {
		// The plugin's own deadline expired: the host's ctx is fine.
		_, ch := connect(t, nil, &errChannel{err: fmt.Errorf("provider call: %w", context.DeadlineExceeded)})
		_, err := ch.Send(t.Context(), nil)
		var e *Error
		if !errors.As(err, &e) || e.Code != DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Send error = %#v, want an *Error DEADLINE_EXCEEDED, not the host's context error", err)
		}
	})
}

func TestClosedConnectionIsUnavailable(t *testing.T) {
	client := testConn(t, servedPlugins(nil, &errChannel{})[ProtocolV1])
	raw, err := client.Dispense(ChannelPluginName)
	if err != nil {
		t.Fatal(err)
	}
	_ = client.Close() // as when the host kills the plugin
	_, err = raw.(Channel).Configure(t.Context(), ConfigureRequest{})
	var e *Error
	if !errors.As(err, &e) || e.Code != Unavailable {
		t.Errorf("Configure on a closed connection = %#v, want an *Error UNAVAILABLE", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Errorf("Configure on a closed connection = %v: looks like the host cancelled", err)
	}
}

func TestWebhookUnimplemented(t *testing.T) {
	src := &countSource{batches: 1}
	sc, cc := connect(t, src, &errChannel{err: errors.New("unused")})

	if _, err := cc.Webhook(t.Context(), webhookRequest()); !errors.Is(err, ErrNoWebhooks) {
		t.Errorf("channel Webhook error = %v, want ErrNoWebhooks", err)
	}
	if _, err := sc.Webhook(t.Context(), webhookRequest()); !errors.Is(err, ErrNoWebhooks) {
		t.Errorf("source Webhook error = %v, want ErrNoWebhooks", err)
	}
	info, err := sc.Configure(t.Context(), ConfigureRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Webhooks {
		t.Error("source without Webhook reports Webhooks = true")
	}

	// The servers answer codes.Unimplemented, as a non-Go host would see it.
	_, err = (&channelServer{impl: &errChannel{}}).Webhook(t.Context(), &pluginv1.WebhookRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("channel server Webhook code = %v, want Unimplemented", status.Code(err))
	}
	_, err = (&sourceServer{impl: src}).Webhook(t.Context(), &pluginv1.WebhookRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("source server Webhook code = %v, want Unimplemented", status.Code(err))
	}
}

func TestWebhookImplemented(t *testing.T) {
	_, ch := connect(t, nil, &hookChannel{})
	info, err := ch.Configure(t.Context(), ConfigureRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Webhooks {
		t.Error("channel with Webhook reports Webhooks = false")
	}
	req := webhookRequest()
	req.Headers = append(req.Headers, Header{Name: "X-Echo", Values: []string{"pong"}})
	resp, err := ch.Webhook(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Response.Status != 200 || string(resp.Response.Body) != "pong" || len(resp.Events) != 1 {
		t.Errorf("Webhook = %+v, want status 200 (from 0), body pong, one event", resp)
	}
}

// testConn connects a go-plugin gRPC client and server serving ps. Closing
// the client shuts the server down through go-plugin's controller.
func testConn(t *testing.T, ps plugin.PluginSet) *plugin.GRPCClient {
	t.Helper()
	client, server := plugin.TestPluginGRPCConn(t, false, ps)
	t.Cleanup(func() {
		_ = client.Close()
		select {
		case <-server.DoneCh:
		case <-time.After(5 * time.Second):
			t.Error("plugin server did not stop within 5s of closing the client")
		}
	})
	return client
}

// countSource sends batches numbered from the cursor on; a live source then
// waits for ctx.
type countSource struct {
	batches int
	live    bool
}

func (s *countSource) Configure(context.Context, ConfigureRequest) (SourceInfo, error) {
	return SourceInfo{Name: "count", Version: "1"}, nil
}

func (s *countSource) Pull(ctx context.Context, cursor string, send func(*Batch) error) error {
	var start int
	if cursor != "" {
		if _, err := fmt.Sscanf(cursor, "%d", &start); err != nil {
			return Errorf(InvalidArgument, "cursor", "cursor %q is not a number", cursor)
		}
	}
	for i := start; i < s.batches; i++ {
		b := &Batch{
			Customers: []Customer{{ID: fmt.Sprintf("c%d", i), Traits: map[string]Value{"n": Number(float64(i))}}},
			Cursor:    fmt.Sprint(i + 1),
			CaughtUp:  i == s.batches-1,
		}
		if err := send(b); err != nil {
			return err
		}
	}
	if s.live {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func TestPull(t *testing.T) {
	t.Run("finite", func(t *testing.T) {
		src, _ := connect(t, &countSource{batches: 5}, nil)
		var ids []string
		err := src.Pull(t.Context(), "2", func(b *Batch) error {
			ids = append(ids, b.Customers[0].ID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(ids, ",") != "c2,c3,c4" {
			t.Errorf("pulled %v, want c2,c3,c4", ids)
		}
	})
	t.Run("send error stops the stream", func(t *testing.T) {
		src, _ := connect(t, &countSource{batches: 5}, nil)
		stop := errors.New("host is full")
		n := 0
		err := src.Pull(t.Context(), "", func(*Batch) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Errorf("Pull = %v after %d batches, want the send error after 1", err, n)
		}
	})
	t.Run("live source cancelled", func(t *testing.T) {
		src, _ := connect(t, &countSource{batches: 2, live: true}, nil)
		ctx, cancel := context.WithCancel(t.Context())
		var caughtUp bool
		err := src.Pull(ctx, "", func(b *Batch) error {
			if b.CaughtUp {
				caughtUp = true
				cancel()
			}
			return nil
		})
		if !caughtUp || !errors.Is(err, context.Canceled) {
			t.Errorf("Pull = %v (caught up %v), want context.Canceled after caught up", err, caughtUp)
		}
	})
	t.Run("typed error", func(t *testing.T) {
		src, _ := connect(t, &countSource{batches: 2}, nil)
		err := src.Pull(t.Context(), "bogus", func(*Batch) error { return nil })
		var e *Error
		if !errors.As(err, &e) || e.Code != InvalidArgument || e.Field != "cursor" {
			t.Errorf("Pull error = %v, want INVALID_ARGUMENT on cursor", err)
		}
	})
}

func TestChannelDispensedFromSourceOnlyPlugin(t *testing.T) {
	client := testConn(t, servedPlugins(&countSource{}, nil)[ProtocolV1])
	// The host's plugin set has both; this plugin serves only a source.
	client.Plugins = VersionedPlugins()[ProtocolV1]
	raw, err := client.Dispense(ChannelPluginName)
	if err != nil {
		t.Fatal(err)
	}
	_, err = raw.(Channel).Configure(t.Context(), ConfigureRequest{})
	if err == nil {
		t.Fatal("Configure on a plugin without a channel succeeded")
	}
}

func TestPluginSets(t *testing.T) {
	host := VersionedPlugins()
	if len(host) != 1 || len(host[ProtocolV1]) != 2 {
		t.Fatalf("VersionedPlugins = %v, want protocol 1 with source and channel", host)
	}
	for _, name := range []string{SourcePluginName, ChannelPluginName} {
		if _, ok := host[ProtocolV1][name].(plugin.GRPCPlugin); !ok {
			t.Errorf("host plugin %q is not a go-plugin GRPCPlugin", name)
		}
	}
	cfg := ServeConfig(WithChannel(&errChannel{}))
	if cfg.GRPCServer == nil {
		t.Error("ServeConfig has no GRPCServer: go-plugin would pick net/rpc")
	}
	if cfg.HandshakeConfig != Handshake || Handshake.ProtocolVersion != ProtocolV1 || len(Handshake.MagicCookieValue) != 64 {
		t.Errorf("handshake = %+v", cfg.HandshakeConfig)
	}
	served := cfg.VersionedPlugins[ProtocolV1]
	if _, ok := served[SourcePluginName]; ok || served[ChannelPluginName] == nil {
		t.Errorf("a channel-only plugin serves %v, want only the channel", served)
	}
}
