package sdk

import (
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// This file is the plugin side of a source that implements FlatSource: its
// flat batches are written to the wire as they are, with no map per
// customer on either side of the stream.

// Reset empties b for the next batch of the same stream: customers, traits,
// deletes, events, consents and problems are cleared (their capacity kept)
// and the cursor and caught-up mark are unset. Names is kept: a stream's
// table of names only grows.
func (b *FlatBatch) Reset() {
	*b = FlatBatch{
		Names:     b.Names,
		Customers: b.Customers[:0],
		Traits:    b.Traits[:0],
		Deletes:   b.Deletes[:0],
		Events:    b.Events[:0],
		Consents:  b.Consents[:0],
		Problems:  b.Problems[:0],
	}
}

// Name returns the index of name in b.Names, appending it when new. It
// compares name with every name in the table: a source looks its trait
// names up once per stream (or per column), not once per value.
func (b *FlatBatch) Name(name string) int {
	for i, n := range b.Names {
		if n == name {
			return i
		}
	}
	b.Names = append(b.Names, name)
	return len(b.Names) - 1
}

// AddCustomer starts an upsert of customer id; AddTrait adds its traits.
func (b *FlatBatch) AddCustomer(id string) {
	n := len(b.Traits)
	b.Customers = append(b.Customers, FlatCustomer{ID: id, Start: n, End: n})
}

// AddTrait gives the customer last added (AddCustomer) the trait named
// b.Names[name]. A customer must not be given the same name twice.
func (b *FlatBatch) AddTrait(name int, v Value) {
	b.addTrait(name).Value = v
}

// AddString, AddNumber, AddBool, AddTime and AddList are AddTrait with a
// value of each type, built in place (cheaper than building a Value and
// copying it in).
func (b *FlatBatch) AddString(name int, s string) {
	b.addTrait(name).Value = Value{Type: TypeString, Str: s}
}

func (b *FlatBatch) AddNumber(name int, f float64) {
	b.addTrait(name).Value = Value{Type: TypeNumber, Num: f}
}

func (b *FlatBatch) AddBool(name int, v bool) {
	b.addTrait(name).Value = Value{Type: TypeBool, Bool: v}
}

func (b *FlatBatch) AddTime(name int, t time.Time) {
	b.addTrait(name).Value = Value{Type: TypeTime, Time: t}
}

func (b *FlatBatch) AddList(name int, l ...string) {
	b.addTrait(name).Value = Value{Type: TypeStringList, List: l}
}

// addTrait appends a trait named name to the customer last added and
// returns it, its Value to be set: a slot reused from an earlier batch
// holds that batch's value.
func (b *FlatBatch) addTrait(name int) *FlatTrait {
	n := len(b.Traits)
	if n < cap(b.Traits) {
		b.Traits = b.Traits[:n+1]
	} else {
		b.Traits = append(b.Traits, FlatTrait{})
	}
	b.Customers[len(b.Customers)-1].End = n + 1
	t := &b.Traits[n]
	t.Name = name
	return t
}

// flatEncoder writes the flat batches of one Pull stream from a FlatSource
// in the wire format of cohort.plugin.v1.Batch. With a host that reads the
// compact form (indexed), a trait's index on the wire is its index in the
// source's FlatBatch.Names, and each name goes to the host once, in the
// first batch that has it; otherwise traits go as maps.
type flatEncoder struct {
	indexed bool
	// columns: the host reads Batch.columns (with indexed set too), and
	// customers go in columns.
	columns bool
	cols    columnEncoder
	// sent are the names the host has, in order (indexed form only).
	sent []string
}

// append appends the wire encoding of b to buf. On error, the stream must
// end.
func (e *flatEncoder) append(buf []byte, b *FlatBatch) ([]byte, error) {
	if err := e.checkNames(b.Names); err != nil {
		return nil, err
	}
	if err := checkFlat(b); err != nil {
		return nil, err
	}
	if e.columns {
		buf = e.cols.appendColumns(buf, b)
	} else {
		var err error
		if buf, err = e.appendRows(buf, b); err != nil {
			return nil, err
		}
	}
	if e.indexed && len(b.Names) > len(e.sent) {
		// After the customers, on the wire; the host reads them first.
		buf = appendTraitNames(buf, b.Names[len(e.sent):])
		e.sent = append(e.sent, b.Names[len(e.sent):]...)
	}
	return appendBatchRest(buf, b.Deletes, b.Events, b.Consents, b.Cursor, b.CaughtUp, b.Problems)
}

// appendRows appends b's customers a Customer message each, traits in the
// compact form or as maps; checkFlat has checked b.
func (e *flatEncoder) appendRows(buf []byte, b *FlatBatch) ([]byte, error) {
	var err error
	tagMap := byte(fCustomerTraits)<<3 | byte(protowire.BytesType)
	for i := range b.Customers {
		c := &b.Customers[i]
		buf = protowire.AppendTag(buf, fBatchCustomers, protowire.BytesType)
		start := len(buf)
		buf = appendString(append(buf, 0), fCustomerID, c.ID)
		for j := c.Start; j < c.End; j++ {
			t := &b.Traits[j]
			if e.indexed {
				buf = appendIndexedTrait(buf, uint32(t.Name), &t.Value)
			} else if buf, err = appendMapEntry(buf, tagMap, b.Names[t.Name], &t.Value); err != nil {
				return nil, Errorf(Internal, "", "batch: customer %q: %v", c.ID, err)
			}
		}
		buf = fixLen(buf, start)
	}
	return buf, nil
}

// checkFlat checks b's trait ranges, name indexes and value types before
// either form is written.
func checkFlat(b *FlatBatch) error {
	for i := range b.Customers {
		c := &b.Customers[i]
		if c.Start < 0 || c.Start > c.End || c.End > len(b.Traits) {
			return Errorf(Internal, "", "batch: customer %q: trait range [%d:%d] outside the batch's %d traits",
				c.ID, c.Start, c.End, len(b.Traits))
		}
		for j := c.Start; j < c.End; j++ {
			t := &b.Traits[j]
			if t.Name < 0 || t.Name >= len(b.Names) {
				return Errorf(Internal, "", "batch: customer %q: trait name index %d outside Names (%d names)",
					c.ID, t.Name, len(b.Names))
			}
			if t.Value.Type < TypeUnknown || t.Value.Type > TypeStringList {
				return Errorf(Internal, "", "batch: customer %q: %q: unknown value type %d",
					c.ID, b.Names[t.Name], int(t.Value.Type))
			}
		}
	}
	return nil
}

// checkNames checks that names extends the names already sent: the index
// of a name means the same name in every batch of a stream.
func (e *flatEncoder) checkNames(names []string) error {
	if len(names) > maxFlatNames {
		return Errorf(Internal, "", "batch: more than %d distinct trait names in one stream", maxFlatNames)
	}
	if !e.indexed {
		return nil
	}
	if len(names) < len(e.sent) {
		return Errorf(Internal, "", "batch: FlatBatch.Names shrank from %d to %d names: a stream's table of names only grows",
			len(e.sent), len(names))
	}
	for i, s := range e.sent {
		if names[i] != s {
			return Errorf(Internal, "", "batch: FlatBatch.Names[%d] changed from %q to %q: a stream's table of names only grows",
				i, s, names[i])
		}
	}
	return nil
}
