package sdk

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// appendBatch appends the wire encoding of b to buf, with traits in maps,
// as Pull sends a batch to a host that did not ask for the compact form.
func appendBatch(buf []byte, b *Batch) ([]byte, error) {
	return appendBatchTo(buf, b, nil)
}

// decodeBatch decodes the wire encoding of a cohort.plugin.v1.Batch in map
// form, as sourceClient.Pull hands it out.
func decodeBatch(data []byte, d *flatDecoder) (*Batch, error) {
	fb, err := d.decode(data)
	if err != nil {
		return nil, err
	}
	return fb.Batch(), nil
}

// edgeBatch has values at the edges of their encodings.
func edgeBatch() *Batch {
	return &Batch{
		Customers: []Customer{
			{ID: "ünïcødé-✓", Traits: map[string]Value{
				"neg_zero": Number(math.Copysign(0, -1)),
				"inf":      Number(math.Inf(1)),
				"max":      Number(math.MaxFloat64),
				"far":      Time(ms(9999, 12, 31, 23, 59, 59, 999)),
				"long":     String(strings.Repeat("x", 300)), // two-byte length
				"list1":    List(""),
				"emoji":    String("🎉"),
			}},
			{ID: ""},
		},
		Deletes: []string{""},
		Events: []Event{
			{ID: "e-neg", Value: math.Copysign(0, -1), HasValue: true, Time: ms(1900, 1, 1, 0, 0, 0, 1)},
			{ID: "e-none"},
		},
		Consents: []ConsentChange{{Status: ConsentStatus(-1)}},
		Problems: []Problem{{Line: -5, Column: math.MaxInt32}},
	}
}

// TestWireBatchMatchesProtobuf checks the hand-written Pull codec against
// protobuf-go both ways: appendBatch's bytes parse to what batchToPB
// builds, and decodeBatch reads proto.Marshal's bytes as batchFromPB does.
func TestWireBatchMatchesProtobuf(t *testing.T) {
	for name, b := range map[string]*Batch{"full": fullBatch(), "edges": edgeBatch(), "empty": {}, "bench": benchBatch()} {
		t.Run(name, func(t *testing.T) {
			want, err := batchToPB(b)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := appendBatch(nil, b)
			if err != nil {
				t.Fatal(err)
			}
			var got pluginv1.Batch
			if err := proto.Unmarshal(raw, &got); err != nil {
				t.Fatalf("protobuf cannot parse appendBatch's bytes: %v", err)
			}
			if !proto.Equal(want, &got) {
				t.Errorf("appendBatch's bytes parse to\n%v\nwant\n%v", &got, want)
			}

			pbBytes, err := proto.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			decoded, err := decodeBatch(pbBytes, &flatDecoder{})
			if err != nil {
				t.Fatalf("decodeBatch(proto.Marshal(...)): %v", err)
			}
			if diff := cmp.Diff(b, decoded, cmpopts.EquateNaNs()); diff != "" {
				t.Errorf("decodeBatch(proto.Marshal(...)) (-want +got):\n%s", diff)
			}
			roundTrip, err := decodeBatch(raw, &flatDecoder{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(b, roundTrip); diff != "" {
				t.Errorf("decodeBatch(appendBatch(...)) (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWireBatchViaServerMessage(t *testing.T) {
	// The server sends appendBatch's bytes as the unknown fields of an empty
	// message; gRPC's codec marshals them as they are.
	raw, err := appendBatch(nil, fullBatch())
	if err != nil {
		t.Fatal(err)
	}
	m := &pluginv1.Batch{}
	m.ProtoReflect().SetUnknown(raw)
	out, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(raw) {
		t.Error("marshalling a Batch holding the bytes as unknown fields changed them")
	}
}

func TestDecodeBatchRejectsMalformed(t *testing.T) {
	good, err := appendBatch(nil, fullBatch())
	if err != nil {
		t.Fatal(err)
	}
	badUTF8 := protowire.AppendTag(nil, fBatchCursor, protowire.BytesType)
	badUTF8 = protowire.AppendBytes(badUTF8, []byte{0xff, 0xfe})
	wrongType := protowire.AppendTag(nil, fBatchCustomers, protowire.VarintType)
	wrongType = protowire.AppendVarint(wrongType, 1)
	var badKey []byte
	{
		value := protowire.AppendTag(nil, fValueBool, protowire.VarintType)
		value = protowire.AppendVarint(value, 1)
		entry := protowire.AppendTag(nil, fEntryKey, protowire.BytesType)
		entry = protowire.AppendBytes(entry, []byte{0xc3})
		entry = protowire.AppendTag(entry, fEntryValue, protowire.BytesType)
		entry = protowire.AppendBytes(entry, value)
		customer := protowire.AppendTag(nil, fCustomerTraits, protowire.BytesType)
		customer = protowire.AppendBytes(customer, entry)
		badKey = protowire.AppendTag(nil, fBatchCustomers, protowire.BytesType)
		badKey = protowire.AppendBytes(badKey, customer)
	}
	for name, data := range map[string][]byte{
		"truncated":       good[:len(good)-3],
		"truncated tag":   {0x80},
		"cursor not utf8": badUTF8,
		"trait key utf8":  badKey,
		"wrong wire type": wrongType,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeBatch(data, &flatDecoder{}); err == nil {
				t.Error("decodeBatch accepted malformed input")
			}
		})
	}
}

func TestDecodeBatchSkipsUnknownFields(t *testing.T) {
	raw, err := appendBatch(nil, fullBatch())
	if err != nil {
		t.Fatal(err)
	}
	// A newer plugin may send fields this host does not know.
	raw = protowire.AppendTag(raw, 99, protowire.BytesType)
	raw = protowire.AppendString(raw, "from the future")
	raw = protowire.AppendTag(raw, 100, protowire.Fixed32Type)
	raw = protowire.AppendFixed32(raw, 7)
	got, err := decodeBatch(raw, &flatDecoder{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(fullBatch(), got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestFlatDecoderInternsNames(t *testing.T) {
	raw, err := appendBatch(nil, benchBatch())
	if err != nil {
		t.Fatal(err)
	}
	dec := &flatDecoder{}
	first, err := dec.decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	names := append([]string(nil), first.Names...)
	if len(names) != 8 {
		t.Errorf("name table holds %d names, want the 8 trait names", len(names))
	}
	second, err := dec.decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(names, second.Names); diff != "" {
		t.Errorf("the second batch of a stream renumbered the names (-first +second):\n%s", diff)
	}
	want := benchBatch()
	for i := range second.Customers {
		for _, tr := range second.CustomerTraits(i) {
			name := first.Names[tr.Name]
			if got := want.Customers[i].Traits[name]; !cmp.Equal(got, tr.Value) {
				t.Fatalf("customer %d: trait %q = %v, want %v", i, name, tr.Value, got)
			}
		}
	}
}

// FuzzDecodeBatch checks that decodeBatch never panics and, whenever it
// accepts its input, agrees with protobuf-go.
func FuzzDecodeBatch(f *testing.F) {
	for _, b := range []*Batch{fullBatch(), edgeBatch(), {}} {
		raw, err := appendBatch(nil, b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeBatch(data, &flatDecoder{})
		if err != nil {
			return
		}
		var m pluginv1.Batch
		if err := proto.Unmarshal(data, &m); err != nil {
			t.Fatalf("decodeBatch accepted what protobuf rejects: %v", err)
		}
		if diff := cmp.Diff(batchFromPB(&m), got, cmpopts.EquateNaNs(), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("decodeBatch and protobuf disagree (-protobuf +decodeBatch):\n%s", diff)
		}
	})
}
