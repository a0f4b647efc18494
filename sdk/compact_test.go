package sdk

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// The compact Pull forms (plugin.proto: PullRequest.indexed_traits and
// batch_groups) against protobuf-go, and old plugins and hosts against new
// ones.

// indexedToMaps rebuilds each customer's trait map from a compact batch
// parsed by protobuf-go, with the stream's name table so far.
func indexedToMaps(t *testing.T, pb *pluginv1.Batch, table *[]string) []Customer {
	t.Helper()
	*table = append(*table, pb.GetTraitNames()...)
	var out []Customer
	for _, c := range pb.GetCustomers() {
		if len(c.GetTraits()) > 0 {
			t.Errorf("customer %q has map traits in the compact form", c.GetId())
		}
		cu := Customer{ID: c.GetId()}
		for _, it := range c.GetIndexedTraits() {
			if int(it.GetName()) >= len(*table) {
				t.Fatalf("customer %q: trait name %d not in the table %v", c.GetId(), it.GetName(), *table)
			}
			v := &pluginv1.Value{}
			switch k := it.GetKind().(type) {
			case *pluginv1.IndexedTrait_StringValue:
				v.Kind = &pluginv1.Value_StringValue{StringValue: k.StringValue}
			case *pluginv1.IndexedTrait_NumberValue:
				v.Kind = &pluginv1.Value_NumberValue{NumberValue: k.NumberValue}
			case *pluginv1.IndexedTrait_BoolValue:
				v.Kind = &pluginv1.Value_BoolValue{BoolValue: k.BoolValue}
			case *pluginv1.IndexedTrait_TimeUnixMs:
				v.Kind = &pluginv1.Value_TimeUnixMs{TimeUnixMs: k.TimeUnixMs}
			case *pluginv1.IndexedTrait_ListValue:
				v.Kind = &pluginv1.Value_ListValue{ListValue: k.ListValue}
			}
			if cu.Traits == nil {
				cu.Traits = map[string]Value{}
			}
			cu.Traits[(*table)[it.GetName()]] = valueFromPB(v)
		}
		out = append(out, cu)
	}
	return out
}

// TestWireIndexedMatchesProtobuf: appendBatchTo's compact bytes parse with
// protobuf-go to the same customers, each name sent once per stream, and
// the other fields as in the map form.
func TestWireIndexedMatchesProtobuf(t *testing.T) {
	names := &traitIndex{}
	var table []string
	for i, b := range flatBatches() {
		raw, err := appendBatchTo(nil, b, names)
		if err != nil {
			t.Fatal(err)
		}
		var got pluginv1.Batch
		if err := proto.Unmarshal(raw, &got); err != nil {
			t.Fatalf("batch %d: protobuf cannot parse the compact bytes: %v", i, err)
		}
		before := len(table)
		customers := indexedToMaps(t, &got, &table)
		if diff := cmp.Diff(b.Customers, customers, cmpopts.EquateEmpty(), cmpopts.EquateNaNs()); diff != "" {
			t.Errorf("batch %d: compact customers (-want +got):\n%s", i, diff)
		}
		for _, n := range table[before:] {
			if slices.Contains(table[:before], n) {
				t.Errorf("batch %d: name %q sent again", i, n)
			}
		}
		// Apart from the customers, the batch is as in the map form.
		want, _ := batchToPB(b)
		want.Customers, got.Customers, got.TraitNames = nil, nil, nil
		if !proto.Equal(want, &got) {
			t.Errorf("batch %d: compact bytes parse to\n%v\nwant\n%v", i, &got, want)
		}
	}
}

// compactPB is a compact batch built with protobuf-go: name 0 is not on
// the wire (proto3 omits a zero), a null trait, a list, a trait given in
// both forms, and a name used in the batch that adds it.
func compactPB() *pluginv1.Batch {
	return &pluginv1.Batch{
		TraitNames: []string{"plan", "tags", "gone", "ltv"},
		Customers: []*pluginv1.Customer{{
			Id:     "c1",
			Traits: map[string]*pluginv1.Value{"ltv": {Kind: &pluginv1.Value_NumberValue{NumberValue: 1}}},
			IndexedTraits: []*pluginv1.IndexedTrait{
				{Name: 0, Kind: &pluginv1.IndexedTrait_StringValue{StringValue: "pro"}},
				{Name: 1, Kind: &pluginv1.IndexedTrait_ListValue{ListValue: &pluginv1.StringList{Values: []string{"a", "b"}}}},
				{Name: 2},
				{Name: 3, Kind: &pluginv1.IndexedTrait_NumberValue{NumberValue: 2}},
			},
		}},
		Cursor: "1",
	}
}

