package sdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// This file converts protobuf messages to SDK types; convert_topb.go does
// the reverse. Slices and maps are allocated at their final size; strings,
// byte slices and string lists are shared with the protobuf message, which
// the callers drop right after.

// msToTime decodes Unix milliseconds, 0 ("not set") as the zero time.
func msToTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func valueFromPB(v *pluginv1.Value) Value {
	switch k := v.GetKind().(type) {
	case *pluginv1.Value_StringValue:
		return Value{Type: TypeString, Str: k.StringValue}
	case *pluginv1.Value_NumberValue:
		return Value{Type: TypeNumber, Num: k.NumberValue}
	case *pluginv1.Value_BoolValue:
		return Value{Type: TypeBool, Bool: k.BoolValue}
	case *pluginv1.Value_TimeUnixMs:
		return Value{Type: TypeTime, Time: time.UnixMilli(k.TimeUnixMs).UTC()}
	case *pluginv1.Value_ListValue:
		l := k.ListValue.GetValues()
		if len(l) == 0 {
			l = nil
		}
		return Value{Type: TypeStringList, List: l}
	}
	return Value{}
}

func valueMapFromPB(m map[string]*pluginv1.Value) map[string]Value {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]Value, len(m))
	for name, v := range m {
		out[name] = valueFromPB(v)
	}
	return out
}

func stringsFromPB(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func bytesFromPB(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func batchFromPB(pb *pluginv1.Batch) *Batch {
	b := &Batch{
		Deletes:  stringsFromPB(pb.GetDeletes()),
		Cursor:   pb.GetCursor(),
		CaughtUp: pb.GetCaughtUp(),
	}
	if cs := pb.GetCustomers(); len(cs) > 0 {
		b.Customers = make([]Customer, len(cs))
		for i, c := range cs {
			b.Customers[i] = Customer{ID: c.GetId(), Traits: valueMapFromPB(c.GetTraits())}
		}
	}
	if es := pb.GetEvents(); len(es) > 0 {
		b.Events = make([]Event, len(es))
		for i, e := range es {
			b.Events[i] = Event{
				ID:         e.GetId(),
				CustomerID: e.GetCustomerId(),
				Name:       e.GetName(),
				Time:       msToTime(e.GetTimeUnixMs()),
				Value:      e.GetValue(),
				HasValue:   e.GetHasValue(),
				Properties: valueMapFromPB(e.GetProperties()),
			}
		}
	}
	if cs := pb.GetConsents(); len(cs) > 0 {
		b.Consents = make([]ConsentChange, len(cs))
		for i, c := range cs {
			b.Consents[i] = ConsentChange{
				CustomerID: c.GetCustomerId(),
				Kind:       c.GetKind(),
				Status:     ConsentStatus(c.GetStatus()),
				Time:       msToTime(c.GetTimeUnixMs()),
				Basis:      c.GetBasis(),
			}
		}
	}
	if ps := pb.GetProblems(); len(ps) > 0 {
		b.Problems = make([]Problem, len(ps))
		for i, p := range ps {
			b.Problems[i] = Problem{
				CustomerID: p.GetCustomerId(),
				Field:      p.GetField(),
				Message:    p.GetMessage(),
				Line:       int(p.GetLine()),
				Column:     int(p.GetColumn()),
			}
		}
	}
	return b
}

func configureRequestFromPB(r *pluginv1.ConfigureRequest) ConfigureRequest {
	return ConfigureRequest{
		Instance:    r.GetInstance(),
		Config:      bytesFromPB(r.GetConfigYaml()),
		PublicURL:   r.GetPublicUrl(),
		WebhookPath: r.GetWebhookPath(),
	}
}

func sourceInfoFromPB(pb *pluginv1.SourceInfo) SourceInfo {
	info := SourceInfo{
		Name:       pb.GetName(),
		Version:    pb.GetVersion(),
		EventNames: stringsFromPB(pb.GetEventNames()),
		Contact: ContactFields{
			Email:    pb.GetContact().GetEmail(),
			Phone:    pb.GetContact().GetPhone(),
			Timezone: pb.GetContact().GetTimezone(),
		},
		Webhooks: pb.GetWebhooks(),
	}
	if ts := pb.GetTraits(); len(ts) > 0 {
		info.Traits = make([]Trait, len(ts))
		for i, t := range ts {
			info.Traits[i] = Trait{Name: t.GetName(), Type: TraitType(t.GetType()), Description: t.GetDescription()}
		}
	}
	return info
}

func headersFromPB(hs []*pluginv1.Header) []Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]Header, len(hs))
	for i, h := range hs {
		out[i] = Header{Name: h.GetName(), Values: stringsFromPB(h.GetValues())}
	}
	return out
}

