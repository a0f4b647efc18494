package sdk

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/encoding/protowire"
)

// flatListSource sends the given batches in flat form (a FlatSource),
// building them in one FlatBatch that it resets between batches, as a
// plugin building no maps does. Its Pull sends them in map form.
type flatListSource struct {
	listSource
	// mangle, if set, changes each flat batch before it is sent.
	mangle func(i int, b *FlatBatch)
}

var _ FlatSource = (*flatListSource)(nil)

func (s *flatListSource) PullFlat(_ context.Context, _ string, send func(*FlatBatch) error) error {
	fb := &FlatBatch{}
	for i, b := range s.batches {
		// (In process, a batch's map form shares the slices flatOf
		// copies.)
		flatOf(b, fb)
		if s.mangle != nil {
			s.mangle(i, fb)
		}
		if err := send(fb); err != nil {
			return err
		}
		// What the SDK sent is gone from the batch: the next one reuses it.
		for j := range fb.Traits {
			fb.Traits[j].Value = String("overwritten")
		}
	}
	return nil
}

// TestFlatSourceStreams: a plugin source building flat batches streams the
// same batches as one building maps, to new and old hosts and in process.
func TestFlatSourceStreams(t *testing.T) {
	want := flatBatches()
	for name, src := range map[string]func(t *testing.T) Source{
		"in process": func(*testing.T) Source { return &flatListSource{listSource: listSource{batches: flatBatches()}} },
		"new host": func(t *testing.T) Source {
			sc, _ := connect(t, &flatListSource{listSource: listSource{batches: flatBatches()}}, nil)
			return sc
		},
		"host without columns": func(t *testing.T) Source {
			sc, _ := connect(t, &flatListSource{listSource: listSource{batches: flatBatches()}}, nil)
			return RowPull(sc)
		},
		"old host": func(t *testing.T) Source {
			sc, _ := connect(t, &flatListSource{listSource: listSource{batches: flatBatches()}}, nil)
			return LegacyPull(sc)
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, _ := pullFlatCopies(t, src(t))
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmpopts.EquateNaNs()); diff != "" {
				t.Errorf("batches (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFlatSourceBrokenBatches: a flat batch the encoder cannot send ends
// the stream with an error that says what the source did wrong.
func TestFlatSourceBrokenBatches(t *testing.T) {
	for name, tc := range map[string]struct {
		mangle func(i int, b *FlatBatch)
		want   string
	}{
		"names shrink": {
			mangle: func(i int, b *FlatBatch) {
				if i == 1 {
					b.Names = b.Names[:1]
				}
			},
			want: "only grows",
		},
		"a name changes": {
			mangle: func(i int, b *FlatBatch) {
				if i == 1 {
					b.Names = append([]string{"renamed"}, b.Names[1:]...)
				}
			},
			want: `changed from "country" to "renamed"`,
		},
		"name index out of range": {
			mangle: func(i int, b *FlatBatch) { b.Traits[0].Name = len(b.Names) },
			want:   "outside Names",
		},
		"trait range out of range": {
			mangle: func(i int, b *FlatBatch) { b.Customers[0].End = len(b.Traits) + 1 },
			want:   "outside the batch's",
		},
		"unknown value type": {
			mangle: func(i int, b *FlatBatch) { b.Traits[0].Value.Type = TypeStringList + 1 },
			want:   "unknown value type",
		},
	} {
		for host, legacy := range map[string]bool{"new host": false, "old host": true} {
			t.Run(name+"/"+host, func(t *testing.T) {
				sc, _ := connect(t, &flatListSource{listSource: listSource{batches: flatBatches()}, mangle: tc.mangle}, nil)
				var src Source = sc
				if legacy {
					src = LegacyPull(sc)
				}
				err := PullFlat(t.Context(), src, "", func(*FlatBatch) error { return nil })
				if legacy && name == "names shrink" || legacy && name == "a name changes" {
					// The map form sends names with every value: no table to break.
					if err != nil && !strings.Contains(err.Error(), "outside Names") {
						t.Errorf("PullFlat = %v", err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("PullFlat = %v, want an error containing %q", err, tc.want)
				}
			})
		}
	}
}

func TestFlatBatchBuilder(t *testing.T) {
	var b FlatBatch
	plan, vip := b.Name("plan"), b.Name("vip")
	if again := b.Name("plan"); again != plan || len(b.Names) != 2 {
		t.Fatalf("Name(plan) twice = %d, %d with names %v", plan, again, b.Names)
	}
	b.AddCustomer("c1")
	b.AddTrait(plan, String("pro"))
	b.AddTrait(vip, Bool(true))
	b.AddCustomer("c2")
	b.AddCustomer("c3")
	b.AddTrait(vip, Bool(false))
	b.Cursor, b.CaughtUp = "3", true
	b.Deletes = append(b.Deletes, "c0")
	want := []FlatCustomer{{ID: "c1", Start: 0, End: 2}, {ID: "c2", Start: 2, End: 2}, {ID: "c3", Start: 2, End: 3}}
	if diff := cmp.Diff(want, b.Customers); diff != "" {
		t.Errorf("customers (-want +got):\n%s", diff)
	}
	if got := b.CustomerTraits(2); !cmp.Equal(got, []FlatTrait{{Name: vip, Value: Bool(false)}}) {
		t.Errorf("c3's traits = %v", got)
	}
	b.Reset()
	if len(b.Customers) != 0 || len(b.Traits) != 0 || len(b.Deletes) != 0 || b.Cursor != "" || b.CaughtUp {
		t.Errorf("after Reset: %+v", b)
	}
	if !slices.Equal(b.Names, []string{"plan", "vip"}) {
		t.Errorf("Reset dropped the stream's names: %v", b.Names)
	}
}

// TestDecodeChecksEachString: each of a customer's strings must be UTF-8,
// including halves of one character split across two strings (valid only
// together).
func TestDecodeChecksEachString(t *testing.T) {
	for name, tc := range map[string]struct {
		id     string
		values []string
		want   string // "" = decodes
	}{
		"all good":                {id: "c1", values: []string{"Ada", "é", "日本"}},
		"empty strings":           {id: "c1", values: []string{"", "x", ""}},
		"bad id":                  {id: "c\xff", values: []string{"Ada"}, want: "string field is not valid UTF-8"},
		"bad value":               {id: "c1", values: []string{"Ada", "x\xffy"}, want: `customer "c1": "t1": string field is not valid UTF-8`},
		"character split in two":  {id: "c1", values: []string{"a\xc3", "\xa9b"}, want: `customer "c1": "t0": string field is not valid UTF-8`},
		"id split from its value": {id: "c\xe6\x97", values: []string{"\xa5"}, want: "not valid UTF-8"},
		"lone continuation":       {id: "c1", values: []string{"ok", "\x80"}, want: `"t1": string field is not valid UTF-8`},
	} {
		t.Run(name, func(t *testing.T) {
			var buf []byte
			buf = protowire.AppendTag(buf, fBatchCustomers, protowire.BytesType)
			start := len(buf)
			body := appendString(nil, fCustomerID, tc.id)
			for i, v := range tc.values {
				body = appendIndexedTrait(body, uint32(i), &Value{Type: TypeString, Str: v})
			}
			buf = protowire.AppendBytes(buf[:start], body)
			for i := range tc.values {
				buf = appendTraitNames(buf, []string{fmt.Sprintf("t%d", i)})
			}
			dec := &flatDecoder{}
			b, err := dec.decode(buf)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				got := b.Batch().Customers[0]
				if got.ID != tc.id || len(got.Traits) != len(tc.values) {
					t.Errorf("decoded %+v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decode = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func BenchmarkFlatBuild(b *testing.B) {
	fb := &FlatBatch{}
	s, n := fb.Name("s"), fb.Name("n")
	b.Run("AddTrait", func(b *testing.B) {
		for b.Loop() {
			fb.Reset()
			for i := range 1000 {
				fb.AddCustomer("c")
				for range 4 {
					fb.AddTrait(s, String("x"))
					fb.AddTrait(n, Number(float64(i)))
				}
			}
		}
	})
	b.Run("typed", func(b *testing.B) {
		for b.Loop() {
			fb.Reset()
			for i := range 1000 {
				fb.AddCustomer("c")
				for range 4 {
					fb.AddString(s, "x")
					fb.AddNumber(n, float64(i))
				}
			}
		}
	})
}

// TestFlatBatchTypedAdders: each typed adder gives the Value AddTrait
// would, also in a slot that held another type's value before Reset.
func TestFlatBatchTypedAdders(t *testing.T) {
	var b FlatBatch
	n := b.Name("x")
	when := time.Date(2024, 1, 15, 0, 0, 0, 0, time.UTC)
	b.AddCustomer("old")
	for _, v := range []Value{List("a", "b"), Time(when), String("s"), Number(1), Bool(true)} {
		b.AddTrait(n, v)
	}
	b.Reset()
	b.AddCustomer("c")
	b.AddString(n, "pro")
	b.AddNumber(n, 2.5)
	b.AddBool(n, true)
	b.AddTime(n, when)
	b.AddList(n, "vip", "beta")
	want := []FlatTrait{
		{Name: n, Value: String("pro")},
		{Name: n, Value: Number(2.5)},
		{Name: n, Value: Bool(true)},
		{Name: n, Value: Time(when)},
		{Name: n, Value: List("vip", "beta")},
	}
	if diff := cmp.Diff(want, b.CustomerTraits(0)); diff != "" {
		t.Errorf("traits (-want +got):\n%s", diff)
	}
}
