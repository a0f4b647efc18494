package sdk

import (
	"context"
	"errors"
	"fmt"
)

// This file is the flat form of a pulled batch. The host reads every
// stream in a form that allocates no map per customer: trait names are
// interned once per stream, a batch's trait values sit in one slice, and a
// customer is a range of that slice. Building one map per customer was the
// largest cost of streaming from a plugin process (BenchmarkCustomerMaps),
// so a source plugin may build its batches in the same form (FlatSource,
// and the builder methods in flat_encode.go) instead of Batches with maps.

// FlatBatch is a Batch in the host's flat form. Customer i's traits are
// Traits[Customers[i].Start:Customers[i].End] (see CustomerTraits); each
// trait names its trait by an index into Names.
//
// A FlatBatch handed to a send function, and every slice in it, is valid
// only until send returns: the next batch of the stream reuses them. The
// strings in it (ids, names, values) may be kept.
type FlatBatch struct {
	// Names is the stream's table of trait names: an index means the same
	// name in every batch of one Pull, and the table only grows.
	Names     []string
	Customers []FlatCustomer
	Traits    []FlatTrait
	Deletes   []string
	Events    []Event
	Consents  []ConsentChange
	Cursor    string
	CaughtUp  bool
	Problems  []Problem
}

// FlatCustomer is one upsert of a FlatBatch: the customer's id and the range
// of FlatBatch.Traits holding its traits. A name occurs at most once in a
// customer's range (as in a map, the last value sent wins); a null Value
// removes the trait, as in Customer.
type FlatCustomer struct {
	ID         string
	Start, End int
}

// FlatTrait is one trait value of a customer; Name indexes FlatBatch.Names.
type FlatTrait struct {
	Name  int
	Value Value
}

// CustomerTraits returns customer i's traits.
func (b *FlatBatch) CustomerTraits(i int) []FlatTrait {
	c := &b.Customers[i]
	return b.Traits[c.Start:c.End]
}

// Batch returns b in map form: its Customers and their maps are new; the
// strings and the Deletes, Events, Consents and Problems slices are b's.
// (Batches decoded from a plugin process have those slices to themselves,
// so their map form outlives send; an in-process source's may not.)
func (b *FlatBatch) Batch() *Batch {
	out := &Batch{
		Deletes:  b.Deletes,
		Events:   b.Events,
		Consents: b.Consents,
		Cursor:   b.Cursor,
		CaughtUp: b.CaughtUp,
		Problems: b.Problems,
	}
	if len(b.Customers) > 0 {
		out.Customers = make([]Customer, len(b.Customers))
		for i := range b.Customers {
			out.Customers[i].ID = b.Customers[i].ID
			ts := b.CustomerTraits(i)
			if len(ts) == 0 {
				continue
			}
			m := make(map[string]Value, len(ts))
			for _, t := range ts {
				m[b.Names[t.Name]] = t.Value
			}
			out.Customers[i].Traits = m
		}
	}
	return out
}

// FlatSource is implemented by a Source that can stream batches in flat
// form without building maps. The host's view of a source plugin
// (dispensed from VersionedPlugins) does, and so may a plugin's own Source:
// Serve then serves its Pull streams from PullFlat, writing each flat batch
// to the wire as it is, and never calls its Pull. Use PullFlat to pull from
// any Source.
//
// A plugin's PullFlat follows Pull's contract, and in each batch it sends:
// Names is the stream's table, which only grows (an index means the same
// name in every batch: keep one FlatBatch for the stream and Reset it
// between batches); a customer's traits name each trait at most once; the
// batch may be reused once send returns. sdktest's conformance suite
// checks these.
type FlatSource interface {
	// PullFlat is Pull with batches in flat form.
	PullFlat(ctx context.Context, cursor string, send func(*FlatBatch) error) error
}

// PullFlat pulls from src from cursor on, calling send with each batch in
// flat form. A src implementing FlatSource streams flat batches straight
// from the wire; any other Source (one running in this process) is pulled
// with Pull and its batches are flattened as they come.
func PullFlat(ctx context.Context, src Source, cursor string, send func(*FlatBatch) error) error {
	if fs, ok := src.(FlatSource); ok {
		return fs.PullFlat(ctx, cursor, send)
	}
	var f flattener
	return src.Pull(ctx, cursor, func(b *Batch) error {
		if b == nil {
			return Errorf(Internal, "", "source pull: send called with a nil batch")
		}
		fb, err := f.flatten(b)
		if err != nil {
			return err
		}
		return send(fb)
	})
}