func webhookRequestFromPB(r *pluginv1.WebhookRequest) *WebhookRequest {
	return &WebhookRequest{
		Method:     r.GetMethod(),
		URL:        r.GetUrl(),
		Path:       r.GetPath(),
		Headers:    headersFromPB(r.GetHeaders()),
		Body:       bytesFromPB(r.GetBody()),
		RemoteAddr: r.GetRemoteAddr(),
	}
}

func httpResponseFromPB(r *pluginv1.HttpResponse) HTTPResponse {
	return HTTPResponse{
		Status:  int(r.GetStatus()),
		Headers: headersFromPB(r.GetHeaders()),
		Body:    bytesFromPB(r.GetBody()),
	}
}

func sourceWebhookResponseFromPB(r *pluginv1.SourceWebhookResponse) *SourceWebhookResponse {
	out := &SourceWebhookResponse{Response: httpResponseFromPB(r.GetResponse())}
	if r.GetBatch() != nil {
		out.Batch = batchFromPB(r.GetBatch())
	}
	return out
}

func channelInfoFromPB(pb *pluginv1.ChannelInfo) ChannelInfo {
	return ChannelInfo{
		Name:     pb.GetName(),
		Version:  pb.GetVersion(),
		Kind:     pb.GetKind(),
		MaxBatch: int(pb.GetMaxBatch()),
		RateHint: pb.GetRateHint(),
		Webhooks: pb.GetWebhooks(),
	}
}

func messagesFromPB(r *pluginv1.SendRequest) []Message {
	ms := r.GetMessages()
	if len(ms) == 0 {
		return nil
	}
	out := make([]Message, len(ms))
	for i, m := range ms {
		md := m.GetMetadata()
		if len(md) == 0 {
			md = nil
		}
		out[i] = Message{
			Key:        m.GetKey(),
			CustomerID: m.GetCustomerId(),
			To:         m.GetTo(),
			From:       m.GetFrom(),
			ReplyTo:    m.GetReplyTo(),
			Subject:    m.GetSubject(),
			Text:       m.GetText(),
			HTML:       m.GetHtml(),
			Headers:    headersFromPB(m.GetHeaders()),
			Metadata:   md,
		}
	}
	return out
}

func resultsFromPB(r *pluginv1.SendResponse) []Result {
	rs := r.GetResults()
	if len(rs) == 0 {
		return nil
	}
	out := make([]Result, len(rs))
	for i, p := range rs {
		out[i] = Result{
			Key:        p.GetKey(),
			Status:     ResultStatus(p.GetStatus()),
			ProviderID: p.GetProviderId(),
			RetryAfter: time.Duration(p.GetRetryAfterMs()) * time.Millisecond,
			Reason:     p.GetReason(),
			Code:       p.GetCode(),
		}
	}
	return out
}

func channelWebhookResponseFromPB(r *pluginv1.ChannelWebhookResponse) *ChannelWebhookResponse {
	out := &ChannelWebhookResponse{Response: httpResponseFromPB(r.GetResponse())}
	if es := r.GetEvents(); len(es) > 0 {
		out.Events = make([]DeliveryEvent, len(es))
		for i, e := range es {
			out.Events[i] = DeliveryEvent{
				Key:        e.GetKey(),
				ProviderID: e.GetProviderId(),
				Type:       DeliveryType(e.GetType()),
				Address:    e.GetAddress(),
				Time:       msToTime(e.GetTimeUnixMs()),
				Reason:     e.GetReason(),
				URL:        e.GetUrl(),
				EventID:    e.GetEventId(),
			}
		}
	}
	return out
}

// The host decodes Pull batches straight from the wire format into SDK
// types (see appendBatchTo for the other direction): no protobuf messages in
// between, slices and maps allocated at their final size after a cheap scan
// of the field lengths, trait names shared across the stream.

// nameTable shares the strings of trait and property names, a small set
// repeated in every customer, across the batches of one Pull.
type nameTable struct {
	m map[string]string
}

