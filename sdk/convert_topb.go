package sdk

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// This file converts SDK types to their protobuf form; convert_frompb.go
// does the reverse. Batch conversion is on the hot path of every Pull:
// values and their oneof wrappers are carved out of per-batch slabs instead
// of being allocated one by one.

// timeToMs encodes a time as Unix milliseconds, the zero time as 0 ("not set").
func timeToMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func clampInt32(n int) int32 {
	switch {
	case n > math.MaxInt32:
		return math.MaxInt32
	case n < math.MinInt32:
		return math.MinInt32
	}
	return int32(n)
}

// slab hands out pointers to zeroed T, allocating them in chunks.
type slab[T any] struct {
	buf   []T
	chunk int
}

func (s *slab[T]) next() *T {
	if len(s.buf) == 0 {
		n := s.chunk
		if n <= 0 {
			n = 16
		}
		s.buf = make([]T, n)
	}
	p := &s.buf[0]
	s.buf = s.buf[1:]
	return p
}

// valueEncoder converts Values, allocating the protobuf messages from slabs
// sized for the batch at hand.
type valueEncoder struct {
	values slab[pluginv1.Value]
	strs   slab[pluginv1.Value_StringValue]
	nums   slab[pluginv1.Value_NumberValue]
	bools  slab[pluginv1.Value_BoolValue]
	times  slab[pluginv1.Value_TimeUnixMs]
	lists  slab[pluginv1.Value_ListValue]
	slists slab[pluginv1.StringList]
}

// newValueEncoder returns an encoder for about n values.
func newValueEncoder(n int) *valueEncoder {
	// Values are allocated exactly; each oneof kind in chunks, as the mix of
	// kinds is not known in advance.
	kind := min(max(n/4, 8), 512)
	return &valueEncoder{
		values: slab[pluginv1.Value]{chunk: max(n, 1)},
		strs:   slab[pluginv1.Value_StringValue]{chunk: kind},
		nums:   slab[pluginv1.Value_NumberValue]{chunk: kind},
		bools:  slab[pluginv1.Value_BoolValue]{chunk: kind},
		times:  slab[pluginv1.Value_TimeUnixMs]{chunk: kind},
		lists:  slab[pluginv1.Value_ListValue]{chunk: 8},
		slists: slab[pluginv1.StringList]{chunk: 8},
	}
}

func (e *valueEncoder) value(v *Value) (*pluginv1.Value, error) {
	pv := e.values.next()
	switch v.Type {
	case TypeUnknown:
		// Null: a Value with no kind set.
	case TypeString:
		k := e.strs.next()
		k.StringValue = v.Str
		pv.Kind = k
	case TypeNumber:
		k := e.nums.next()
		k.NumberValue = v.Num
		pv.Kind = k
	case TypeBool:
		k := e.bools.next()
		k.BoolValue = v.Bool
		pv.Kind = k
	case TypeTime:
		k := e.times.next()
		k.TimeUnixMs = v.Time.UnixMilli()
		pv.Kind = k
	case TypeStringList:
		l := e.slists.next()
		l.Values = v.List
		k := e.lists.next()
		k.ListValue = l
		pv.Kind = k
	default:
		return nil, fmt.Errorf("unknown value type %d", int(v.Type))
	}
	return pv, nil
}

func (e *valueEncoder) valueMap(m map[string]Value) (map[string]*pluginv1.Value, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]*pluginv1.Value, len(m))
	for name, v := range m {
		pv, err := e.value(&v)
		if err != nil {
			return nil, fmt.Errorf("trait %q: %w", name, err)
		}
		out[name] = pv
	}
	return out, nil
}

func valueToPB(v Value) (*pluginv1.Value, error) {
	return newValueEncoder(1).value(&v)
}

