package sdk

import (
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// flatOf builds b's customers into fb (reset first), names sorted, as a
// FlatSource would; the other fields are b's.
func flatOf(b *Batch, fb *FlatBatch) *FlatBatch {
	fb.Reset()
	for _, c := range b.Customers {
		fb.AddCustomer(c.ID)
		for _, name := range slices.Sorted(maps.Keys(c.Traits)) {
			fb.AddTrait(fb.Name(name), c.Traits[name])
		}
	}
	fb.Deletes, fb.Events, fb.Consents, fb.Problems = b.Deletes, b.Events, b.Consents, b.Problems
	fb.Cursor, fb.CaughtUp = b.Cursor, b.CaughtUp
	return fb
}

// mixedBatch has what makes columns differ from rows: a trait with values
// of several kinds, traits only some customers have (first, last, every
// eighth), nulls, numbers that are whole and numbers that only look so,
// times before 1970, lists, empty strings, and customers without traits.
func mixedBatch() *Batch {
	b := &Batch{Cursor: "mixed"}
	for i := range 20 {
		c := Customer{ID: "m" + strings.Repeat("x", i), Traits: map[string]Value{}}
		switch i % 4 {
		case 0:
			c.Traits["kind"] = String("s")
		case 1:
			c.Traits["kind"] = Number(float64(i))
		case 2:
			c.Traits["kind"] = Value{} // a null: remove the trait
		case 3:
			c.Traits["kind"] = List("a", "", "ü")
		}
		if i%8 == 0 {
			c.Traits["every8"] = Bool(i == 8)
		}
		c.Traits["whole"] = Number(float64(i*1000 - 7000))
		c.Traits["big"] = Number(float64(i))
		c.Traits["old"] = Time(time.Date(1900+i, 1, 1, 0, 0, 0, 1e6*i, time.UTC))
		c.Traits["empty"] = String("")
		if i == 19 {
			c.Traits["big"] = Number(1<<53 + 2) // whole, but beyond what integers carry
			c.Traits["last"] = Time(time.Time{})
		}
		if i == 0 {
			c.Traits["first"] = Number(math.Copysign(0, -1))
		}
		if i == 5 || i == 6 {
			c.Traits = nil
		}
		b.Customers = append(b.Customers, c)
	}
	return b
}

// TestColumnsRoundTrip: batches encoded in columns, one stream, decode to
// what was sent, in fewer bytes than rows, with no customer in row form.
func TestColumnsRoundTrip(t *testing.T) {
	want := append(flatBatches(), mixedBatch(), &Batch{Customers: []Customer{{ID: "alone"}}})
	enc := flatEncoder{indexed: true, columns: true}
	rows := flatEncoder{indexed: true}
	dec := &flatDecoder{}
	fb := &FlatBatch{}
	for i, w := range want {
		raw, err := enc.append(nil, flatOf(w, fb))
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		var pb pluginv1.Batch
		if err := proto.Unmarshal(raw, &pb); err != nil {
			t.Fatalf("batch %d: protobuf cannot parse the columns: %v", i, err)
		}
		if len(pb.Customers) > 0 || (len(w.Customers) > 0) != (pb.Columns != nil) {
			t.Errorf("batch %d: %d customers in rows, columns %v; want every customer in columns", i, len(pb.Customers), pb.Columns != nil)
		}
		got, err := dec.decode(raw)
		if err != nil {
			t.Fatalf("batch %d: decode: %v", i, err)
		}
		if diff := cmp.Diff(w, got.Batch(), cmpopts.EquateEmpty(), cmpopts.EquateNaNs()); diff != "" {
			t.Errorf("batch %d (-sent +decoded):\n%s", i, diff)
		}
		if i == 0 { // benchBatch: 1000 customers of 8 traits
			r, err := rows.append(nil, flatOf(w, fb))
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) > len(r)*2/3 {
				t.Errorf("columns take %d bytes, rows %d: want a third fewer at least", len(raw), len(r))
			}
			t.Logf("1000 customers: %d bytes in columns, %d in rows", len(raw), len(r))
		}
	}
}