func TestDecodeIndexedFromProtobuf(t *testing.T) {
	raw, err := proto.Marshal(compactPB())
	if err != nil {
		t.Fatal(err)
	}
	d := &flatDecoder{}
	fb, err := d.decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := &Batch{Cursor: "1", Customers: []Customer{{ID: "c1", Traits: map[string]Value{
		"plan": String("pro"), "tags": List("a", "b"), "gone": {},
		// Generated encoders write fields in number order: indexed last.
		"ltv": Number(2),
	}}}}
	if diff := cmp.Diff(want, fb.Batch(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}
	// A later batch uses the names without sending them again.
	later := &pluginv1.Batch{Customers: []*pluginv1.Customer{{Id: "c2", IndexedTraits: []*pluginv1.IndexedTrait{
		{Name: 3, Kind: &pluginv1.IndexedTrait_BoolValue{BoolValue: true}},
	}}}}
	raw, _ = proto.Marshal(later)
	fb, err = d.decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := fb.Batch().Customers[0].Traits; !cmp.Equal(got, map[string]Value{"ltv": Bool(true)}) {
		t.Errorf("later batch: traits %v, want ltv true", got)
	}
}

func TestDecodeCompactRejectsMalformed(t *testing.T) {
	marshal := func(m *pluginv1.Batch) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	inner := marshal(&pluginv1.Batch{Cursor: "1"})
	for name, raw := range map[string][]byte{
		"name out of the table": marshal(&pluginv1.Batch{TraitNames: []string{"a"}, Customers: []*pluginv1.Customer{{
			Id: "c1", IndexedTraits: []*pluginv1.IndexedTrait{{Name: 1}},
		}}}),
		"name not UTF-8":                 protowire.AppendString(protowire.AppendTag(nil, fBatchTraitNames, protowire.BytesType), "\xff"),
		"group with a cursor of its own": marshal(&pluginv1.Batch{Cursor: "x", Batches: []*pluginv1.Batch{{Cursor: "1"}}}),
		"group in a group":               marshal(&pluginv1.Batch{Batches: []*pluginv1.Batch{{Batches: []*pluginv1.Batch{{Cursor: "1"}}}}}),
		"names with the wrong wire type": protowire.AppendVarint(protowire.AppendTag(nil, fBatchTraitNames, protowire.VarintType), 1),
		"group with the wrong wire type": protowire.AppendVarint(protowire.AppendTag(inner, fBatchBatches, protowire.VarintType), 1),
	} {
		t.Run(name, func(t *testing.T) {
			d := &flatDecoder{}
			group, err := d.split(raw)
			if err == nil {
				if group == nil {
					group = [][]byte{raw}
				}
				for _, b := range group {
					if _, err = d.decode(b); err != nil {
						break
					}
				}
			}
			if err == nil {
				t.Errorf("decoded %x without error", raw)
			}
		})
	}
}

// TestDecodeGroupFromProtobuf: a batch group built with protobuf-go is read
// batch by batch, in order, names carried from one to the next.
func TestDecodeGroupFromProtobuf(t *testing.T) {
	first := compactPB()
	second := &pluginv1.Batch{Cursor: "2", CaughtUp: true, Deletes: []string{"c1"}, Customers: []*pluginv1.Customer{{
		Id: "c2", IndexedTraits: []*pluginv1.IndexedTrait{{Name: 0, Kind: &pluginv1.IndexedTrait_StringValue{StringValue: "team"}}},
	}}}
	raw, err := proto.Marshal(&pluginv1.Batch{Batches: []*pluginv1.Batch{first, {Cursor: "1.5"}, second}})
	if err != nil {
		t.Fatal(err)
	}
	d := &flatDecoder{}
	group, err := d.split(raw)
	if err != nil || len(group) != 3 {
		t.Fatalf("split = %d batches, %v; want 3", len(group), err)
	}
	var got []*Batch
	for _, b := range group {
		fb, err := d.decode(b)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fb.Batch())
	}
	if got[0].Cursor != "1" || got[1].Cursor != "1.5" || got[2].Cursor != "2" || !got[2].CaughtUp {
		t.Errorf("cursors %q %q %q (caught up %v), want 1, 1.5, 2 (caught up)", got[0].Cursor, got[1].Cursor, got[2].Cursor, got[2].CaughtUp)
	}
	if v := got[2].Customers[0].Traits["plan"]; !cmp.Equal(v, String("team")) || got[2].Deletes[0] != "c1" {
		t.Errorf("third batch = %+v, want plan team and a delete of c1", got[2])
	}
	// A plain batch is not a group.
	plain, _ := proto.Marshal(second)
	if g, err := d.split(plain); g != nil || err != nil {
		t.Errorf("split(plain batch) = %d, %v; want nil, nil", len(g), err)
	}
}

// oldSourcePlugin serves Pull as a plugin built before the compact forms:
// maps, one batch a message, whatever the host asks. It records what the
// host asked for.
type oldSourcePlugin struct {
	plugin.NetRPCUnsupportedPlugin
	pluginv1.UnimplementedSourceServer
	batches []*Batch
	mu      sync.Mutex
	asked   *pluginv1.PullRequest
}

func (p *oldSourcePlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterSourceServer(s, p)
	return nil
}

func (p *oldSourcePlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &sourceClient{client: pluginv1.NewSourceClient(c)}, nil
}