func batchToPB(b *Batch) (*pluginv1.Batch, error) {
	n := 0
	for i := range b.Customers {
		n += len(b.Customers[i].Traits)
	}
	for i := range b.Events {
		n += len(b.Events[i].Properties)
	}
	enc := newValueEncoder(n)
	out := &pluginv1.Batch{
		Deletes:  b.Deletes,
		Cursor:   b.Cursor,
		CaughtUp: b.CaughtUp,
	}
	if len(b.Customers) > 0 {
		cs := make([]pluginv1.Customer, len(b.Customers))
		out.Customers = make([]*pluginv1.Customer, len(b.Customers))
		for i := range b.Customers {
			c := &b.Customers[i]
			traits, err := enc.valueMap(c.Traits)
			if err != nil {
				return nil, Errorf(Internal, "", "batch: customer %q: %v", c.ID, err)
			}
			cs[i].Id = c.ID
			cs[i].Traits = traits
			out.Customers[i] = &cs[i]
		}
	}
	if len(b.Events) > 0 {
		es := make([]pluginv1.Event, len(b.Events))
		out.Events = make([]*pluginv1.Event, len(b.Events))
		for i := range b.Events {
			if err := eventToPB(enc, &b.Events[i], &es[i]); err != nil {
				return nil, Errorf(Internal, "", "batch: event %q: %v", b.Events[i].ID, err)
			}
			out.Events[i] = &es[i]
		}
	}
	if len(b.Consents) > 0 {
		cs := make([]pluginv1.ConsentChange, len(b.Consents))
		out.Consents = make([]*pluginv1.ConsentChange, len(b.Consents))
		for i := range b.Consents {
			c := &b.Consents[i]
			cs[i].CustomerId = c.CustomerID
			cs[i].Kind = c.Kind
			cs[i].Status = pluginv1.ConsentStatus(c.Status)
			cs[i].TimeUnixMs = timeToMs(c.Time)
			cs[i].Basis = c.Basis
			out.Consents[i] = &cs[i]
		}
	}
	if len(b.Problems) > 0 {
		ps := make([]pluginv1.Problem, len(b.Problems))
		out.Problems = make([]*pluginv1.Problem, len(b.Problems))
		for i := range b.Problems {
			p := &b.Problems[i]
			ps[i].CustomerId = p.CustomerID
			ps[i].Field = p.Field
			ps[i].Message = p.Message
			ps[i].Line = clampInt32(p.Line)
			ps[i].Column = clampInt32(p.Column)
			out.Problems[i] = &ps[i]
		}
	}
	return out, nil
}

func eventToPB(enc *valueEncoder, e *Event, out *pluginv1.Event) error {
	props, err := enc.valueMap(e.Properties)
	if err != nil {
		return fmt.Errorf("property %w", err)
	}
	out.Id = e.ID
	out.CustomerId = e.CustomerID
	out.Name = e.Name
	out.TimeUnixMs = timeToMs(e.Time)
	out.Value = e.Value
	out.HasValue = e.HasValue
	out.Properties = props
	return nil
}

func configureRequestToPB(r *ConfigureRequest) *pluginv1.ConfigureRequest {
	return &pluginv1.ConfigureRequest{
		Instance:    r.Instance,
		ConfigYaml:  r.Config,
		PublicUrl:   r.PublicURL,
		WebhookPath: r.WebhookPath,
	}
}

func sourceInfoToPB(info *SourceInfo) *pluginv1.SourceInfo {
	out := &pluginv1.SourceInfo{
		Name:       info.Name,
		Version:    info.Version,
		EventNames: info.EventNames,
		Contact: &pluginv1.ContactFields{
			Email:    info.Contact.Email,
			Phone:    info.Contact.Phone,
			Timezone: info.Contact.Timezone,
		},
		Webhooks: info.Webhooks,
	}
	if len(info.Traits) > 0 {
		out.Traits = make([]*pluginv1.TraitDef, len(info.Traits))
		for i, t := range info.Traits {
			out.Traits[i] = &pluginv1.TraitDef{
				Name:        t.Name,
				Type:        pluginv1.TraitType(t.Type),
				Description: t.Description,
			}
		}
	}
	return out
}

func headersToPB(hs []Header) []*pluginv1.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*pluginv1.Header, len(hs))
	for i, h := range hs {
		out[i] = &pluginv1.Header{Name: h.Name, Values: h.Values}
	}
	return out
}

func webhookRequestToPB(r *WebhookRequest) *pluginv1.WebhookRequest {
	return &pluginv1.WebhookRequest{
		Method:     r.Method,
		Url:        r.URL,
		Path:       r.Path,
		Headers:    headersToPB(r.Headers),
		Body:       r.Body,
		RemoteAddr: r.RemoteAddr,
	}
}