// maxFlatNames bounds a stream's table of trait names. Sources declare a
// schema of tens of traits; a stream sending more distinct names than this
// is broken, and is ended with an error rather than growing without bound.
const maxFlatNames = 1 << 16

// flatNames is a stream's table of trait names, with the bookkeeping that
// keeps a name unique within one customer.
type flatNames struct {
	index map[string]int
	names []string
	// seen[n] == seq when name n occurred in the current customer, at
	// position at[n] of the batch's traits.
	seen []uint32
	at   []int
	seq  uint32
	// frozen makes add fail with errFrozen: the table is shared with
	// decoders running in parallel, which must not change it.
	frozen bool
}

// errFrozen is add's error while the table is frozen.
var errFrozen = errors.New("trait name table frozen")

// lookup returns the index of name, adding it when new. b is the name's
// bytes; the string is only allocated for a new name.
func (t *flatNames) lookup(b []byte) (int, error) {
	if n, ok := t.index[string(b)]; ok {
		return n, nil
	}
	return t.add(string(b))
}

func (t *flatNames) lookupString(s string) (int, error) {
	if n, ok := t.index[s]; ok {
		return n, nil
	}
	return t.add(s)
}

func (t *flatNames) add(s string) (int, error) {
	if t.frozen {
		return 0, errFrozen
	}
	if len(t.names) >= maxFlatNames {
		return 0, fmt.Errorf("more than %d distinct trait names in one stream", maxFlatNames)
	}
	if t.index == nil {
		t.index = make(map[string]int, 32)
	}
	n := len(t.names)
	t.index[s] = n
	t.names = append(t.names, s)
	t.seen = append(t.seen, 0)
	t.at = append(t.at, 0)
	return n, nil
}

// nextCustomer starts a customer: no name has occurred in it yet.
func (t *flatNames) nextCustomer() {
	t.seq++
	if t.seq == 0 { // wrapped: forget every stamp
		clear(t.seen)
		t.seq = 1
	}
}

// slot returns the position in b.Traits of name n's value for the current
// customer: a new trait appended for it, or the trait the customer already
// has by that name. The caller sets the whole Value: a new trait's may
// hold a stale one (clearing it first would cost a second write of every
// value, with write barriers).
func (t *flatNames) slot(b *FlatBatch, n int) int {
	if t.seen[n] == t.seq {
		return t.at[n]
	}
	i := len(b.Traits)
	t.seen[n] = t.seq
	t.at[n] = i
	if i < cap(b.Traits) {
		b.Traits = b.Traits[:i+1]
		b.Traits[i].Name = n
	} else {
		b.Traits = append(b.Traits, FlatTrait{Name: n})
	}
	return i
}

// flattener turns the map-form batches of one in-process stream into flat
// batches, reusing one FlatBatch.
type flattener struct {
	names flatNames
	batch FlatBatch
}

func (f *flattener) flatten(b *Batch) (*FlatBatch, error) {
	out := &f.batch
	n := 0
	for i := range b.Customers {
		n += len(b.Customers[i].Traits)
	}
	*out = FlatBatch{
		Customers: out.Customers[:0],
		Traits:    out.Traits[:0],
		Deletes:   b.Deletes,
		Events:    b.Events,
		Consents:  b.Consents,
		Cursor:    b.Cursor,
		CaughtUp:  b.CaughtUp,
		Problems:  b.Problems,
	}
	out.Traits = growCap(out.Traits, n)
	for i := range b.Customers {
		c := &b.Customers[i]
		start := len(out.Traits)
		for name, v := range c.Traits {
			// A map holds each name once: no duplicates to resolve.
			k, err := f.names.lookupString(name)
			if err != nil {
				return nil, Errorf(Internal, "", "source pull: customer %q: %v", c.ID, err)
			}
			out.Traits = append(out.Traits, FlatTrait{Name: k, Value: v})
		}
		out.Customers = append(out.Customers, FlatCustomer{ID: c.ID, Start: start, End: len(out.Traits)})
	}
	out.Names = f.names.names
	return out, nil
}

// growCap returns s with room for at least n elements.
func growCap[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, 0, n)
	}
	return s
}