// TestColumnsLastValueWins: of a name given twice in one customer's flat
// range, the last value is sent, as in a map.
func TestColumnsLastValueWins(t *testing.T) {
	fb := &FlatBatch{}
	a, b := fb.Name("a"), fb.Name("b")
	fb.AddCustomer("c1")
	fb.AddString(a, "first")
	fb.AddNumber(b, 1)
	fb.AddNumber(a, 2)
	fb.AddCustomer("c2")
	fb.AddString(a, "only")
	enc := flatEncoder{indexed: true, columns: true}
	raw, err := enc.append(nil, fb)
	if err != nil {
		t.Fatal(err)
	}
	got, err := (&flatDecoder{}).decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := &Batch{Customers: []Customer{
		{ID: "c1", Traits: map[string]Value{"a": Number(2), "b": Number(1)}},
		{ID: "c2", Traits: map[string]Value{"a": String("only")}},
	}}
	if diff := cmp.Diff(want, got.Batch(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestColumnsFromProtobuf: columns as any protobuf encoder writes them (a
// plugin in another language) decode as the SDK's own.
func TestColumnsFromProtobuf(t *testing.T) {
	pb := &pluginv1.Batch{
		TraitNames: []string{"email", "score", "visits", "vip", "seen", "tags", "gone"},
		Columns: &pluginv1.Columns{
			Ids: []string{"c0", "c1", "c2"},
			Columns: []*pluginv1.Column{
				{Name: 0, Strings: []string{"a@example.com", "b@example.com", "c@example.com"}},
				{Name: 1, Rows: []byte{0b101}, Numbers: []float64{0.5, -1.25}},
				{Name: 2, Rows: []byte{0b010}, Integers: []int64{-3}},
				{Name: 3, Bools: []bool{true, false, true}},
				{Name: 4, Rows: []byte{0b001}, TimesUnixMs: []int64{-1000}},
				{Name: 5, Rows: []byte{0b100}, Lists: []*pluginv1.StringList{{Values: []string{"x", "y"}}}},
				{Name: 6, Rows: []byte{0b010}},
			},
		},
		Cursor: "3",
	}
	raw, err := proto.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	got, err := (&flatDecoder{}).decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := &Batch{Cursor: "3", Customers: []Customer{
		{ID: "c0", Traits: map[string]Value{"email": String("a@example.com"), "score": Number(0.5), "vip": Bool(true),
			"seen": Time(time.UnixMilli(-1000).UTC())}},
		{ID: "c1", Traits: map[string]Value{"email": String("b@example.com"), "visits": Number(-3), "vip": Bool(false), "gone": {}}},
		{ID: "c2", Traits: map[string]Value{"email": String("c@example.com"), "score": Number(-1.25), "vip": Bool(true),
			"tags": List("x", "y")}},
	}}
	if diff := cmp.Diff(want, got.Batch(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// An empty rows field, which protobuf-go leaves out but another
	// encoder may write, is proto3's default: every row.
	vals := protowire.AppendBytes(protowire.AppendTag(nil, fColumnRows, protowire.BytesType), nil)
	vals = protowire.AppendBytes(protowire.AppendTag(vals, fColumnBools, protowire.BytesType), []byte{1, 0, 1})
	got, err = (&flatDecoder{}).decode(columnsRaw([]string{"c0", "c1", "c2"}, vals))
	if err != nil {
		t.Fatal(err)
	}
	want = &Batch{Customers: []Customer{
		{ID: "c0", Traits: map[string]Value{"a": Bool(true)}},
		{ID: "c1", Traits: map[string]Value{"a": Bool(false)}},
		{ID: "c2", Traits: map[string]Value{"a": Bool(true)}},
	}}
	if diff := cmp.Diff(want, got.Batch(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("empty rows field (-want +got):\n%s", diff)
	}
}

// TestColumnsMalformed: columns that do not add up are refused with an
// error that says what is wrong, never read past or half applied.
func TestColumnsMalformed(t *testing.T) {
	names := []string{"a", "b"}
	cols := func(ids []string, cs ...*pluginv1.Column) *pluginv1.Batch {
		return &pluginv1.Batch{TraitNames: names, Columns: &pluginv1.Columns{Ids: ids, Columns: cs}}
	}
	ids := []string{"c0", "c1", "c2"}
	for name, tc := range map[string]struct {
		batch *pluginv1.Batch
		raw   []byte // instead of batch
		want  string
	}{
		"too few values":      {batch: cols(ids, &pluginv1.Column{Name: 0, Strings: []string{"x", "y"}}), want: "2 values for 3 rows"},
		"too many values":     {batch: cols(ids, &pluginv1.Column{Name: 0, Rows: []byte{1}, Bools: []bool{true, true}}), want: "2 values for 1 rows"},
		"rows beyond":         {batch: cols(ids, &pluginv1.Column{Name: 0, Rows: []byte{0b1000}, Bools: []bool{true}}), want: "rows beyond the batch's 3"},
		"bitmap too long":     {batch: cols(ids, &pluginv1.Column{Name: 0, Rows: []byte{1, 0}, Bools: []bool{true}}), want: "rows beyond the batch's 3"},
		"two kinds":           {batch: cols(ids, &pluginv1.Column{Name: 0, Strings: []string{"x", "y", "z"}, Bools: []bool{true, true, true}}), want: "one kind of value per column"},
		"unknown name":        {batch: cols(ids, &pluginv1.Column{Name: 7, Bools: []bool{true, true, true}}), want: "trait name 7 not in the stream's table of 2"},
		"trait in two places": {batch: cols(ids, &pluginv1.Column{Name: 1, Rows: []byte{0b011}, Bools: []bool{true, true}}, &pluginv1.Column{Name: 1, Rows: []byte{0b110}, Numbers: []float64{1, 2}}), want: `customer "c1": malformed message: trait "b" in two columns`},
		"trait in two places, another between": {batch: cols(ids, &pluginv1.Column{Name: 1, Rows: []byte{0b001}, Bools: []bool{true}},
			&pluginv1.Column{Name: 0, Rows: []byte{0b001}, Bools: []bool{true}}, &pluginv1.Column{Name: 1, Rows: []byte{0b001}, Numbers: []float64{1}}),
			want: `customer "c0": malformed message: trait "b" in two columns`},
		"doubles cut short": {
			raw:  columnsRaw(ids, protowire.AppendBytes(protowire.AppendTag(nil, fColumnNumbers, protowire.BytesType), make([]byte, 20))),
			want: "packed doubles of 20 bytes",
		},
		"varints cut short": {
			raw:  columnsRaw(ids, protowire.AppendBytes(protowire.AppendTag(nil, fColumnBools, protowire.BytesType), []byte{1, 1, 0x81})),
			want: "packed varints cut short",
		},
		"string not UTF-8": {
			raw: columnsRaw(ids, func() []byte {
				var b []byte
				for _, s := range []string{"ok", "\xff", "ok"} {
					b = protowire.AppendString(protowire.AppendTag(b, fColumnStrings, protowire.BytesType), s)
				}
				return b
			}()),
			want: `customer "c1": "a": string field is not valid UTF-8`,
		},
		"two columns fields": {
			raw: func() []byte {
				one, _ := proto.Marshal(cols(ids[:1]))
				return append(one, one...)
			}(),
			want: "2 columns fields, at most one allowed",
		},
		"columns beside grouped batches": {
			batch: &pluginv1.Batch{Batches: []*pluginv1.Batch{{Cursor: "1"}}, Columns: &pluginv1.Columns{Ids: ids}},
			want:  "field 10 beside grouped batches",
		},
	} {
		t.Run(name, func(t *testing.T) {
			raw := tc.raw
			if raw == nil {
				var err error
				if raw, err = proto.Marshal(tc.batch); err != nil {
					t.Fatal(err)
				}
			}
			d := &flatDecoder{}
			var err error
			if group, serr := d.split(raw); serr != nil || group != nil {
				err = serr
			} else {
				_, err = d.decode(raw)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decode: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// columnsRaw is a batch with trait names a and b and one column of trait
// a whose value fields are vals, as raw bytes (what protobuf-go would not
// write).
func columnsRaw(ids []string, vals []byte) []byte {
	var col []byte
	col = protowire.AppendVarint(protowire.AppendTag(col, fColumnName, protowire.VarintType), 0)
	col = append(col, vals...)
	var cs []byte
	for _, id := range ids {
		cs = protowire.AppendString(protowire.AppendTag(cs, fColumnsIDs, protowire.BytesType), id)
	}
	cs = protowire.AppendBytes(protowire.AppendTag(cs, fColumnsColumns, protowire.BytesType), col)
	var b []byte
	for _, n := range []string{"a", "b"} {
		b = protowire.AppendString(protowire.AppendTag(b, fBatchTraitNames, protowire.BytesType), n)
	}
	return protowire.AppendBytes(protowire.AppendTag(b, fBatchColumns, protowire.BytesType), cs)
}

// TestColumnsNegotiated: a plugin sends columns only to a host that asks
// for them together with the compact form.
func TestColumnsNegotiated(t *testing.T) {
	for name, tc := range map[string]struct {
		req     *pluginv1.PullRequest
		columns bool
	}{
		"columns and indexed": {req: &pluginv1.PullRequest{IndexedTraits: true, BatchGroups: true, Columns: true}, columns: true},
		"indexed only":        {req: &pluginv1.PullRequest{IndexedTraits: true, BatchGroups: true}},
		"columns alone":       {req: &pluginv1.PullRequest{Columns: true}},
		"legacy":              {req: &pluginv1.PullRequest{}},
	} {
		t.Run(name, func(t *testing.T) {
			s := &sourceServer{impl: &flatListSource{listSource: listSource{batches: []*Batch{benchBatch()}}}}
			var got pluginv1.Batch
			err := s.pullEncoded(t.Context(), tc.req, func(buf []byte) error { return proto.Unmarshal(buf, &got) })
			if err != nil {
				t.Fatal(err)
			}
			if (got.Columns != nil) != tc.columns || (len(got.Customers) == 0) != tc.columns {
				t.Errorf("columns sent: %v, customers in rows: %d; want columns %v", got.Columns != nil, len(got.Customers), tc.columns)
			}
		})
	}
}

// FuzzColumnsDecode: whatever a plugin sends in a batch's columns, the host
// decodes it or refuses it with an error; it never panics, and what it
// decodes encodes back to the same customers.
func FuzzColumnsDecode(f *testing.F) {
	enc := flatEncoder{indexed: true, columns: true}
	fb := &FlatBatch{}
	// Small seeds (not benchBatch's 1,000 customers): the fuzzer mutates
	// and minimizes them thousands of times faster.
	for _, b := range append(flatBatches()[1:], mixedBatch()) {
		raw, err := enc.append(nil, flatOf(b, fb))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		enc = flatEncoder{indexed: true, columns: true} // each seed a stream of its own
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := (&flatDecoder{}).decode(raw)
		if err != nil {
			return
		}
		again := flatEncoder{indexed: true, columns: true}
		out, err := again.append(nil, got)
		if err != nil {
			t.Fatalf("re-encoding what was decoded: %v", err)
		}
		back, err := (&flatDecoder{}).decode(out)
		if err != nil {
			t.Fatalf("decoding what was re-encoded: %v", err)
		}
		if diff := cmp.Diff(got.Batch(), back.Batch(), cmpopts.EquateEmpty(), cmpopts.EquateNaNs()); diff != "" {
			t.Errorf("decoded, re-encoded and decoded again (-first +second):\n%s", diff)
		}
	})
}

// TestColumnsBounded: columns of nulls cost no byte a row, so a few
// kilobytes could ask for millions of traits; such a batch is refused
// before anything is allocated for them.
func TestColumnsBounded(t *testing.T) {
	const rows, columns = 2000, 600
	ids := make([]string, rows)
	for i := range ids {
		ids[i] = "c" + strings.Repeat("x", i%3)
	}
	for name, names := range map[string]int{"distinct traits": columns, "one trait": 1} {
		t.Run(name, func(t *testing.T) {
			pb := &pluginv1.Batch{Columns: &pluginv1.Columns{Ids: ids}}
			for i := range names {
				pb.TraitNames = append(pb.TraitNames, "t"+strings.Repeat("x", i))
			}
			for i := range columns {
				pb.Columns.Columns = append(pb.Columns.Columns, &pluginv1.Column{Name: uint32(i % names)})
			}
			raw, err := proto.Marshal(pb)
			if err != nil {
				t.Fatal(err)
			}
			d := &flatDecoder{}
			_, err = d.decode(raw)
			if err == nil || !strings.Contains(err.Error(), "traits in a batch of") {
				t.Fatalf("decode of %d bytes asking for %d traits: %v, want refused for too many traits", len(raw), rows*columns, err)
			}
			if c := cap(d.batch.Traits); c > 0 {
				t.Errorf("%d trait slots allocated before refusing", c)
			}
		})
	}
}

// TestColumnsProtobufForms: what proto3 parsers must accept decodes:
// packed values split over several fields, unpacked values, an empty packed
// field (no values), and a name beyond uint32 (read as protobuf reads it).
func TestColumnsProtobufForms(t *testing.T) {
	ids := []string{"c0", "c1", "c2"}
	tag := func(b []byte, num protowire.Number, typ protowire.Type) []byte {
		return protowire.AppendTag(b, num, typ)
	}
	var split, unpacked, empty []byte
	split = protowire.AppendBytes(tag(split, fColumnBools, protowire.BytesType), []byte{1})
	split = protowire.AppendBytes(tag(split, fColumnBools, protowire.BytesType), []byte{0, 1})
	for _, v := range []int64{5, -6, 7} {
		unpacked = protowire.AppendVarint(tag(unpacked, fColumnIntegers, protowire.VarintType), protowire.EncodeZigZag(v))
	}
	empty = protowire.AppendBytes(tag(empty, fColumnNumbers, protowire.BytesType), nil)
	empty = protowire.AppendBytes(tag(empty, fColumnBools, protowire.BytesType), []byte{0, 0, 1})
	for name, tc := range map[string]struct {
		vals []byte
		want []Value
	}{
		"packed in two fields": {vals: split, want: []Value{Bool(true), Bool(false), Bool(true)}},
		"unpacked":             {vals: unpacked, want: []Value{Number(5), Number(-6), Number(7)}},
		"empty packed field":   {vals: empty, want: []Value{Bool(false), Bool(false), Bool(true)}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := (&flatDecoder{}).decode(columnsRaw(ids, tc.vals))
			if err != nil {
				t.Fatal(err)
			}
			want := &Batch{}
			for i, id := range ids {
				want.Customers = append(want.Customers, Customer{ID: id, Traits: map[string]Value{"a": tc.want[i]}})
			}
			if diff := cmp.Diff(want, got.Batch(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("name beyond uint32", func(t *testing.T) {
		// columnsRaw writes name 0 first; a later name field wins.
		vals := protowire.AppendVarint(tag(nil, fColumnName, protowire.VarintType), 1<<32+1)
		vals = protowire.AppendBytes(tag(vals, fColumnBools, protowire.BytesType), []byte{1, 1, 1})
		got, err := (&flatDecoder{}).decode(columnsRaw(ids, vals))
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := got.Batch().Customers[0].Traits["b"]; !ok || !cmp.Equal(v, Bool(true)) {
			t.Errorf("customer 0's traits %v, want b (name 1<<32+1 read as 1)", got.Batch().Customers[0].Traits)
		}
	})
}