func httpResponseToPB(r *HTTPResponse) *pluginv1.HttpResponse {
	return &pluginv1.HttpResponse{
		Status:  clampInt32(r.Status),
		Headers: headersToPB(r.Headers),
		Body:    r.Body,
	}
}

func sourceWebhookResponseToPB(r *SourceWebhookResponse) (*pluginv1.SourceWebhookResponse, error) {
	out := &pluginv1.SourceWebhookResponse{Response: httpResponseToPB(&r.Response)}
	if r.Batch != nil {
		b, err := batchToPB(r.Batch)
		if err != nil {
			return nil, err
		}
		out.Batch = b
	}
	return out, nil
}

func channelInfoToPB(info *ChannelInfo) *pluginv1.ChannelInfo {
	return &pluginv1.ChannelInfo{
		Name:     info.Name,
		Version:  info.Version,
		Kind:     info.Kind,
		MaxBatch: clampInt32(info.MaxBatch),
		RateHint: info.RateHint,
		Webhooks: info.Webhooks,
	}
}

func messagesToPB(msgs []Message) *pluginv1.SendRequest {
	out := &pluginv1.SendRequest{}
	if len(msgs) == 0 {
		return out
	}
	ms := make([]pluginv1.Message, len(msgs))
	out.Messages = make([]*pluginv1.Message, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		ms[i].Key = m.Key
		ms[i].CustomerId = m.CustomerID
		ms[i].To = m.To
		ms[i].From = m.From
		ms[i].ReplyTo = m.ReplyTo
		ms[i].Subject = m.Subject
		ms[i].Text = m.Text
		ms[i].Html = m.HTML
		ms[i].Headers = headersToPB(m.Headers)
		ms[i].Metadata = m.Metadata
		out.Messages[i] = &ms[i]
	}
	return out
}

func resultsToPB(rs []Result) *pluginv1.SendResponse {
	out := &pluginv1.SendResponse{}
	if len(rs) == 0 {
		return out
	}
	ps := make([]pluginv1.Result, len(rs))
	out.Results = make([]*pluginv1.Result, len(rs))
	for i := range rs {
		r := &rs[i]
		ps[i].Key = r.Key
		ps[i].Status = pluginv1.ResultStatus(r.Status)
		ps[i].ProviderId = r.ProviderID
		ps[i].RetryAfterMs = r.RetryAfter.Milliseconds()
		ps[i].Reason = r.Reason
		ps[i].Code = r.Code
		out.Results[i] = &ps[i]
	}
	return out
}

func channelWebhookResponseToPB(r *ChannelWebhookResponse) *pluginv1.ChannelWebhookResponse {
	out := &pluginv1.ChannelWebhookResponse{Response: httpResponseToPB(&r.Response)}
	if len(r.Events) > 0 {
		es := make([]pluginv1.DeliveryEvent, len(r.Events))
		out.Events = make([]*pluginv1.DeliveryEvent, len(r.Events))
		for i := range r.Events {
			e := &r.Events[i]
			es[i].Key = e.Key
			es[i].ProviderId = e.ProviderID
			es[i].Type = pluginv1.DeliveryType(e.Type)
			es[i].Address = e.Address
			es[i].TimeUnixMs = timeToMs(e.Time)
			es[i].Reason = e.Reason
			es[i].Url = e.URL
			es[i].EventId = e.EventID
			out.Events[i] = &es[i]
		}
	}
	return out
}

// The Pull hot path does not build protobuf messages: appendBatchTo writes a
// Batch straight in the wire format of cohort.plugin.v1.Batch, and the
// server shim sends those bytes as the unknown fields of an empty
// pluginv1.Batch, which protobuf copies out as they are. Field numbers are
// those of plugin.proto; TestWireBatchMatchesProtobuf keeps them honest.