func (p *oldSourcePlugin) Pull(req *pluginv1.PullRequest, stream grpc.ServerStreamingServer[pluginv1.Batch]) error {
	p.mu.Lock()
	p.asked = req
	p.mu.Unlock()
	for _, b := range p.batches {
		m, err := batchToPB(b)
		if err != nil {
			return err
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

// TestPullAcrossVersions: every pairing of old and new hosts and plugins
// streams the same batches.
func TestPullAcrossVersions(t *testing.T) {
	want := flatBatches()
	old := &oldSourcePlugin{batches: flatBatches()}
	for name, src := range map[string]func(t *testing.T) Source{
		"new host, new plugin": func(t *testing.T) Source {
			sc, _ := connect(t, &listSource{batches: flatBatches()}, nil)
			return sc
		},
		"old host, new plugin": func(t *testing.T) Source {
			sc, _ := connect(t, &listSource{batches: flatBatches()}, nil)
			return LegacyPull(sc)
		},
		"new host, old plugin": func(t *testing.T) Source {
			raw, err := testConn(t, plugin.PluginSet{SourcePluginName: old}).Dispense(SourcePluginName)
			if err != nil {
				t.Fatal(err)
			}
			return raw.(Source)
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, _ := pullFlatCopies(t, src(t))
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmpopts.EquateNaNs()); diff != "" {
				t.Errorf("batches (-want +got):\n%s", diff)
			}
		})
	}
	old.mu.Lock()
	defer old.mu.Unlock()
	if !old.asked.GetIndexedTraits() || !old.asked.GetBatchGroups() {
		t.Errorf("the host asked for %v, want both compact forms", old.asked)
	}
}

// failingSource sends n batches, then fails.
type failingSource struct {
	n   int
	err error
}

func (s *failingSource) Configure(context.Context, ConfigureRequest) (SourceInfo, error) {
	return SourceInfo{Name: "failing", Version: "1"}, nil
}

func (s *failingSource) Pull(_ context.Context, _ string, send func(*Batch) error) error {
	b := &Batch{Customers: []Customer{{Traits: map[string]Value{"n": {}}}}}
	for i := range s.n {
		b.Customers[0].ID = strings.Repeat("x", i)
		b.Customers[0].Traits["n"] = Number(float64(i))
		b.Cursor = b.Customers[0].ID
		if err := send(b); err != nil {
			return err
		}
	}
	return s.err
}

// TestPullGroupsDeliverBeforeError: batches a source handed over before it
// failed reach the host, in order, before the error; the source reused its
// Batch after each send.
func TestPullGroupsDeliverBeforeError(t *testing.T) {
	const n = 300
	src, _ := connect(t, &failingSource{n: n, err: Errorf(Unavailable, "", "crm down")}, nil)
	var got int
	err := PullFlat(t.Context(), src, "", func(b *FlatBatch) error {
		for i := range b.Customers {
			if want := strings.Repeat("x", got); b.Customers[i].ID != want || b.Cursor != want {
				t.Fatalf("batch %d: customer %q at cursor %q", got, b.Customers[i].ID, b.Cursor)
			}
			if v := b.CustomerTraits(i)[0].Value; !cmp.Equal(v, Number(float64(got))) {
				t.Fatalf("batch %d: value %v", got, v)
			}
			got++
		}
		return nil
	})
	var e *Error
	if got != n || !errors.As(err, &e) || e.Code != Unavailable {
		t.Errorf("PullFlat = %v after %d batches, want UNAVAILABLE after %d", err, got, n)
	}
}

// TestEncodeRejectsUnknownValueType: a Value of no known type fails the
// batch in both forms rather than going out as a null.
func TestEncodeRejectsUnknownValueType(t *testing.T) {
	for _, typ := range []TraitType{-1, TypeStringList + 1} {
		b := &Batch{Customers: []Customer{{ID: "c1", Traits: map[string]Value{"x": {Type: typ}}}}}
		if _, err := appendBatchTo(nil, b, &traitIndex{}); err == nil {
			t.Errorf("compact form: type %d encoded without error", typ)
		}
		if _, err := appendBatch(nil, b); err == nil {
			t.Errorf("map form: type %d encoded without error", typ)
		}
	}
}

// TestWireLongBodies: bodies of 128 bytes and more (two-byte lengths) are
// moved up past their length, in both forms and at every nesting level.
func TestWireLongBodies(t *testing.T) {
	for _, n := range []int{0, 100, 120, 125, 126, 127, 128, 200, 20000} {
		long := strings.Repeat("y", n)
		b := &Batch{Cursor: "c", Customers: []Customer{
			{ID: long, Traits: map[string]Value{"s": String(long), "l": List(long, "z")}},
			{ID: "short", Traits: map[string]Value{"n": Number(1)}},
		}}
		for form, names := range map[string]*traitIndex{"maps": nil, "compact": {}} {
			raw, err := appendBatchTo(nil, b, names)
			if err != nil {
				t.Fatal(err)
			}
			fb, err := (&flatDecoder{}).decode(raw)
			if err != nil {
				t.Fatalf("%s, %d bytes: %v", form, n, err)
			}
			if diff := cmp.Diff(b, fb.Batch(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("%s, %d bytes (-want +got):\n%s", form, n, diff)
			}
		}
	}
}
