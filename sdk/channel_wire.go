package sdk

import (
	"slices"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// The Send hot path does not build protobuf messages where it can avoid
// it: the host writes a SendRequest straight in the wire format of
// cohort.plugin.v1.SendRequest and reads the SendResponse straight into
// Results (sendCodec); the plugin writes its SendResponse in the wire
// format and hands it to protobuf as the unknown fields of an empty
// SendResponse, which protobuf copies out as they are. The bytes are those
// proto.Marshal writes (with Deterministic, which sorts metadata keys);
// whatever protobuf would refuse (a string that is not UTF-8, a malformed
// answer) takes the protobuf path, so it fails exactly as before.
// TestWireSendMatchesProtobuf keeps the field numbers honest.

// Field numbers of plugin.proto's Send messages.
const (
	fSendRequestMessages = 1

	fMessageKey, fMessageCustomerID, fMessageTo, fMessageFrom = 1, 2, 3, 4
	fMessageReplyTo, fMessageSubject, fMessageText            = 5, 6, 7
	fMessageHTML, fMessageHeaders, fMessageMetadata           = 8, 9, 10

	fHeaderName, fHeaderValues = 1, 2
	fMapKey, fMapValue         = 1, 2

	fSendResponseResults = 1

	fResultKey, fResultStatus, fResultProviderID = 1, 2, 3
	fResultRetryAfterMs, fResultReason           = 4, 5
	fResultCode                                  = 6
)

// appendSendRequest appends the wire encoding of messagesToPB(msgs). ok is
// false when a string is not valid UTF-8, which protobuf refuses to encode.
func appendSendRequest(b []byte, msgs []Message) (_ []byte, ok bool) {
	var keys []string // sorted metadata keys, reused
	for i := range msgs {
		m := &msgs[i]
		if !messageUTF8(m) {
			return b, false
		}
		keys = sortedKeys(keys[:0], m.Metadata)
		b = protowire.AppendTag(b, fSendRequestMessages, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(messageSize(m, keys)))
		b = appendString(b, fMessageKey, m.Key)
		b = appendString(b, fMessageCustomerID, m.CustomerID)
		b = appendString(b, fMessageTo, m.To)
		b = appendString(b, fMessageFrom, m.From)
		b = appendString(b, fMessageReplyTo, m.ReplyTo)
		b = appendString(b, fMessageSubject, m.Subject)
		b = appendString(b, fMessageText, m.Text)
		b = appendString(b, fMessageHTML, m.HTML)
		for _, h := range m.Headers {
			b = protowire.AppendTag(b, fMessageHeaders, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(headerSize(&h)))
			b = appendString(b, fHeaderName, h.Name)
			for _, v := range h.Values {
				b = protowire.AppendTag(b, fHeaderValues, protowire.BytesType)
				b = protowire.AppendString(b, v)
			}
		}
		for _, k := range keys {
			v := m.Metadata[k]
			b = protowire.AppendTag(b, fMessageMetadata, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(mapEntrySize(k, v)))
			b = protowire.AppendTag(b, fMapKey, protowire.BytesType)
			b = protowire.AppendString(b, k)
			b = protowire.AppendTag(b, fMapValue, protowire.BytesType)
			b = protowire.AppendString(b, v)
		}
	}
	return b, true
}

// sendRequestSizeHint is about the encoded size of msgs.
func sendRequestSizeHint(msgs []Message) int {
	n := 0
	for i := range msgs {
		m := &msgs[i]
		n += len(m.Key) + len(m.CustomerID) + len(m.To) + len(m.From) + len(m.ReplyTo) + len(m.Subject) + len(m.Text) + len(m.HTML) + 32
		for _, h := range m.Headers {
			n += len(h.Name) + 8
			for _, v := range h.Values {
				n += len(v) + 4
			}
		}
		for k, v := range m.Metadata {
			n += len(k) + len(v) + 8
		}
	}
	return n
}

func sortedKeys(keys []string, m map[string]string) []string {
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// messageUTF8 reports whether every string of m is valid UTF-8.
func messageUTF8(m *Message) bool {
	for _, s := range [...]string{m.Key, m.CustomerID, m.To, m.From, m.ReplyTo, m.Subject, m.Text, m.HTML} {
		if !utf8.ValidString(s) {
			return false
		}
	}
	for _, h := range m.Headers {
		if !utf8.ValidString(h.Name) {
			return false
		}
		for _, v := range h.Values {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	for k, v := range m.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return false
		}
	}
	return true
}

// stringFieldSize is the size of a proto3 string field, absent when empty.
func stringFieldSize(s string) int {
	if s == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(s)) // every field number here fits a one-byte tag
}

func messageSize(m *Message, keys []string) int {
	n := stringFieldSize(m.Key) + stringFieldSize(m.CustomerID) + stringFieldSize(m.To) + stringFieldSize(m.From) +
		stringFieldSize(m.ReplyTo) + stringFieldSize(m.Subject) + stringFieldSize(m.Text) + stringFieldSize(m.HTML)
	for i := range m.Headers {
		n += 1 + protowire.SizeBytes(headerSize(&m.Headers[i]))
	}
	for _, k := range keys {
		n += 1 + protowire.SizeBytes(mapEntrySize(k, m.Metadata[k]))
	}
	return n
}

func headerSize(h *Header) int {
	n := stringFieldSize(h.Name)
	for _, v := range h.Values {
		n += 1 + protowire.SizeBytes(len(v))
	}
	return n
}

// mapEntrySize is the size of a map<string, string> entry: protobuf writes
// key and value even when empty.
func mapEntrySize(k, v string) int {
	return 1 + protowire.SizeBytes(len(k)) + 1 + protowire.SizeBytes(len(v))
}

// appendSendResponse appends the wire encoding of resultsToPB(rs). ok is
// false when a string is not valid UTF-8, which protobuf refuses to encode.
func appendSendResponse(b []byte, rs []Result) (_ []byte, ok bool) {
	for i := range rs {
		r := &rs[i]
		for _, s := range [...]string{r.Key, r.ProviderID, r.Reason, r.Code} {
			if !utf8.ValidString(s) {
				return b, false
			}
		}
		status := uint64(int64(pluginv1.ResultStatus(r.Status))) // an int32 enum, sign-extended
		retry := uint64(r.RetryAfter.Milliseconds())
		n := stringFieldSize(r.Key) + stringFieldSize(r.ProviderID) + stringFieldSize(r.Reason) + stringFieldSize(r.Code)
		if status != 0 {
			n += 1 + protowire.SizeVarint(status)
		}
		if retry != 0 {
			n += 1 + protowire.SizeVarint(retry)
		}
		b = protowire.AppendTag(b, fSendResponseResults, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = appendString(b, fResultKey, r.Key)
		if status != 0 {
			b = protowire.AppendTag(b, fResultStatus, protowire.VarintType)
			b = protowire.AppendVarint(b, status)
		}
		b = appendString(b, fResultProviderID, r.ProviderID)
		if retry != 0 {
			b = protowire.AppendTag(b, fResultRetryAfterMs, protowire.VarintType)
			b = protowire.AppendVarint(b, retry)
		}
		b = appendString(b, fResultReason, r.Reason)
		b = appendString(b, fResultCode, r.Code)
	}
	return b, true
}

// sendResponseToPB is what the plugin answers a Send with: the results in
// the wire format as the unknown fields of an empty SendResponse, or
// resultsToPB's message when protobuf must have its say.
func sendResponseToPB(rs []Result) *pluginv1.SendResponse {
	n := 0
	for i := range rs {
		n += len(rs[i].Key) + len(rs[i].ProviderID) + len(rs[i].Reason) + len(rs[i].Code) + 24
	}
	b, ok := appendSendResponse(make([]byte, 0, n), rs)
	if !ok {
		return resultsToPB(rs)
	}
	out := &pluginv1.SendResponse{}
	out.ProtoReflect().SetUnknown(b)
	return out
}

// decodeSendResponse decodes the wire encoding of a SendResponse as
// proto.Unmarshal and resultsFromPB do; ok is false where proto.Unmarshal
// would fail (malformed bytes, a string that is not UTF-8). A known field
// with another wire type is skipped, as protobuf keeps it as unknown.
func decodeSendResponse(b []byte) (_ []Result, ok bool) {
	n := 0
	for scan := b; len(scan) > 0; {
		num, typ, l := consumeTag(scan)
		if l < 0 {
			return nil, false
		}
		scan = scan[l:]
		l = protowire.ConsumeFieldValue(num, typ, scan)
		if l < 0 {
			return nil, false
		}
		scan = scan[l:]
		if num == fSendResponseResults && typ == protowire.BytesType {
			n++
		}
	}
	if n == 0 {
		return nil, true
	}
	out := make([]Result, 0, n)
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		b = b[l:]
		if num != fSendResponseResults || typ != protowire.BytesType {
			b = b[protowire.ConsumeFieldValue(num, typ, b):]
			continue
		}
		raw, l := protowire.ConsumeBytes(b)
		b = b[l:]
		r, ok := decodeResult(raw)
		if !ok {
			return nil, false
		}
		out = append(out, r)
	}
	return out, true
}

// consumeTag is protowire.ConsumeTag, failing on a field number beyond
// the largest valid one, as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}

func decodeResult(b []byte) (r Result, ok bool) {
	for len(b) > 0 {
		num, typ, l := consumeTag(b)
		if l < 0 {
			return r, false
		}
		b = b[l:]
		switch {
		case typ == protowire.BytesType && (num == fResultKey || num == fResultProviderID || num == fResultReason || num == fResultCode):
			v, l := protowire.ConsumeBytes(b)
			if l < 0 || !utf8.Valid(v) {
				return r, false
			}
			b = b[l:]
			s := string(v)
			switch num {
			case fResultKey:
				r.Key = s
			case fResultProviderID:
				r.ProviderID = s
			case fResultReason:
				r.Reason = s
			default:
				r.Code = s
			}
		case typ == protowire.VarintType && (num == fResultStatus || num == fResultRetryAfterMs):
			v, l := protowire.ConsumeVarint(b)
			if l < 0 {
				return r, false
			}
			b = b[l:]
			if num == fResultStatus {
				r.Status = ResultStatus(pluginv1.ResultStatus(int32(v)))
			} else {
				r.RetryAfter = time.Duration(int64(v)) * time.Millisecond
			}
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
			if l < 0 {
				return r, false
			}
			b = b[l:]
		}
	}
	return r, true
}

// sendCodec is the proto codec for one Send call on the host: it sends
// req, the request already in the wire format, and decodes the answer
// straight into results. Without req (protobuf must encode the request) it
// marshals the message it is given; an answer it cannot decode goes to
// protobuf, which reports the error.
type sendCodec struct {
	req     []byte
	results []Result
	decoded bool // results holds the answer
}

func (c *sendCodec) Marshal(v any) (mem.BufferSlice, error) {
	if c.req == nil {
		return protoCodec.Marshal(v)
	}
	return mem.BufferSlice{mem.SliceBuffer(c.req)}, nil
}

func (c *sendCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if _, ok := v.(*pluginv1.SendResponse); !ok {
		return protoCodec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	results, ok := decodeSendResponse(buf.ReadOnlyData())
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	c.results, c.decoded = results, true
	return nil
}

func (c *sendCodec) Name() string { return proto.Name }