// Field numbers of the messages in a Batch.
const (
	fBatchCustomers, fBatchDeletes, fBatchEvents, fBatchConsents = 1, 2, 3, 4
	fBatchCursor, fBatchCaughtUp, fBatchProblems                 = 5, 6, 7

	fBatchTraitNames, fBatchBatches = 8, 9

	fCustomerID, fCustomerTraits, fCustomerIndexed = 1, 2, 3
	fEntryKey, fEntryValue                         = 1, 2

	// An IndexedTrait is its name's index, then the members of Value's
	// oneof, each numbered one higher than in Value.
	fIndexedName, indexedShift = 1, 1

	fValueString, fValueNumber, fValueBool, fValueTime, fValueList = 1, 2, 3, 4, 5
	fStringListValues                                              = 1

	fEventID, fEventCustomerID, fEventName, fEventTime = 1, 2, 3, 4
	fEventValue, fEventHasValue, fEventProperties      = 5, 6, 7

	fConsentCustomerID, fConsentKind, fConsentStatus, fConsentTime, fConsentBasis = 1, 2, 3, 4, 5

	fProblemCustomerID, fProblemField, fProblemMessage, fProblemLine, fProblemColumn = 1, 2, 3, 4, 5
)

// appendBatchTo appends the wire encoding of b to buf. With a stream's
// trait name table, customers' traits are in the compact form
// (Customer.indexed_traits) and the names new to the stream go in the
// batch's trait_names; otherwise they are maps. On error, the table may
// hold names the host never received: the stream must end.
func appendBatchTo(buf []byte, b *Batch, names *traitIndex) ([]byte, error) {
	var err error
	for i := range b.Customers {
		c := &b.Customers[i]
		buf = protowire.AppendTag(buf, fBatchCustomers, protowire.BytesType)
		buf, err = appendNested(buf, func(buf []byte) ([]byte, error) {
			buf = appendString(buf, fCustomerID, c.ID)
			if names != nil {
				return appendIndexedTraits(buf, c.Traits, names)
			}
			return appendValueMap(buf, fCustomerTraits, c.Traits)
		})
		if err != nil {
			return nil, Errorf(Internal, "", "batch: customer %q: %v", c.ID, err)
		}
	}
	if names != nil {
		// After the customers, on the wire; the host reads them first.
		buf = appendTraitNames(buf, names.added)
		names.added = names.added[:0]
	}
	return appendBatchRest(buf, b.Deletes, b.Events, b.Consents, b.Cursor, b.CaughtUp, b.Problems)
}

// appendTraitNames appends names as Batch.trait_names fields.
func appendTraitNames(buf []byte, names []string) []byte {
	for _, name := range names {
		buf = protowire.AppendTag(buf, fBatchTraitNames, protowire.BytesType)
		buf = protowire.AppendString(buf, name)
	}
	return buf
}

// appendBatchRest appends the fields of a Batch after its customers and
// trait names.
func appendBatchRest(buf []byte, deletes []string, events []Event, consents []ConsentChange,
	cursor string, caughtUp bool, problems []Problem) ([]byte, error) {
	var err error
	for _, id := range deletes {
		buf = protowire.AppendTag(buf, fBatchDeletes, protowire.BytesType)
		buf = protowire.AppendString(buf, id)
	}
	for i := range events {
		e := &events[i]
		buf = protowire.AppendTag(buf, fBatchEvents, protowire.BytesType)
		buf, err = appendNested(buf, func(buf []byte) ([]byte, error) {
			buf = appendString(buf, fEventID, e.ID)
			buf = appendString(buf, fEventCustomerID, e.CustomerID)
			buf = appendString(buf, fEventName, e.Name)
			buf = appendVarint(buf, fEventTime, uint64(timeToMs(e.Time)))
			if e.Value != 0 || math.Signbit(e.Value) {
				buf = protowire.AppendTag(buf, fEventValue, protowire.Fixed64Type)
				buf = protowire.AppendFixed64(buf, math.Float64bits(e.Value))
			}
			buf = appendVarint(buf, fEventHasValue, protowire.EncodeBool(e.HasValue))
			return appendValueMap(buf, fEventProperties, e.Properties)
		})
		if err != nil {
			return nil, Errorf(Internal, "", "batch: event %q: property %v", e.ID, err)
		}
	}
	for i := range consents {
		c := &consents[i]
		buf = protowire.AppendTag(buf, fBatchConsents, protowire.BytesType)
		buf, _ = appendNested(buf, func(buf []byte) ([]byte, error) {
			buf = appendString(buf, fConsentCustomerID, c.CustomerID)
			buf = appendString(buf, fConsentKind, c.Kind)
			buf = appendVarint(buf, fConsentStatus, uint64(int64(c.Status)))
			buf = appendVarint(buf, fConsentTime, uint64(timeToMs(c.Time)))
			return appendString(buf, fConsentBasis, c.Basis), nil
		})
	}
	buf = appendString(buf, fBatchCursor, cursor)
	buf = appendVarint(buf, fBatchCaughtUp, protowire.EncodeBool(caughtUp))
	for i := range problems {
		p := &problems[i]
		buf = protowire.AppendTag(buf, fBatchProblems, protowire.BytesType)
		buf, _ = appendNested(buf, func(buf []byte) ([]byte, error) {
			buf = appendString(buf, fProblemCustomerID, p.CustomerID)
			buf = appendString(buf, fProblemField, p.Field)
			buf = appendString(buf, fProblemMessage, p.Message)
			buf = appendVarint(buf, fProblemLine, uint64(int64(clampInt32(p.Line))))
			return appendVarint(buf, fProblemColumn, uint64(int64(clampInt32(p.Column)))), nil
		})
	}
	return buf, nil
}