// maxNames bounds a nameTable: past it, names are allocated as they come.
const maxNames = 4096

func (t *nameTable) name(b []byte) string {
	if s, ok := t.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if t.m == nil {
		t.m = make(map[string]string, 32)
	}
	if len(t.m) < maxNames {
		t.m[s] = s
	}
	return s
}

var errMalformed = errors.New("malformed message")

var errNotUTF8 = errors.New("string field is not valid UTF-8")

// wireString converts a string field, which proto3 requires to be UTF-8.
func wireString(b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", errNotUTF8
	}
	return string(b), nil
}

// fieldReader walks the fields of one message.
type fieldReader struct {
	b   []byte
	err error
	num protowire.Number
	typ protowire.Type
	// One of these holds the field's value, by typ.
	bytes []byte
	u64   uint64
}

// next reads the next field; it returns false at the end or on error.
func (r *fieldReader) next() bool {
	if len(r.b) == 0 || r.err != nil {
		return false
	}
	num, typ, n := protowire.ConsumeTag(r.b)
	if n < 0 {
		r.err = fmt.Errorf("%w: %v", errMalformed, protowire.ParseError(n))
		return false
	}
	r.b = r.b[n:]
	r.num, r.typ = num, typ
	switch typ {
	case protowire.BytesType:
		r.bytes, n = protowire.ConsumeBytes(r.b)
	case protowire.VarintType:
		r.u64, n = protowire.ConsumeVarint(r.b)
	case protowire.Fixed64Type:
		r.u64, n = protowire.ConsumeFixed64(r.b)
	case protowire.Fixed32Type:
		var v uint32
		v, n = protowire.ConsumeFixed32(r.b)
		r.u64 = uint64(v)
	default:
		n = protowire.ConsumeFieldValue(num, typ, r.b)
	}
	if n < 0 {
		r.err = fmt.Errorf("%w: field %d: %v", errMalformed, num, protowire.ParseError(n))
		return false
	}
	r.b = r.b[n:]
	return true
}

// is reports whether the current field is num with wire type typ. A known
// field number with another wire type is an error.
func (r *fieldReader) is(num protowire.Number, typ protowire.Type) bool {
	if r.num != num {
		return false
	}
	if r.typ != typ {
		r.err = fmt.Errorf("%w: field %d has wire type %d, want %d", errMalformed, num, r.typ, typ)
		r.b = nil
		return false
	}
	return true
}

// countFields counts the fields of b numbered num, and checks b's framing.
func countFields(b []byte, num protowire.Number) (int, error) {
	n := 0
	for len(b) > 0 {
		fnum, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, fmt.Errorf("%w: %v", errMalformed, protowire.ParseError(l))
		}
		b = b[l:]
		l = protowire.ConsumeFieldValue(fnum, typ, b)
		if l < 0 {
			return 0, fmt.Errorf("%w: field %d: %v", errMalformed, fnum, protowire.ParseError(l))
		}
		b = b[l:]
		if fnum == num {
			n++
		}
	}
	return n, nil
}

// flatDecoder decodes the batches of one Pull stream from the wire into
// one FlatBatch, reused from batch to batch, with the stream's trait names
// interned once.
type flatDecoder struct {
	names flatNames
	cache nameCache
	// props shares event property names, which are not interned in names:
	// a live stream may see new property names without end.
	props nameTable
	batch FlatBatch
	// out is the batch being decoded into: batch, or one of a group's.
	out *FlatBatch
	// remap maps the plugin's trait name table (Batch.trait_names) to
	// names: remap[i] is the index in names of the plugin's name i.
	remap []int
	// buf holds the message being decoded.
	buf []byte
	// group holds the batches of a batch group.
	group [][]byte
	// strs and fixes gather a customer's strings, which then share one
	// allocation: fixes[i] is the string strs[lo:hi] of trait (or id, at
	// trait -1).
	strs  []byte
	fixes []strFix
	// For decodeGroup: a chunk's counts, decoding errors and batches, and
	// the helper decoder.
	counts []batchCounts
	errs   []error
	pool   []*FlatBatch
	help   *flatDecoder
	// For columns (Batch.columns): the ids, string values and columns
	// read, the rows present of columns that lack some, where each row's
	// traits start, the string columns by row (strDense: those with every
	// row; strSparse, ending at strAt[r] for row r: the others' values),
	// and, for names with several columns, those columns and the rows
	// they have taken.
	colIDs    [][]byte
	colStrs   [][]byte
	colIdx    []int32
	colViews  []colView
	rowPos    []int
	strDense  []*colView
	strSparse []strEntry
	strAt     []int
	multi     []int
	rowMark   []int32
}

