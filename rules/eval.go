package rules

import (
	"errors"
	"fmt"
	"math/bits"
	"reflect"
	"sort"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Env is what one evaluation reads besides the table.
type Env struct {
	// Now is the injected clock: windows and days_since count UTC days up
	// to and including Now's.
	Now time.Time
	// Members is the current membership of segments by name, read by
	// in_segment. Set.EvalAll fills it itself, in dependency order.
	Members map[string]Bitmap
}

// binding is a program bound to a Table: the columns it reads and the root
// filter closure. It is immutable and safe for concurrent evaluations.
type binding struct {
	cs     *compiledSchema
	t      Table
	gen    uint64
	n      int
	live   Bitmap
	nums   map[string]NumberColumn
	strs   map[string]StringColumn
	bools  map[string]BoolColumn
	times  map[string]TimeColumn
	lists  map[string]ListColumn
	events map[string]*EventColumn
	rfm    RFMColumns
	hasRFM bool
	// segNames lists the in_segment names; segIndex maps them to indexes.
	segNames []string
	segIndex map[string]int
	root     filterFn
}

func (b *binding) event(name string) *EventColumn { return b.events[name] }

func (b *binding) presence(name string) Bitmap {
	switch b.cs.traits[name] {
	case sdk.TypeNumber:
		return b.nums[name].Present
	case sdk.TypeBool:
		return b.bools[name].Present
	case sdk.TypeTime:
		return b.times[name].Present
	case sdk.TypeStringList:
		return b.lists[name].Present
	}
	return nil
}

// bind reads the columns prog needs from t and builds its closures.
func bind(cs *compiledSchema, prog *program, t Table) (*binding, error) {
	n := t.Len()
	if n < 0 || n > 1<<32-1 {
		return nil, fmt.Errorf("table has %d rows", n)
	}
	b := &binding{
		cs: cs, t: t, gen: t.Generation(), n: n, live: t.Live(),
		nums: map[string]NumberColumn{}, strs: map[string]StringColumn{}, bools: map[string]BoolColumn{},
		times: map[string]TimeColumn{}, lists: map[string]ListColumn{}, events: map[string]*EventColumn{},
		segIndex: map[string]int{},
	}
	words := (n + 63) / 64
	if len(b.live) < words {
		return nil, fmt.Errorf("table: live bitmap covers %d rows, want %d", len(b.live)*64, n)
	}
	short := func(kind, name string) error {
		return fmt.Errorf("table: %s column %q does not cover its %d rows", kind, name, n)
	}
	for _, name := range prog.traits {
		typ := cs.traits[name]
		var ok bool
		switch typ {
		case sdk.TypeNumber:
			var c NumberColumn
			if c, ok = t.Number(name); ok {
				if len(c.Values) < n || len(c.Present) < words {
					return nil, short("number", name)
				}
				b.nums[name] = c
			}
		case sdk.TypeString:
			var c StringColumn
			if c, ok = t.String(name); ok {
				if len(c.Codes) < n {
					return nil, short("string", name)
				}
				b.strs[name] = c
			}
		case sdk.TypeBool:
			var c BoolColumn
			if c, ok = t.Bool(name); ok {
				if len(c.Values) < words || len(c.Present) < words {
					return nil, short("bool", name)
				}
				b.bools[name] = c
			}
		case sdk.TypeTime:
			var c TimeColumn
			if c, ok = t.Time(name); ok {
				if len(c.Days) < n || len(c.Present) < words {
					return nil, short("time", name)
				}
				b.times[name] = c
			}
		case sdk.TypeStringList:
			var c ListColumn
			if c, ok = t.List(name); ok {
				if len(c.Start) < n || len(c.N) < n || len(c.Present) < words {
					return nil, short("list", name)
				}
				b.lists[name] = c
			}
		}
		if !ok {
			return nil, fmt.Errorf("table has no %s column %q", typ, name)
		}
	}
	for _, name := range prog.events {
		c, ok := t.Events(name)
		if !ok {
			continue // nobody had the event yet
		}
		if len(c.Start) < n || len(c.N) < n || len(c.First) < n || len(c.Last) < n ||
			len(c.Counts) != len(c.Days) || (c.Sums != nil && len(c.Sums) != len(c.Days)) {
			return nil, short("event", name)
		}
		b.events[name] = &c
	}
	if prog.rfm {
		if c, ok := t.RFM(); ok {
			if len(c.R) < n || len(c.F) < n || len(c.M) < n {
				return nil, short("rfm", "rfm")
			}
			b.rfm, b.hasRFM = c, true
		}
	}
	for i, name := range prog.deps {
		b.segNames = append(b.segNames, name)
		b.segIndex[name] = i
	}
	b.root = prog.plan.filter(b)
	return b, nil
}

// newCtx prepares one evaluation.
func (b *binding) newCtx(env Env) (*evalCtx, error) {
	if env.Now.IsZero() {
		return nil, errors.New("no evaluation time (Env.Now) given")
	}
	c := &evalCtx{today: Day(env.Now), b: b}
	for _, name := range b.segNames {
		m, ok := env.Members[name]
		if !ok {
			return nil, fmt.Errorf("in_segment(%q): the membership of segment %q was not given", name, name)
		}
		c.segs = append(c.segs, m)
	}
	return c, nil
}

// evalLive evaluates f over every live row, setting members in out.
func (b *binding) evalLive(c *evalCtx, f filterFn, out Bitmap) {
	b.evalSpan(c, f, 0, b.n, out)
}

// evalSpan evaluates f over the live rows in [lo, hi), lo a multiple of
// 64, setting members in out.
func (b *binding) evalSpan(c *evalCtx, f filterFn, lo, hi int, out Bitmap) {
	sel := make([]uint32, batchSize)
	hi = min(hi, b.n)
	to := (hi + 63) / 64
	const step = batchSize / 64
	for w0 := lo / 64; w0 < to; w0 += step {
		k := 0
		for w := w0; w < min(w0+step, to); w++ {
			x := b.live[w]
			if w == to-1 && hi%64 != 0 {
				x &= 1<<(hi%64) - 1
			}
			if x == ^uint64(0) { // all 64 rows live: the common case
				base := uint32(w * 64)
				s := sel[k : k+64]
				for j := range s {
					s[j] = base + uint32(j)
				}
				k += 64
				continue
			}
			for x != 0 {
				sel[k] = uint32(w*64 + bits.TrailingZeros64(x))
				k++
				x &= x - 1
			}
		}
		if k == 0 {
			continue
		}
		for _, r := range f(c, sel[:k]) {
			out[r>>6] |= 1 << (r & 63)
		}
	}
}

// evalRows evaluates f for rows (any order, duplicates allowed), writing
// out[i] for rows[i]; rows out of range or tombstoned are false.
func (b *binding) evalRows(c *evalCtx, f filterFn, rows []uint32, out []bool) error {
	if len(out) < len(rows) {
		return fmt.Errorf("out has %d elements for %d rows", len(out), len(rows))
	}
	idx := make([]int, 0, len(rows))
	for i, r := range rows {
		out[i] = false
		if int(r) < b.n && b.live.Has(r) {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(x, y int) bool { return rows[idx[x]] < rows[idx[y]] })
	sel := make([]uint32, batchSize)
	for start := 0; start < len(idx); {
		k, end := 0, start
		for end < len(idx) && k < batchSize {
			r := rows[idx[end]]
			if k == 0 || sel[k-1] != r {
				sel[k] = r
				k++
			}
			end++
		}
		res := f(c, sel[:k])
		j := 0
		for _, i := range idx[start:end] {
			r := rows[i]
			for j < len(res) && res[j] < r {
				j++
			}
			out[i] = j < len(res) && res[j] == r
		}
		start = end
	}
	return nil
}

// bound returns the segment's binding to t, rebuilding it when t's
// generation changed (columns swapped, dictionaries grown, rows added).
func (s *Segment) bound(t Table) (*binding, error) {
	if s.prog == nil {
		return nil, fmt.Errorf("segment %q is not compiled", s.Name)
	}
	gen := t.Generation()
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.cache; b != nil && b.gen == gen && sameTable(b.t, t) {
		return b, nil
	}
	b, err := bind(s.cs, s.prog, t)
	if err != nil {
		return nil, fmt.Errorf("segment %q: %w", s.Name, err)
	}
	s.cache = b
	return b, nil
}

func sameTable(a, b Table) bool {
	if reflect.TypeOf(a) != reflect.TypeOf(b) || !reflect.TypeOf(a).Comparable() {
		return false
	}
	return a == b
}

// EvalAll evaluates the segment over every live row of t and returns its
// members. env.Members must hold the segments it names with in_segment.
func (s *Segment) EvalAll(t Table, env Env) (Bitmap, error) {
	b, err := s.bound(t)
	if err != nil {
		return nil, err
	}
	c, err := b.newCtx(env)
	if err != nil {
		return nil, fmt.Errorf("segment %q: %w", s.Name, err)
	}
	out := NewBitmap(b.n)
	b.evalLive(c, b.root, out)
	return out, nil
}

// EvalRange evaluates the segment over the live rows in [lo, hi), setting
// the bits of members in out (which must cover hi rows) and clearing the
// others in the range. lo must be a multiple of 64. A pass over a table
// that writers share can go range by range, taking the table's read lock
// per range, so writers wait for one range rather than a whole pass.
func (s *Segment) EvalRange(t Table, env Env, lo, hi int, out Bitmap) error {
	if lo%64 != 0 || lo < 0 || hi < lo {
		return fmt.Errorf("segment %q: invalid range [%d, %d): lo must be a multiple of 64", s.Name, lo, hi)
	}
	b, err := s.bound(t)
	if err != nil {
		return err
	}
	hi = min(hi, b.n)
	if len(out) < (hi+63)/64 {
		return fmt.Errorf("segment %q: out covers %d rows, want %d", s.Name, len(out)*64, hi)
	}
	c, err := b.newCtx(env)
	if err != nil {
		return fmt.Errorf("segment %q: %w", s.Name, err)
	}
	for r := lo; r < hi; r++ {
		if r%64 == 0 && r+64 <= hi {
			out[r/64] = 0
			r += 63
			continue
		}
		out.Clear(uint32(r))
	}
	if hi == b.n && hi%64 != 0 && hi/64 < len(out) {
		out[hi/64] &= 1<<(hi%64) - 1 // no stale bits past the last row
	}
	b.evalSpan(c, b.root, lo, hi, out)
	return nil
}

// Eval evaluates the segment for some rows: out[i] reports whether rows[i]
// is a member. Tombstoned and out-of-range rows are not.
func (s *Segment) Eval(t Table, env Env, rows []uint32, out []bool) error {
	b, err := s.bound(t)
	if err != nil {
		return err
	}
	c, err := b.newCtx(env)
	if err != nil {
		return fmt.Errorf("segment %q: %w", s.Name, err)
	}
	return b.evalRows(c, b.root, rows, out)
}

// EvalVM evaluates the segment for some rows with expr's VM instead of the
// closures (the reference the differential tests compare against). It
// returns the first evaluation error.
func (s *Segment) EvalVM(t Table, env Env, rows []uint32, out []bool) error {
	b, err := s.bound(t)
	if err != nil {
		return err
	}
	c, err := b.newCtx(env)
	if err != nil {
		return fmt.Errorf("segment %q: %w", s.Name, err)
	}
	run := c.runner()
	for i, r := range rows {
		out[i] = false
		if int(r) >= b.n || !b.live.Has(r) {
			continue
		}
		v, err := run.run(s.prog.vmAll, r)
		if err != nil {
			return fmt.Errorf("segment %q: row %d: %w", s.Name, r, err)
		}
		out[i], _ = v.(bool)
	}
	return nil
}

// EvalAll evaluates every segment over t in dependency order, so
// in_segment reads the membership computed in this same pass.
func (set *Set) EvalAll(t Table, now time.Time) (map[string]Bitmap, error) {
	members := map[string]Bitmap{}
	for _, s := range set.segments {
		m, err := s.EvalAll(t, Env{Now: now, Members: members})
		if err != nil {
			return nil, err
		}
		members[s.Name] = m
	}
	return members, nil
}