// appendNested appends the length and body of a message whose tag is
// already in buf. The body is written after one byte of room for its
// length, enough for most bodies (under 128 bytes); a longer one is moved
// up once its length is known.
func appendNested(buf []byte, body func([]byte) ([]byte, error)) ([]byte, error) {
	start := len(buf)
	buf, err := body(append(buf, 0))
	if err != nil {
		return nil, err
	}
	return fixLen(buf, start), nil
}

// fixLen writes the length of the body that follows buf[start], a byte
// left for it, moving the body up when its length needs more bytes.
func fixLen(buf []byte, start int) []byte {
	n := len(buf) - start - 1
	if n < 0x80 {
		buf[start] = byte(n)
		return buf
	}
	w := protowire.SizeVarint(uint64(n))
	buf = append(buf, make([]byte, w-1)...)
	copy(buf[start+w:], buf[start+1:start+1+n])
	protowire.AppendVarint(buf[start:start], uint64(n))
	return buf
}

// appendString appends a string field, omitted when empty as proto3 does.
func appendString(buf []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return buf
	}
	buf = protowire.AppendTag(buf, num, protowire.BytesType)
	return protowire.AppendString(buf, s)
}

// appendVarint appends a varint field, omitted when zero as proto3 does.
func appendVarint(buf []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return buf
	}
	buf = protowire.AppendTag(buf, num, protowire.VarintType)
	return protowire.AppendVarint(buf, v)
}

