package sdk

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// listSource sends the given batches, reusing nothing.
type listSource struct{ batches []*Batch }

func (s *listSource) Configure(context.Context, ConfigureRequest) (SourceInfo, error) {
	return SourceInfo{Name: "list", Version: "1"}, nil
}

func (s *listSource) Pull(_ context.Context, _ string, send func(*Batch) error) error {
	for _, b := range s.batches {
		if err := send(b); err != nil {
			return err
		}
	}
	return nil
}

// flatBatches are batches covering every part of a Batch, with names that
// repeat and names that first appear in a later batch.
func flatBatches() []*Batch {
	return []*Batch{
		benchBatch(),
		fullBatch(),
		edgeBatch(),
		{Cursor: "empty"},
		{Customers: []Customer{
			{ID: "late", Traits: map[string]Value{"plan": String("team"), "brand_new": Bool(true), "gone": {}}},
			{ID: "bare"},
		}},
	}
}

// pullFlatCopies pulls src in flat form and returns each batch in map form
// (taken before send returns) and each batch's Names.
func pullFlatCopies(t *testing.T, src Source) ([]*Batch, [][]string) {
	t.Helper()
	var got []*Batch
	var names [][]string
	err := PullFlat(t.Context(), src, "", func(b *FlatBatch) error {
		for i := range b.Customers {
			seen := map[int]bool{}
			for _, tr := range b.CustomerTraits(i) {
				if seen[tr.Name] {
					t.Errorf("customer %q has trait %q twice", b.Customers[i].ID, b.Names[tr.Name])
				}
				seen[tr.Name] = true
			}
		}
		got = append(got, b.Batch())
		names = append(names, append([]string(nil), b.Names...))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, names
}

func TestPullFlatMatchesBatches(t *testing.T) {
	want := flatBatches()
	for name, src := range map[string]func(t *testing.T) Source{
		"in process": func(*testing.T) Source { return &listSource{batches: flatBatches()} },
		"over gRPC": func(t *testing.T) Source {
			sc, _ := connect(t, &listSource{batches: flatBatches()}, nil)
			return sc
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, names := pullFlatCopies(t, src(t))
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmpopts.EquateNaNs()); diff != "" {
				t.Errorf("flat batches in map form (-want +got):\n%s", diff)
			}
			// The name table only grows: earlier indexes keep their names.
			for i := 1; i < len(names); i++ {
				if len(names[i]) < len(names[i-1]) || !cmp.Equal(names[i][:len(names[i-1])], names[i-1]) {
					t.Errorf("batch %d renumbered the stream's names: %v after %v", i, names[i], names[i-1])
				}
			}
			if last := names[len(names)-1]; !strings.Contains(strings.Join(last, ","), "brand_new") {
				t.Errorf("names %v lack a name first sent in the last batch", last)
			}
		})
	}
}

func TestPullFlatSendErrorStops(t *testing.T) {
	stop := fmt.Errorf("host is full")
	sc, _ := connect(t, &countSource{batches: 5}, nil)
	for name, src := range map[string]Source{"in process": &countSource{batches: 5}, "over gRPC": sc} {
		t.Run(name, func(t *testing.T) {
			n := 0
			err := PullFlat(t.Context(), src, "", func(*FlatBatch) error { n++; return stop })
			if err != stop || n != 1 {
				t.Errorf("PullFlat = %v after %d batches, want the send error after 1", err, n)
			}
		})
	}
}

// appendEntry appends a map<string, Value> entry field of a Customer.
func appendEntry(buf []byte, key string, v Value) []byte {
	var entry []byte
	entry = protowire.AppendTag(entry, fEntryKey, protowire.BytesType)
	entry = protowire.AppendString(entry, key)
	val, _ := valueSize(&v)
	entry = protowire.AppendTag(entry, fEntryValue, protowire.BytesType)
	entry = protowire.AppendVarint(entry, uint64(val))
	entry = appendValue(entry, &v)
	buf = protowire.AppendTag(buf, fCustomerTraits, protowire.BytesType)
	return protowire.AppendBytes(buf, entry)
}

// TestFlatDecoderRepeatedFields: a trait or id sent twice in one customer
// is read as protobuf reads it (the last wins), and never appears twice.
func TestFlatDecoderRepeatedFields(t *testing.T) {
	var c []byte
	c = protowire.AppendTag(c, fCustomerID, protowire.BytesType)
	c = protowire.AppendString(c, "first-id")
	c = appendEntry(c, "plan", String("free"))
	c = appendEntry(c, "ltv", Number(1))
	c = appendEntry(c, "plan", Number(3)) // a string replaced by a number
	c = appendEntry(c, "ltv", String("x"))
	c = appendEntry(c, "ltv", String("y")) // the last of two strings
	c = appendEntry(c, "city", String("Paris"))
	c = appendEntry(c, "city", Value{}) // a string replaced by null
	c = protowire.AppendTag(c, fCustomerID, protowire.BytesType)
	c = protowire.AppendString(c, "second-id")
	raw := protowire.AppendTag(nil, fBatchCustomers, protowire.BytesType)
	raw = protowire.AppendBytes(raw, c)

	var m pluginv1.Batch
	if err := proto.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	want := batchFromPB(&m)
	fb, err := (&flatDecoder{}).decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(fb.CustomerTraits(0)); n != 3 {
		t.Errorf("customer has %d traits, want 3 (plan, ltv, city once each)", n)
	}
	if diff := cmp.Diff(want, fb.Batch()); diff != "" {
		t.Errorf("(-protobuf +flat):\n%s", diff)
	}
	if want.Customers[0].ID != "second-id" || want.Customers[0].Traits["ltv"].Str != "y" {
		t.Errorf("protobuf reads %+v; the test's premise is wrong", want.Customers[0])
	}
}

// TestFlatBatchReuse: a stream's batches reuse one FlatBatch, but what
// Batch returned, and the strings, stay as they were.
func TestFlatBatchReuse(t *testing.T) {
	first, err := appendBatch(nil, fullBatch())
	if err != nil {
		t.Fatal(err)
	}
	second, err := appendBatch(nil, benchBatch())
	if err != nil {
		t.Fatal(err)
	}
	dec := &flatDecoder{}
	fb, err := dec.decode(first)
	if err != nil {
		t.Fatal(err)
	}
	kept := fb.Batch()
	id, email := fb.Customers[1].ID, fb.Traits[fb.Customers[1].Start].Value.Str
	// Overwrite the wire bytes too: nothing may point into them.
	clear(first)
	if _, err := dec.decode(second); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(fullBatch(), kept, cmpopts.EquateNaNs()); diff != "" {
		t.Errorf("a batch taken from the stream changed (-want +got):\n%s", diff)
	}
	if id != "c2" || email != "ada@example.com" {
		t.Errorf("kept strings changed to %q, %q", id, email)
	}
}

func TestFlatNamesBound(t *testing.T) {
	var names flatNames
	for i := range maxFlatNames {
		if _, err := names.lookupString(fmt.Sprint("t", i)); err != nil {
			t.Fatalf("name %d: %v", i, err)
		}
	}
	if n, err := names.lookupString("t7"); err != nil || n != 7 {
		t.Errorf("lookup of a known name = %d, %v; want 7", n, err)
	}
	if _, err := names.lookupString("one too many"); err == nil {
		t.Error("a stream's name table grew past its bound")
	}
}