type strFix struct{ trait, lo, hi int }

// nameCache remembers where recently seen names are in a stream's
// flatNames, keyed by a cheap hash of their bytes, so most lookups compare
// one string instead of hashing it for the map.
type nameCache [256]int32 // index + 1; 0 = empty

// nameSlot is a name's slot in a nameCache (or traitIndex.cache).
func nameSlot[T string | []byte](b T) byte {
	if len(b) == 0 {
		return 0
	}
	return byte(len(b)*7) ^ b[0] ^ b[len(b)-1]<<2 ^ b[len(b)/2]<<4
}

// name returns the index of name b, adding it when new.
func (d *flatDecoder) name(b []byte) (int, error) {
	slot := nameSlot(b)
	if i := d.cache[slot]; i > 0 && d.names.names[i-1] == string(b) {
		return int(i - 1), nil
	}
	n, err := d.names.lookup(b)
	if err == nil {
		d.cache[slot] = int32(n + 1)
	}
	return n, err
}

// split returns the batches of a batch group (Batch.batches), or nil when
// data is a batch of its own. A group has no other batch fields.
func (d *flatDecoder) split(data []byte) ([][]byte, error) {
	d.group = d.group[:0]
	other := protowire.Number(0)
	r := fieldReader{b: data}
	for r.next() {
		switch {
		case r.is(fBatchBatches, protowire.BytesType):
			d.group = append(d.group, r.bytes)
		case r.num >= fBatchCustomers && r.num < fBatchBatches, r.num == fBatchColumns:
			other = r.num
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("batch: %w", r.err)
	}
	if len(d.group) == 0 {
		return nil, nil
	}
	if other != 0 {
		return nil, fmt.Errorf("batch group: %w: field %d beside grouped batches", errMalformed, other)
	}
	return d.group, nil
}

// addName adds the plugin's trait name b (a Batch.trait_names field) to
// the stream's table.
func (d *flatDecoder) addName(b []byte) error {
	if !utf8.Valid(b) {
		return errors.New("trait name is not valid UTF-8")
	}
	if len(d.remap) >= maxFlatNames {
		return fmt.Errorf("more than %d trait names in one stream", maxFlatNames)
	}
	n, err := d.name(b)
	if err != nil {
		return err
	}
	d.remap = append(d.remap, n)
	return nil
}

// decode decodes the wire encoding of a cohort.plugin.v1.Batch into d's
// FlatBatch. Slices other than Customers and Traits are allocated afresh,
// so FlatBatch.Batch may share them. A batch group is decoded batch by
// batch (see split), so decode rejects one.
func (d *flatDecoder) decode(data []byte) (*FlatBatch, error) {
	counts, err := d.scan(data, true)
	if err != nil {
		return nil, err
	}
	return d.decodeInto(&d.batch, data, &counts)
}

// batchCounts counts a batch's fields by number.
type batchCounts [fBatchColumns + 1]int

// scan counts the fields of a batch and checks its framing, adding its
// trait names (Batch.trait_names) to the stream's table when names is
// set: the batch's customers may use them, wherever they are.
func (d *flatDecoder) scan(data []byte, names bool) (batchCounts, error) {
	var counts batchCounts
	scan := fieldReader{b: data}
	for scan.next() {
		if scan.num <= fBatchColumns {
			counts[scan.num]++
		}
		if names && scan.is(fBatchTraitNames, protowire.BytesType) {
			if err := d.addName(scan.bytes); err != nil {
				return counts, fmt.Errorf("batch field %d: %w", fBatchTraitNames, err)
			}
		}
	}
	if scan.err != nil {
		return counts, fmt.Errorf("batch: %w", scan.err)
	}
	if counts[fBatchBatches] > 0 {
		return counts, fmt.Errorf("batch: %w: a batch group where a batch was expected", errMalformed)
	}
	if counts[fBatchColumns] > 1 {
		return counts, fmt.Errorf("batch: %w: %d columns fields, at most one allowed", errMalformed, counts[fBatchColumns])
	}
	return counts, nil
}

// decodeInto decodes a batch that scan has counted (and whose names it
// has added) into b.
func (d *flatDecoder) decodeInto(b *FlatBatch, data []byte, counts *batchCounts) (*FlatBatch, error) {
	d.out = b
	*b = FlatBatch{Customers: growCap(b.Customers[:0], counts[fBatchCustomers]), Traits: b.Traits[:0]}
	if n := counts[fBatchDeletes]; n > 0 {
		b.Deletes = make([]string, 0, n)
	}
	if n := counts[fBatchEvents]; n > 0 {
		b.Events = make([]Event, 0, n)
	}
	if n := counts[fBatchConsents]; n > 0 {
		b.Consents = make([]ConsentChange, 0, n)
	}
	if n := counts[fBatchProblems]; n > 0 {
		b.Problems = make([]Problem, 0, n)
	}
	var columns []byte
	r := fieldReader{b: data}
	for r.next() {
		var err error
		switch {
		case r.is(fBatchCustomers, protowire.BytesType):
			err = d.customer(r.bytes)
		case r.is(fBatchColumns, protowire.BytesType):
			columns = r.bytes // read after the customers, wherever it is
		case r.is(fBatchDeletes, protowire.BytesType):
			var id string
			id, err = wireString(r.bytes)
			b.Deletes = append(b.Deletes, id)
		case r.is(fBatchEvents, protowire.BytesType):
			var e Event
			e, err = decodeEvent(r.bytes, &d.props)
			b.Events = append(b.Events, e)
		case r.is(fBatchConsents, protowire.BytesType):
			var c ConsentChange
			c, err = decodeConsent(r.bytes)
			b.Consents = append(b.Consents, c)
		case r.is(fBatchCursor, protowire.BytesType):
			b.Cursor, err = wireString(r.bytes)
		case r.is(fBatchCaughtUp, protowire.VarintType):
			b.CaughtUp = protowire.DecodeBool(r.u64)
		case r.is(fBatchProblems, protowire.BytesType):
			var p Problem
			p, err = decodeProblem(r.bytes)
			b.Problems = append(b.Problems, p)
		}
		if err != nil {
			return nil, fmt.Errorf("batch field %d: %w", r.num, err)
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("batch: %w", r.err)
	}
	if columns != nil {
		if err := d.columns(columns); err != nil {
			return nil, fmt.Errorf("batch field %d: %w", fBatchColumns, err)
		}
	}
	b.Names = d.names.names
	return b, nil
}

// customer decodes one Customer message and appends it to the batch. The
// customer's id and string values are copied into one string: one
// allocation per customer, and a kept value keeps only its own customer's
// strings alive.
func (d *flatDecoder) customer(data []byte) error {
	b := d.out
	d.names.nextCustomer()
	d.strs, d.fixes = d.strs[:0], d.fixes[:0]
	start := len(b.Traits)
	var id []byte // for error messages
	var err error
	for len(data) > 0 {
		// Fast path: an indexed trait of under 128 bytes.
		if data[0] == tagCustomerIndexed && len(data) > 1 && data[1] < 0x80 && 2+int(data[1]) <= len(data) {
			l := 2 + int(data[1])
			if err := d.indexedTrait(data[2:l]); err != nil {
				return fmt.Errorf("customer %q: %w", id, err)
			}
			data = data[l:]
			continue
		}
		// Fast path: an id of under 128 bytes.
		if data[0] == tagCustomerID && len(data) > 1 && data[1] < 0x80 && 2+int(data[1]) <= len(data) {
			l := 2 + int(data[1])
			if !utf8.Valid(data[2:l]) {
				return fmt.Errorf("customer %q: %w", id, errNotUTF8)
			}
			id = data[2:l]
			d.addString(-1, id)
			data = data[l:]
			continue
		}
		r := fieldReader{b: data}
		if !r.next() {
			if r.err != nil {
				return r.err
			}
			break
		}
		data = r.b
		switch {
		case r.is(fCustomerID, protowire.BytesType):
			if !utf8.Valid(r.bytes) {
				err = errNotUTF8
				break
			}
			id = r.bytes
			d.addString(-1, r.bytes)
		case r.is(fCustomerTraits, protowire.BytesType):
			err = d.trait(r.bytes)
		case r.is(fCustomerIndexed, protowire.BytesType):
			err = d.indexedTrait(r.bytes)
		}
		if err != nil {
			return fmt.Errorf("customer %q: %w", id, err)
		}
		if r.err != nil {
			return r.err
		}
	}
	c := FlatCustomer{Start: start, End: len(b.Traits)}
	all := string(d.strs)
	// In order, so that of a trait or id sent twice the last wins.
	for _, f := range d.fixes {
		s := all[f.lo:f.hi]
		if f.trait < 0 {
			c.ID = s
		} else if v := &b.Traits[f.trait].Value; v.Type == TypeString {
			v.Str = s
		}
	}
	b.Customers = append(b.Customers, c)
	return nil
}

// addString queues s as the string of trait i (-1: the id) of the current
// customer.
func (d *flatDecoder) addString(i int, s []byte) {
	lo := len(d.strs)
	d.strs = append(d.strs, s...)
	d.fixes = append(d.fixes, strFix{trait: i, lo: lo, hi: len(d.strs)})
}

// trait decodes one map<string, Value> entry of a customer's traits.
func (d *flatDecoder) trait(data []byte) error {
	// Fast path: a key and a value of under 128 bytes each, in that order,
	// the key a name seen before (so known to be UTF-8).
	if len(data) >= 4 && data[0] == tagEntryKey && data[1] < 0x80 {
		kl := int(data[1])
		if 4+kl <= len(data) && data[2+kl] == tagEntryValue && data[3+kl] < 0x80 && 4+kl+int(data[3+kl]) == len(data) {
			key := data[2 : 2+kl]
			if i := d.cache[nameSlot(key)]; i > 0 && d.names.names[i-1] == string(key) {
				return d.traitValue(int(i-1), data[4+kl:], 0)
			}
		}
	}
	key, val, err := splitEntry(data)
	if err != nil {
		return err
	}
	n, err := d.name(key)
	if err != nil {
		return err
	}
	return d.traitValue(n, val, 0)
}

// indexedTrait decodes one IndexedTrait of a customer.
func (d *flatDecoder) indexedTrait(data []byte) error {
	// Fast path: a name under 128, then one scalar member, as encoders
	// write it.
	if len(data) > 2 && data[0] == tagIndexedName && data[1] < 0x80 && int(data[1]) < len(d.remap) {
		n := d.remap[data[1]]
		i := d.names.slot(d.out, n)
		v := &d.out.Traits[i].Value
		str, ok, err := decodeScalar(v, data[2:], indexedShift<<3)
		if err != nil {
			return fmt.Errorf("%q: %w", d.names.names[n], err)
		}
		if ok {
			if v.Type == TypeString {
				d.addString(i, str)
			}
			return nil
		}
		// Not a lone scalar: the slot is decoded into again below.
	}
	// Otherwise, as protobuf reads it: the last name wins, and an absent
	// name is 0.
	var k uint64
	r := fieldReader{b: data}
	for r.next() {
		if r.is(fIndexedName, protowire.VarintType) {
			k = uint64(uint32(r.u64))
		}
	}
	if r.err != nil {
		return r.err
	}
	if k >= uint64(len(d.remap)) {
		return fmt.Errorf("%w: trait name %d not in the stream's table of %d", errMalformed, k, len(d.remap))
	}
	return d.traitValue(d.remap[k], data, indexedShift<<3)
}

// traitValue decodes the value of trait name n of the current customer
// from a message holding Value's oneof members with shift added to their
// tags (see decodeValueInto).
func (d *flatDecoder) traitValue(n int, val []byte, shift byte) error {
	i := d.names.slot(d.out, n)
	v := &d.out.Traits[i].Value
	str, err := decodeValueInto(v, val, shift)
	if err != nil {
		return fmt.Errorf("%q: %w", d.names.names[n], err)
	}
	if v.Type == TypeString {
		d.addString(i, str)
	}
	return nil
}

// splitEntry returns the key (checked to be UTF-8) and the value message of
// a map entry; a missing key is "" and a missing value the empty message.
func splitEntry(data []byte) (key, val []byte, err error) {
	// Fast path: the key, then the value, as encoders write them.
	if len(data) > 2 && data[0] == tagEntryKey {
		if kl, n := protowire.ConsumeBytes(data[1:]); n > 0 && 1+n < len(data) && data[1+n] == tagEntryValue {
			if vb, n2 := protowire.ConsumeBytes(data[2+n:]); n2 > 0 && 2+n+n2 == len(data) && utf8.Valid(kl) {
				return kl, vb, nil
			}
		}
	}
	// Otherwise, as protobuf reads it: each occurrence checked, the last wins.
	r := fieldReader{b: data}
	for r.next() {
		switch {
		case r.is(fEntryKey, protowire.BytesType):
			if !utf8.Valid(r.bytes) {
				return nil, nil, errors.New("map key is not valid UTF-8")
			}
			key = r.bytes
		case r.is(fEntryValue, protowire.BytesType):
			if _, err := decodeValue(r.bytes); err != nil {
				return nil, nil, err
			}
			val = r.bytes
		}
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	return key, val, nil
}

// Tags of the fields the fast paths expect, as single bytes.
const (
	tagEntryKey    = fEntryKey<<3 | byte(protowire.BytesType)
	tagEntryValue  = fEntryValue<<3 | byte(protowire.BytesType)
	tagValueString = fValueString<<3 | byte(protowire.BytesType)
	tagValueNumber = fValueNumber<<3 | byte(protowire.Fixed64Type)
	tagValueBool   = fValueBool<<3 | byte(protowire.VarintType)
	tagValueTime   = fValueTime<<3 | byte(protowire.VarintType)
	tagValueList   = fValueList<<3 | byte(protowire.BytesType)
	tagIndexedName = fIndexedName<<3 | byte(protowire.VarintType)

	tagCustomerID      = fCustomerID<<3 | byte(protowire.BytesType)
	tagCustomerIndexed = fCustomerIndexed<<3 | byte(protowire.BytesType)

	tagStringListValues = fStringListValues<<3 | byte(protowire.BytesType)
)

// decodeEntry decodes one map<string, Value> entry into m.
func decodeEntry(data []byte, names *nameTable, m map[string]Value) error {
	kb, vb, err := splitEntry(data)
	if err != nil {
		return err
	}
	key := names.name(kb)
	v, err := decodeValue(vb)
	if err != nil {
		return fmt.Errorf("%q: %w", key, err)
	}
	m[key] = v
	return nil
}

func decodeValue(data []byte) (Value, error) {
	var v Value
	str, err := decodeValueInto(&v, data, 0)
	if v.Type == TypeString && err == nil {
		v.Str = string(str)
	}
	return v, err
}

// decodeValueInto decodes a Value message into *v, except that a string
// value's bytes (checked to be UTF-8) are returned rather than copied into
// v.Str, so the caller chooses where its string lives. shift is added to
// the tags of Value's members: 0 for a Value, 1<<3 for an IndexedTrait,
// whose other field (the name) is then skipped.
func decodeValueInto(v *Value, data []byte, shift byte) (str []byte, err error) {
	if str, ok, err := decodeScalar(v, data, shift); ok || err != nil {
		return str, err
	}
	*v = Value{}
	num := protowire.Number(shift >> 3)
	r := fieldReader{b: data}
	for r.next() {
		// A oneof: the last member on the wire wins.
		switch {
		case r.is(num+fValueString, protowire.BytesType):
			if !utf8.Valid(r.bytes) {
				return nil, errNotUTF8
			}
			*v, str = Value{Type: TypeString}, r.bytes
		case r.is(num+fValueNumber, protowire.Fixed64Type):
			*v, str = Value{Type: TypeNumber, Num: math.Float64frombits(r.u64)}, nil
		case r.is(num+fValueBool, protowire.VarintType):
			*v, str = Value{Type: TypeBool, Bool: protowire.DecodeBool(r.u64)}, nil
		case r.is(num+fValueTime, protowire.VarintType):
			*v, str = Value{Type: TypeTime, Time: time.UnixMilli(int64(r.u64)).UTC()}, nil
		case r.is(num+fValueList, protowire.BytesType):
			var l []string
			l, err = decodeStringList(r.bytes)
			*v, str = Value{Type: TypeStringList, List: l}, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return str, r.err
}

// decodeScalar is decodeValueInto's fast path: data that is exactly one
// scalar member, as encoders write it. ok is false when data is anything
// else, and *v is then untouched.
func decodeScalar(v *Value, data []byte, shift byte) (str []byte, ok bool, err error) {
	if len(data) < 2 {
		return nil, false, nil
	}
	switch data[0] - shift {
	case tagValueString:
		if b, n := protowire.ConsumeBytes(data[1:]); n == len(data)-1 {
			if !utf8.Valid(b) {
				return nil, false, errNotUTF8
			}
			*v = Value{Type: TypeString}
			return b, true, nil
		}
	case tagValueNumber:
		if len(data) == 9 {
			*v = Value{Type: TypeNumber, Num: math.Float64frombits(binary.LittleEndian.Uint64(data[1:]))}
			return nil, true, nil
		}
	case tagValueBool:
		if u, n := protowire.ConsumeVarint(data[1:]); n == len(data)-1 {
			*v = Value{Type: TypeBool, Bool: protowire.DecodeBool(u)}
			return nil, true, nil
		}
	case tagValueTime:
		if u, n := protowire.ConsumeVarint(data[1:]); n == len(data)-1 {
			*v = Value{Type: TypeTime, Time: time.UnixMilli(int64(u)).UTC()}
			return nil, true, nil
		}
	}
	return nil, false, nil
}

func decodeStringList(data []byte) ([]string, error) {
	n, err := countFields(data, fStringListValues)
	if err != nil || n == 0 {
		return nil, err
	}
	l := make([]string, 0, n)
	r := fieldReader{b: data}
	for r.next() {
		if r.is(fStringListValues, protowire.BytesType) {
			s, err := wireString(r.bytes)
			if err != nil {
				return nil, err
			}
			l = append(l, s)
		}
	}
	return l, r.err
}

func decodeEvent(data []byte, names *nameTable) (Event, error) {
	var e Event
	n, err := countFields(data, fEventProperties)
	if err != nil {
		return e, err
	}
	if n > 0 {
		e.Properties = make(map[string]Value, n)
	}
	r := fieldReader{b: data}
	for r.next() {
		switch {
		case r.is(fEventID, protowire.BytesType):
			e.ID, err = wireString(r.bytes)
		case r.is(fEventCustomerID, protowire.BytesType):
			e.CustomerID, err = wireString(r.bytes)
		case r.is(fEventName, protowire.BytesType):
			e.Name, err = wireString(r.bytes)
		case r.is(fEventTime, protowire.VarintType):
			e.Time = msToTime(int64(r.u64))
		case r.is(fEventValue, protowire.Fixed64Type):
			e.Value = math.Float64frombits(r.u64)
		case r.is(fEventHasValue, protowire.VarintType):
			e.HasValue = protowire.DecodeBool(r.u64)
		case r.is(fEventProperties, protowire.BytesType):
			err = decodeEntry(r.bytes, names, e.Properties)
		}
		if err != nil {
			return e, fmt.Errorf("event %q: %w", e.ID, err)
		}
	}
	return e, r.err
}

func decodeConsent(data []byte) (ConsentChange, error) {
	var c ConsentChange
	var err error
	r := fieldReader{b: data}
	for r.next() {
		switch {
		case r.is(fConsentCustomerID, protowire.BytesType):
			c.CustomerID, err = wireString(r.bytes)
		case r.is(fConsentKind, protowire.BytesType):
			c.Kind, err = wireString(r.bytes)
		case r.is(fConsentStatus, protowire.VarintType):
			c.Status = ConsentStatus(int32(r.u64))
		case r.is(fConsentTime, protowire.VarintType):
			c.Time = msToTime(int64(r.u64))
		case r.is(fConsentBasis, protowire.BytesType):
			c.Basis, err = wireString(r.bytes)
		}
		if err != nil {
			return c, err
		}
	}
	return c, r.err
}

func decodeProblem(data []byte) (Problem, error) {
	var p Problem
	var err error
	r := fieldReader{b: data}
	for r.next() {
		switch {
		case r.is(fProblemCustomerID, protowire.BytesType):
			p.CustomerID, err = wireString(r.bytes)
		case r.is(fProblemField, protowire.BytesType):
			p.Field, err = wireString(r.bytes)
		case r.is(fProblemMessage, protowire.BytesType):
			p.Message, err = wireString(r.bytes)
		case r.is(fProblemLine, protowire.VarintType):
			p.Line = int(int32(r.u64))
		case r.is(fProblemColumn, protowire.VarintType):
			p.Column = int(int32(r.u64))
		}
		if err != nil {
			return p, err
		}
	}
	return p, r.err
}