// appendValueMap appends a map<string, Value> field (num < 16: its tag is
// one byte).
func appendValueMap(buf []byte, num protowire.Number, m map[string]Value) ([]byte, error) {
	tag := byte(num)<<3 | byte(protowire.BytesType)
	var err error
	for name, v := range m {
		if buf, err = appendMapEntry(buf, tag, name, &v); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// appendMapEntry appends one entry of a map<string, Value> field whose
// one-byte tag is tag.
func appendMapEntry(buf []byte, tag byte, name string, v *Value) ([]byte, error) {
	vs, err := valueSize(v)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", name, err)
	}
	entry := 1 + protowire.SizeBytes(len(name)) + 1 + protowire.SizeBytes(vs)
	buf = appendLen(append(buf, tag), entry)
	buf = append(appendLen(append(buf, tagEntryKey), len(name)), name...)
	buf = appendLen(append(buf, tagEntryValue), vs)
	return appendValue(buf, v), nil
}

// traitIndex is a Pull stream's trait name table on the plugin side, for
// the compact form: a name's index is its position in the order names were
// first sent.
type traitIndex struct {
	index map[string]uint32
	names []string
	// cache remembers recently used names by a cheap hash of their bytes
	// (nameSlot): a hit costs one string comparison, and the names a source
	// uses are mostly the same constants, compared by pointer.
	cache [256]int32 // index + 1; 0 = empty
	// added are the names new since the batch being encoded began.
	added []string
}

// lookup returns name's index, adding it when new.
func (t *traitIndex) lookup(name string) (uint32, error) {
	slot := nameSlot(name)
	if i := t.cache[slot]; i > 0 && t.names[i-1] == name {
		return uint32(i - 1), nil
	}
	n, ok := t.index[name]
	if !ok {
		if len(t.names) >= maxFlatNames {
			return 0, fmt.Errorf("more than %d distinct trait names in one stream", maxFlatNames)
		}
		if t.index == nil {
			t.index = make(map[string]uint32, 32)
		}
		n = uint32(len(t.names))
		t.index[name] = n
		t.names = append(t.names, name)
		t.added = append(t.added, name)
	}
	t.cache[slot] = int32(n + 1)
	return n, nil
}

// appendIndexedTraits appends m as Customer.indexed_traits.
func appendIndexedTraits(buf []byte, m map[string]Value, names *traitIndex) ([]byte, error) {
	for name, v := range m {
		if v.Type < TypeUnknown || v.Type > TypeStringList {
			return nil, fmt.Errorf("%q: unknown value type %d", name, int(v.Type))
		}
		n, err := names.lookup(name)
		if err != nil {
			return nil, err
		}
		buf = appendIndexedTrait(buf, n, &v)
	}
	return buf, nil
}

// appendIndexedTrait appends one Customer.indexed_traits field: name n
// (an index in the stream's table) with value v, whose type is valid.
func appendIndexedTrait(buf []byte, n uint32, v *Value) []byte {
	// The trait's length is fixed up after its body (see fixLen).
	start := len(buf) + 1
	if n < 0x80 {
		buf = append(buf, tagCustomerIndexed, 0, tagIndexedName, byte(n))
	} else {
		buf = protowire.AppendVarint(append(buf, tagCustomerIndexed, 0, tagIndexedName), uint64(n))
	}
	return fixLen(appendValueShifted(buf, v, indexedShift<<3), start)
}

// appendLen appends a length as a varint; most are under 128: one byte.
func appendLen(buf []byte, n int) []byte {
	if n < 0x80 {
		return append(buf, byte(n))
	}
	return protowire.AppendVarint(buf, uint64(n))
}

// valueSize is the length of a Value message's body.
func valueSize(v *Value) (int, error) {
	switch v.Type {
	case TypeUnknown:
		return 0, nil
	case TypeString:
		return 1 + protowire.SizeBytes(len(v.Str)), nil
	case TypeNumber:
		return 1 + protowire.SizeFixed64(), nil
	case TypeBool:
		return 2, nil
	case TypeTime:
		return 1 + protowire.SizeVarint(uint64(v.Time.UnixMilli())), nil
	case TypeStringList:
		return 1 + protowire.SizeBytes(stringListSize(v.List)), nil
	}
	return 0, fmt.Errorf("unknown value type %d", int(v.Type))
}

func stringListSize(l []string) int {
	n := 0
	for _, s := range l {
		n += 1 + protowire.SizeBytes(len(s))
	}
	return n
}

// appendValue appends a Value message's body; valueSize has checked v.Type.
// A oneof member is written even when zero: that is its presence.
func appendValue(buf []byte, v *Value) []byte {
	return appendValueShifted(buf, v, 0)
}

// appendValueShifted appends v's oneof member as appendValue does, with
// shift added to its tag: 1<<3 numbers it as in an IndexedTrait.
func appendValueShifted(buf []byte, v *Value, shift byte) []byte {
	switch v.Type {
	case TypeString:
		buf = append(appendLen(append(buf, tagValueString+shift), len(v.Str)), v.Str...)
	case TypeNumber:
		buf = protowire.AppendFixed64(append(buf, tagValueNumber+shift), math.Float64bits(v.Num))
	case TypeBool:
		buf = append(buf, tagValueBool+shift, byte(protowire.EncodeBool(v.Bool)))
	case TypeTime:
		buf = protowire.AppendVarint(append(buf, tagValueTime+shift), uint64(v.Time.UnixMilli()))
	case TypeStringList:
		buf = appendLen(append(buf, tagValueList+shift), stringListSize(v.List))
		for _, s := range v.List {
			buf = append(appendLen(append(buf, tagStringListValues), len(s)), s...)
		}
	}
	return buf
}
