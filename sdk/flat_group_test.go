package sdk

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// groupWire encodes batches as a plugin does, in the compact form except
// where mapForm says a batch's traits go as maps.
func groupWire(t *testing.T, batches []*Batch, mapForm func(i int) bool) [][]byte {
	t.Helper()
	names := &traitIndex{}
	var out [][]byte
	for i, b := range batches {
		idx := names
		if mapForm(i) {
			idx = nil
		}
		buf, err := appendBatchTo(nil, b, idx)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf)
	}
	return out
}

// groupBatches are batches with customers only (decoded in parallel),
// events (decoded alone), names first sent late, and map-form traits
// naming traits new to the stream (decoded again alone).
func groupBatches() []*Batch {
	var bs []*Batch
	for i := range 11 {
		b := &Batch{Cursor: fmt.Sprint(i)}
		for j := range 50 {
			id := fmt.Sprintf("c%d-%d", i, j)
			b.Customers = append(b.Customers, Customer{ID: id, Traits: map[string]Value{
				"email": String(id + "@example.com"), "orders": Number(float64(j)),
				fmt.Sprintf("late_%d", i%4): Bool(j%2 == 0),
			}})
		}
		bs = append(bs, b)
	}
	return append(bs, flatBatches()...)
}

func TestDecodeGroupMatchesOneByOne(t *testing.T) {
	for name, mapForm := range map[string]func(int) bool{
		"compact":   func(int) bool { return false },
		"maps":      func(int) bool { return true },
		"mixed":     func(i int) bool { return i%3 == 1 },
		"maps late": func(i int) bool { return i >= 5 },
	} {
		t.Run(name, func(t *testing.T) {
			wire := groupWire(t, groupBatches(), mapForm)
			one := &flatDecoder{}
			var want []*Batch
			for _, raw := range wire {
				b, err := one.decode(raw)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, b.Batch())
			}
			grouped := &flatDecoder{}
			var got []*Batch
			err := grouped.decodeGroup(wire, func(b *FlatBatch) error {
				got = append(got, b.Batch())
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmpopts.EquateNaNs()); diff != "" {
				t.Errorf("grouped decode (-one by one +grouped):\n%s", diff)
			}
		})
	}
}

func TestDecodeGroupStops(t *testing.T) {
	wire := groupWire(t, groupBatches(), func(int) bool { return false })
	t.Run("malformed batch", func(t *testing.T) {
		bad := append([][]byte(nil), wire...)
		bad[6] = []byte{0xff} // not a message
		var cursors []string
		err := (&flatDecoder{}).decodeGroup(bad, func(b *FlatBatch) error {
			cursors = append(cursors, b.Cursor)
			return nil
		})
		if err == nil || len(cursors) != 6 || cursors[5] != "5" {
			t.Errorf("decodeGroup = %v after sending %v, want an error after the 6 batches before the bad one", err, cursors)
		}
	})
	t.Run("send error", func(t *testing.T) {
		stop := errors.New("host is full")
		n := 0
		err := (&flatDecoder{}).decodeGroup(wire, func(*FlatBatch) error {
			n++
			if n == 3 {
				return stop
			}
			return nil
		})
		if err != stop || n != 3 {
			t.Errorf("decodeGroup = %v after %d sends, want the send error after 3", err, n)
		}
	})
}
