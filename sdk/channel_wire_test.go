package sdk

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// edgeMessages have fields at the edges of their encodings.
func edgeMessages() []Message {
	return []Message{
		{
			Key: "digest/enter/c1/mail", CustomerID: "c1", To: "ada@example.com", From: "News <news@example.com>",
			ReplyTo: "help@example.com", Subject: "ünïcødé ✓ 🎉", Text: strings.Repeat("x", 300), HTML: strings.Repeat("<p>y</p>", 20000),
			Headers: []Header{
				{Name: "List-Unsubscribe", Values: []string{"<https://example.com/u>", ""}},
				{Name: "", Values: nil},
				{Name: "X-Empty-Values", Values: []string{}},
			},
			Metadata: map[string]string{"variant": "a", "campaign": "digest", "": "", "empty": "", "z": strings.Repeat("v", 200)},
		},
		{},
		{Key: "only-key", Metadata: map[string]string{}},
		{To: "b@example.com", Headers: []Header{{Name: "A", Values: []string{"1", "2", "3"}}}},
	}
}

func edgeResults() []Result {
	return []Result{
		{Key: "k1", Status: Accepted, ProviderID: "queued-1"},
		{},
		{Key: "k2", Status: Retryable, RetryAfter: 30 * time.Second, Reason: "RCPT TO <b@example.com>: 451 try later", Code: "451"},
		{Key: "k3", Status: Permanent, Reason: strings.Repeat("r", 300), Code: "550"},
		{Key: "k4", Status: OutcomeUnknown, RetryAfter: 1500 * time.Microsecond},
		{Key: "k5", Status: ResultStatus(-1), RetryAfter: -time.Second},
		{Key: "k6", Status: ResultStatus(math.MaxInt32), RetryAfter: time.Duration(math.MaxInt64)},
		{Key: "ünïcødé", Status: Suppress, Reason: "🎉"},
	}
}

// TestWireSendMatchesProtobuf checks the hand-written Send codec against
// protobuf-go: appendSendRequest writes what proto.Marshal (deterministic)
// writes for messagesToPB, appendSendResponse what it writes for
// resultsToPB, and decodeSendResponse reads proto.Marshal's bytes as
// proto.Unmarshal and resultsFromPB do.
func TestWireSendMatchesProtobuf(t *testing.T) {
	det := proto.MarshalOptions{Deterministic: true}
	for n := range len(edgeMessages()) + 1 {
		msgs := edgeMessages()[:n]
		got, ok := appendSendRequest([]byte("prefix"), msgs)
		if !ok {
			t.Fatalf("%d messages: not encoded", n)
		}
		want, err := det.Marshal(messagesToPB(msgs))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "prefix"+string(want) {
			t.Fatalf("%d messages: request differs from protobuf's:\n got %x\nwant %x", n, got[len("prefix"):], want)
		}
		// And the plugin reads it back as before.
		var req pluginv1.SendRequest
		if err := proto.Unmarshal(got[len("prefix"):], &req); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(messagesFromPB(messagesToPB(msgs)), messagesFromPB(&req)); diff != "" {
			t.Fatalf("%d messages: read back (-want +got):\n%s", n, diff)
		}
	}
	for n := range len(edgeResults()) + 1 {
		rs := edgeResults()[:n]
		got, ok := appendSendResponse(nil, rs)
		if !ok {
			t.Fatalf("%d results: not encoded", n)
		}
		want, err := det.Marshal(resultsToPB(rs))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("%d results: response differs from protobuf's:\n got %x\nwant %x", n, got, want)
		}
		// What the plugin hands protobuf marshals to the same bytes.
		viaUnknown, err := det.Marshal(sendResponseToPB(rs))
		if err != nil {
			t.Fatal(err)
		}
		if string(viaUnknown) != string(want) {
			t.Fatalf("%d results: sendResponseToPB marshals to %x, want %x", n, viaUnknown, want)
		}
		decoded, ok := decodeSendResponse(want)
		if !ok {
			t.Fatalf("%d results: protobuf's bytes not decoded", n)
		}
		var resp pluginv1.SendResponse
		if err := proto.Unmarshal(want, &resp); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(resultsFromPB(&resp), decoded); diff != "" {
			t.Fatalf("%d results: decoded (-protobuf +hand-written):\n%s", n, diff)
		}
	}
}

// TestWireSendInvalidUTF8 checks that what protobuf refuses to encode is
// left to protobuf.
func TestWireSendInvalidUTF8(t *testing.T) {
	bad := "bad \xff"
	for i, m := range []Message{{Subject: bad}, {Headers: []Header{{Name: "X", Values: []string{bad}}}}, {Metadata: map[string]string{bad: "v"}},
		{Metadata: map[string]string{"k": bad}}} {
		if _, ok := appendSendRequest(nil, []Message{{Key: "fine"}, m}); ok {
			t.Errorf("message %d: encoded a string that is not UTF-8", i)
		}
		if _, err := proto.Marshal(messagesToPB([]Message{m})); err == nil {
			t.Errorf("message %d: protobuf encodes it", i)
		}
	}
	for i, r := range []Result{{Key: bad}, {ProviderID: bad}, {Reason: bad}, {Code: bad}} {
		if _, ok := appendSendResponse(nil, []Result{r}); ok {
			t.Errorf("result %d: encoded a string that is not UTF-8", i)
		}
		if got := sendResponseToPB([]Result{r}); len(got.ProtoReflect().GetUnknown()) != 0 || len(got.GetResults()) != 1 {
			t.Errorf("result %d: not left to protobuf", i)
		}
	}
}

// FuzzDecodeSendResponse checks that decodeSendResponse takes what
// proto.Unmarshal takes, reads it the same, and declines the rest.
func FuzzDecodeSendResponse(f *testing.F) {
	good, _ := appendSendResponse(nil, edgeResults())
	f.Add(good)
	f.Add([]byte{})
	// A known field with another wire type, an unknown field, a group.
	odd := protowire.AppendTag(nil, fSendResponseResults, protowire.VarintType)
	odd = protowire.AppendVarint(odd, 7)
	inner := protowire.AppendTag(nil, fResultKey, protowire.VarintType)
	inner = protowire.AppendVarint(inner, 1)
	inner = protowire.AppendTag(inner, fResultStatus, protowire.BytesType)
	inner = protowire.AppendString(inner, "x")
	inner = protowire.AppendTag(inner, 99, protowire.StartGroupType)
	inner = protowire.AppendTag(inner, 99, protowire.EndGroupType)
	inner = protowire.AppendTag(inner, fResultStatus, protowire.VarintType)
	inner = protowire.AppendVarint(inner, math.MaxUint64)
	odd = protowire.AppendTag(odd, fSendResponseResults, protowire.BytesType)
	odd = protowire.AppendBytes(odd, inner)
	f.Add(odd)
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x01, 0xff})
	f.Add([]byte{0xa5, 0xb8, 0x95, 0x8f, 0x30, 0x30, 0x30, 0x30, 0x30}) // a field number beyond the largest
	f.Add([]byte{0x0a, 0x06, 0xa5, 0xb8, 0x95, 0x8f, 0x30, 0x30})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := decodeSendResponse(b)
		var resp pluginv1.SendResponse
		err := proto.Unmarshal(b, &resp)
		if ok != (err == nil) {
			t.Fatalf("%x: decoded %v, protobuf's error %v", b, ok, err)
		}
		if !ok {
			return
		}
		if diff := cmp.Diff(resultsFromPB(&resp), got); diff != "" {
			t.Fatalf("%x: (-protobuf +hand-written):\n%s", b, diff)
		}
	})
}

func BenchmarkSendCodec(b *testing.B) {
	msgs := make([]Message, 100)
	for i := range msgs {
		msgs[i] = edgeMessages()[0]
		msgs[i].HTML = strings.Repeat("<p>y</p>", 200)
	}
	rs := make([]Result, 100)
	for i := range rs {
		rs[i] = edgeResults()[0]
	}
	b.Run("request/protobuf", func(b *testing.B) {
		for b.Loop() {
			if _, err := proto.Marshal(messagesToPB(msgs)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("request/wire", func(b *testing.B) {
		for b.Loop() {
			appendSendRequest(make([]byte, 0, sendRequestSizeHint(msgs)), msgs)
		}
	})
	enc, _ := appendSendResponse(nil, rs)
	b.Run("response/protobuf", func(b *testing.B) {
		for b.Loop() {
			var resp pluginv1.SendResponse
			if err := proto.Unmarshal(enc, &resp); err != nil {
				b.Fatal(err)
			}
			resultsFromPB(&resp)
		}
	})
	b.Run("response/wire", func(b *testing.B) {
		for b.Loop() {
			decodeSendResponse(enc)
		}
	})
}
