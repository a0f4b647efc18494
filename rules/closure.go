package rules

import (
	"math"
	"sync"
	"unsafe"
)

// The closure compiler
//
// A rule is planned once at load (plan.go) into the node types below, then
// bound to a Table: each node becomes a Go closure that captures the typed
// columns it reads. Boolean nodes are filters over selection vectors: a
// filter gets up to batchSize sorted row numbers and returns, in place, the
// ones for which the node is true. && runs its children one after the
// other on the survivors, || runs each child on the rows not yet matched, !
// keeps the rows its child dropped. Number nodes fill a value vector and a
// presence vector for a selection. Comparisons of a column (or a function
// call with constant arguments) with a constant become one tight loop over
// the selection; string predicates become a table indexed by dictionary code.

// batchSize is the length of a selection vector.
const batchSize = 1024

type (
	filterFn func(c *evalCtx, sel []uint32) []uint32
	numFn    func(c *evalCtx, sel []uint32, v []float64, ok []bool)
	dayFn    func(c *evalCtx, sel []uint32, d []int64, ok []bool)
)

// evalCtx is the state of one evaluation: the injected clock, in_segment
// memberships and scratch buffers. It is used by one goroutine.
type evalCtx struct {
	today int64
	segs  []Bitmap
	b     *binding
	vm    *vmRunner
	sels  [][]uint32
	f64s  [][]float64
	i64s  [][]int64
	oks   [][]bool
	// vmErrors counts fallback evaluations that failed (their value is missing).
	vmErrors int
}

func pop[T any](pool *[][]T, n int) []T {
	if k := len(*pool); k > 0 {
		s := (*pool)[k-1]
		*pool = (*pool)[:k-1]
		return s[:n]
	}
	return make([]T, batchSize)[:n]
}

func push[T any](pool *[][]T, s []T) { *pool = append(*pool, s[:batchSize]) }

func (c *evalCtx) getSel() []uint32  { return pop(&c.sels, batchSize) }
func (c *evalCtx) putSel(s []uint32) { push(&c.sels, s) }

func (c *evalCtx) getNum(n int) ([]float64, []bool) { return pop(&c.f64s, n), pop(&c.oks, n) }
func (c *evalCtx) putNum(v []float64, ok []bool) {
	push(&c.f64s, v)
	push(&c.oks, ok)
}

func (c *evalCtx) getDays(n int) ([]int64, []bool) { return pop(&c.i64s, n), pop(&c.oks, n) }
func (c *evalCtx) putDays(d []int64, ok []bool) {
	push(&c.i64s, d)
	push(&c.oks, ok)
}

func (c *evalCtx) runner() *vmRunner {
	if c.vm == nil {
		c.vm = newVMRunner(c.b, c)
	}
	return c.vm
}

// copySel copies sel into a scratch buffer.
func (c *evalCtx) copySel(sel []uint32) []uint32 {
	t := c.getSel()
	return t[:copy(t, sel)]
}

// diffInPlace removes from a the rows of m, a sorted subsequence of a.
func diffInPlace(a, m []uint32) []uint32 {
	if len(m) == 0 {
		return a
	}
	k, j := 0, 0
	for _, r := range a {
		if j < len(m) && m[j] == r {
			j++
			continue
		}
		a[k] = r
		k++
	}
	return a[:k]
}

// mergeInto writes the union of sorted disjoint x and y into dst.
func mergeInto(dst, x, y []uint32) []uint32 {
	i, j, k := 0, 0, 0
	for i < len(x) && j < len(y) {
		if x[i] < y[j] {
			dst[k] = x[i]
			i++
		} else {
			dst[k] = y[j]
			j++
		}
		k++
	}
	k += copy(dst[k:], x[i:])
	k += copy(dst[k:], y[j:])
	return dst[:k]
}

func has(b Bitmap, r uint32) bool { return b[r>>6]&(1<<(r&63)) != 0 }

// ---- boolean plans ----

type bplan interface {
	filter(b *binding) filterFn
	cost() int
}

type pConst struct{ v bool }

func (p *pConst) cost() int { return 0 }
func (p *pConst) filter(*binding) filterFn {
	if p.v {
		return func(_ *evalCtx, sel []uint32) []uint32 { return sel }
	}
	return func(_ *evalCtx, sel []uint32) []uint32 { return sel[:0] }
}

type pAnd struct{ kids []bplan }

func (p *pAnd) cost() int {
	c := 0
	for _, k := range p.kids {
		c = max(c, k.cost())
	}
	return c
}

func (p *pAnd) filter(b *binding) filterFn {
	fs := make([]filterFn, len(p.kids))
	for i, k := range p.kids {
		fs[i] = k.filter(b)
	}
	if len(fs) == 2 {
		f0, f1 := fs[0], fs[1]
		return func(c *evalCtx, sel []uint32) []uint32 {
			sel = f0(c, sel)
			if len(sel) == 0 {
				return sel
			}
			return f1(c, sel)
		}
	}
	return func(c *evalCtx, sel []uint32) []uint32 {
		for _, f := range fs {
			if len(sel) == 0 {
				break
			}
			sel = f(c, sel)
		}
		return sel
	}
}

type pOr struct{ kids []bplan }

func (p *pOr) cost() int {
	c := 0
	for _, k := range p.kids {
		c = max(c, k.cost())
	}
	return c
}

func (p *pOr) filter(b *binding) filterFn {
	fs := make([]filterFn, len(p.kids))
	for i, k := range p.kids {
		fs[i] = k.filter(b)
	}
	return func(c *evalCtx, sel []uint32) []uint32 {
		if len(sel) == 0 {
			return sel
		}
		rest := c.copySel(sel)
		acc := c.getSel()[:0]
		spare := c.getSel()
		tmp := c.getSel()
		for i, f := range fs {
			m := f(c, tmp[:copy(tmp, rest)])
			if len(m) == 0 {
				continue
			}
			merged := mergeInto(spare, acc, m)
			spare, acc = acc[:batchSize], merged
			if i < len(fs)-1 {
				rest = diffInPlace(rest, m)
				if len(rest) == 0 {
					break
				}
			}
		}
		n := copy(sel, acc)
		c.putSel(rest)
		c.putSel(acc)
		c.putSel(spare)
		c.putSel(tmp)
		return sel[:n]
	}
}

type pNot struct{ kid bplan }

func (p *pNot) cost() int { return p.kid.cost() }
func (p *pNot) filter(b *binding) filterFn {
	f := p.kid.filter(b)
	return func(c *evalCtx, sel []uint32) []uint32 {
		t := c.copySel(sel)
		m := f(c, t)
		sel = diffInPlace(sel, m)
		c.putSel(t)
		return sel
	}
}

type pTernary struct{ c, a, b bplan }

func (p *pTernary) cost() int { return max(p.c.cost(), p.a.cost(), p.b.cost()) }
func (p *pTernary) filter(b *binding) filterFn {
	fc, fa, fb := p.c.filter(b), p.a.filter(b), p.b.filter(b)
	return func(c *evalCtx, sel []uint32) []uint32 {
		yes := fc(c, c.copySel(sel))
		no := diffInPlace(c.copySel(sel), yes)
		ra := fa(c, yes)
		rb := fb(c, no)
		out := mergeInto(sel, ra, rb)
		c.putSel(yes)
		c.putSel(no)
		return out
	}
}

// pBoolTrait keeps rows whose bool trait is present and equal to want.
type pBoolTrait struct {
	name string
	want bool
}

func (p *pBoolTrait) cost() int { return 1 }
func (p *pBoolTrait) filter(b *binding) filterFn {
	col := b.bools[p.name]
	vals, pres := col.Values, col.Present
	want := p.want
	return func(_ *evalCtx, sel []uint32) []uint32 {
		k := 0
		for _, r := range sel {
			if has(pres, r) && has(vals, r) == want {
				sel[k] = r
				k++
			}
		}
		return sel[:k]
	}
}

// pPresent keeps rows where a bitmap (trait presence) has the row.
type pHas struct {
	name string
	rfm  bool
}

func (p *pHas) cost() int { return 1 }
func (p *pHas) filter(b *binding) filterFn {
	if p.rfm {
		if !b.hasRFM {
			return (&pConst{false}).filter(b)
		}
		r := b.rfm.R
		return func(_ *evalCtx, sel []uint32) []uint32 {
			k := 0
			for _, row := range sel {
				if r[row] != 0 {
					sel[k] = row
					k++
				}
			}
			return sel[:k]
		}
	}
	if col, ok := b.strs[p.name]; ok {
		codes := col.Codes
		return func(_ *evalCtx, sel []uint32) []uint32 {
			k := 0
			for _, r := range sel {
				if codes[r] != 0 {
					sel[k] = r
					k++
				}
			}
			return sel[:k]
		}
	}
	pres := b.presence(p.name)
	return func(_ *evalCtx, sel []uint32) []uint32 {
		k := 0
		for _, r := range sel {
			if has(pres, r) {
				sel[k] = r
				k++
			}
		}
		return sel[:k]
	}
}

type pEver struct{ event string }

func (p *pEver) cost() int { return 1 }
func (p *pEver) filter(b *binding) filterFn {
	e := b.events[p.event]
	if e == nil {
		return (&pConst{false}).filter(b)
	}
	first := e.First
	return func(_ *evalCtx, sel []uint32) []uint32 {
		k := 0
		for _, r := range sel {
			if first[r] != 0 {
				sel[k] = r
				k++
			}
		}
		return sel[:k]
	}
}

type pInSegment struct{ name string }

func (p *pInSegment) cost() int { return 1 }
func (p *pInSegment) filter(b *binding) filterFn {
	i := b.segIndex[p.name]
	return func(c *evalCtx, sel []uint32) []uint32 {
		m := c.segs[i]
		k := 0
		for _, r := range sel {
			if m.Has(r) {
				sel[k] = r
				k++
			}
		}
		return sel[:k]
	}
}

// pNumRange keeps rows where a number leaf is present and (lo <= x <= hi)
// != neg.
type pNumRange struct {
	leaf   leafPlan
	lo, hi float64
	neg    bool
}

func (p *pNumRange) cost() int { return p.leaf.cost() }
func (p *pNumRange) filter(b *binding) filterFn {
	return p.leaf.rangeFilter(b, p.lo, p.hi, p.neg)
}

// pNumCmp compares two number vectors.
type pNumCmp struct {
	op   string
	l, r nplan
}

func (p *pNumCmp) cost() int { return max(p.l.cost(), p.r.cost()) + 1 }
func (p *pNumCmp) filter(b *binding) filterFn {
	lf, rf := p.l.num(b), p.r.num(b)
	cmp := numCompare(p.op)
	return func(c *evalCtx, sel []uint32) []uint32 {
		n := len(sel)
		lv, lok := c.getNum(n)
		rv, rok := c.getNum(n)
		lf(c, sel, lv, lok)
		rf(c, sel, rv, rok)
		k := cmp(sel, lv, lok, rv, rok)
		c.putNum(lv, lok)
		c.putNum(rv, rok)
		return sel[:k]
	}
}

func numCompare(op string) func(sel []uint32, lv []float64, lok []bool, rv []float64, rok []bool) int {
	return compareLoop[float64](op)
}

// compareLoop returns a loop keeping the rows where both sides are present
// and l op r; it returns how many it kept (at the front of sel).
func compareLoop[T int64 | float64](op string) func(sel []uint32, lv []T, lok []bool, rv []T, rok []bool) int {
	loop := func(keep func(a, b T) bool) func(sel []uint32, lv []T, lok []bool, rv []T, rok []bool) int {
		return func(sel []uint32, lv []T, lok []bool, rv []T, rok []bool) int {
			k := 0
			for i, r := range sel {
				if lok[i] && rok[i] && keep(lv[i], rv[i]) {
					sel[k] = r
					k++
				}
			}
			return k
		}
	}
	switch op {
	case "==":
		return loop(func(a, b T) bool { return a == b })
	case "!=":
		return loop(func(a, b T) bool { return a != b })
	case "<":
		return loop(func(a, b T) bool { return a < b })
	case "<=":
		return loop(func(a, b T) bool { return a <= b })
	case ">":
		return loop(func(a, b T) bool { return a > b })
	case ">=":
		return loop(func(a, b T) bool { return a >= b })
	}
	panic("rules: unknown comparison " + op)
}

// pNumIn keeps rows whose number is present and equal to one of set.
type pNumIn struct {
	x   nplan
	set []float64
}

func (p *pNumIn) cost() int { return p.x.cost() + 1 }
func (p *pNumIn) filter(b *binding) filterFn {
	xf := p.x.num(b)
	set := p.set
	return func(c *evalCtx, sel []uint32) []uint32 {
		v, ok := c.getNum(len(sel))
		xf(c, sel, v, ok)
		k := 0
		for i, r := range sel {
			if !ok[i] {
				continue
			}
			for _, s := range set {
				if v[i] == s {
					sel[k] = r
					k++
					break
				}
			}
		}
		c.putNum(v, ok)
		return sel[:k]
	}
}

// codeTable caches a string predicate evaluated over a dictionary, growing
// with it: table[code] is pred(dict[code]).
type codeTable struct {
	pred  func(string) bool
	mu    sync.Mutex
	dict  []string // the dictionary the table was built from (kept alive)
	table []bool
}

func (t *codeTable) get(dict []string) []bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(dict) == 0 {
		return nil
	}
	if len(t.dict) == 0 || unsafe.SliceData(t.dict) != unsafe.SliceData(dict) || len(dict) < len(t.table) {
		t.table = nil
	}
	if len(t.table) == 0 {
		t.table = append(t.table, false) // code 0: missing
	}
	for i := len(t.table); i < len(dict); i++ {
		t.table = append(t.table, t.pred(dict[i]))
	}
	t.dict = dict
	return t.table[:len(dict):len(dict)]
}

// pStrTable keeps rows whose string trait satisfies a predicate.
type pStrTable struct {
	name  string
	table *codeTable
}

func (p *pStrTable) cost() int { return 1 }
func (p *pStrTable) filter(b *binding) filterFn {
	col := b.strs[p.name]
	codes := col.Codes
	tab := p.table.get(col.Dict)
	return func(_ *evalCtx, sel []uint32) []uint32 {
		k := 0
		for _, r := range sel {
			if c := codes[r]; int(c) < len(tab) && tab[c] {
				sel[k] = r
				k++
			}
		}
		return sel[:k]
	}
}

// pStrTables is a conjunction of string-table tests on different columns.
type pStrTables struct{ tests []*pStrTable }

func (p *pStrTables) cost() int { return 1 }
func (p *pStrTables) filter(b *binding) filterFn {
	codes := make([][]uint32, len(p.tests))
	tabs := make([][]bool, len(p.tests))
	for i, t := range p.tests {
		col := b.strs[t.name]
		codes[i], tabs[i] = col.Codes, t.table.get(col.Dict)
	}
	if len(p.tests) == 2 {
		c0, c1, t0, t1 := codes[0], codes[1], tabs[0], tabs[1]
		return func(_ *evalCtx, sel []uint32) []uint32 {
			k := 0
			for _, r := range sel {
				if x := c0[r]; int(x) < len(t0) && t0[x] {
					if y := c1[r]; int(y) < len(t1) && t1[y] {
						sel[k] = r
						k++
					}
				}
			}
			return sel[:k]
		}
	}
	return func(_ *evalCtx, sel []uint32) []uint32 {
		k := 0
	rows:
		for _, r := range sel {
			for i, cs := range codes {
				if c := cs[r]; int(c) >= len(tabs[i]) || !tabs[i][c] {
					continue rows
				}
			}
			sel[k] = r
			k++
		}
		return sel[:k]
	}
}

// pListTable keeps rows whose list trait has an item satisfying a predicate.
type pListTable struct {
	name  string
	table *codeTable
}

func (p *pListTable) cost() int { return 2 }
func (p *pListTable) filter(b *binding) filterFn {
	col := b.lists[p.name]
	start, cnt, codes, pres := col.Start, col.N, col.Codes, col.Present
	tab := p.table.get(col.Dict)
	return func(_ *evalCtx, sel []uint32) []uint32 {
		k := 0
		for _, r := range sel {
			if !has(pres, r) {
				continue
			}
			s := start[r]
			for _, c := range codes[s : s+uint32(cnt[r])] {
				if int(c) < len(tab) && tab[c] {
					sel[k] = r
					k++
					break
				}
			}
		}
		return sel[:k]
	}
}

// pDayRange keeps rows where a time is present and (lo <= day <= hi) != neg.
type pDayRange struct {
	t      tplan
	lo, hi int64
	neg    bool
}

func (p *pDayRange) cost() int { return p.t.cost() }
func (p *pDayRange) filter(b *binding) filterFn {
	lo, hi := p.lo, p.hi
	return p.t.dayRange(b, func(*evalCtx) (int64, int64) { return lo, hi }, p.neg)
}

// pDayCmp compares two time vectors (days).
type pDayCmp struct {
	op   string
	l, r tplan
}

func (p *pDayCmp) cost() int { return max(p.l.cost(), p.r.cost()) + 1 }
func (p *pDayCmp) filter(b *binding) filterFn {
	lf, rf := p.l.days(b), p.r.days(b)
	cmp := compareLoop[int64](p.op)
	return func(c *evalCtx, sel []uint32) []uint32 {
		n := len(sel)
		ld, lok := c.getDays(n)
		rd, rok := c.getDays(n)
		lf(c, sel, ld, lok)
		rf(c, sel, rd, rok)
		k := cmp(sel, ld, lok, rd, rok)
		c.putDays(ld, lok)
		c.putDays(rd, rok)
		return sel[:k]
	}
}

// pVM evaluates a subtree with expr's VM, row by row.
type pVM struct{ prog *vmProg }

func (p *pVM) cost() int { return 100 }
func (p *pVM) filter(*binding) filterFn {
	prog := p.prog
	return func(c *evalCtx, sel []uint32) []uint32 {
		run := c.runner()
		k := 0
		for _, r := range sel {
			out, err := run.run(prog, r)
			if err != nil {
				c.vmErrors++
				continue
			}
			if v, _ := out.(bool); v {
				sel[k] = r
				k++
			}
		}
		return sel[:k]
	}
}

// ---- number plans ----

type nplan interface {
	num(b *binding) numFn
	cost() int
}

// leafPlan is a number read straight from columns, which can filter a
// selection by a constant range without materialising values.
type leafPlan interface {
	nplan
	key() string
	rangeFilter(b *binding, lo, hi float64, neg bool) filterFn
}

type nConst struct{ v float64 }

func (p *nConst) cost() int { return 0 }
func (p *nConst) num(*binding) numFn {
	x := p.v
	return func(_ *evalCtx, sel []uint32, v []float64, ok []bool) {
		for i := range sel {
			v[i], ok[i] = x, true
		}
	}
}

type nCol struct{ name string }

func (p *nCol) cost() int   { return 1 }
func (p *nCol) key() string { return "col:" + p.name }
func (p *nCol) num(b *binding) numFn {
	col := b.nums[p.name]
	vals, pres := col.Values, col.Present
	return func(_ *evalCtx, sel []uint32, v []float64, ok []bool) {
		for i, r := range sel {
			v[i], ok[i] = vals[r], has(pres, r)
		}
	}
}

func (p *nCol) rangeFilter(b *binding, lo, hi float64, neg bool) filterFn {
	col := b.nums[p.name]
	vals, pres := col.Values, col.Present
	if neg {
		return func(_ *evalCtx, sel []uint32) []uint32 {
			k := 0
			for _, r := range sel {
				if has(pres, r) {
					if v := vals[r]; !(v >= lo && v <= hi) {
						sel[k] = r
						k++
					}
				}
			}
			return sel[:k]
		}
	}
	return func(_ *evalCtx, sel []uint32) []uint32 {
		k := 0
		for _, r := range sel {
			if has(pres, r) {
				if v := vals[r]; v >= lo && v <= hi {
					sel[k] = r
					k++
				}
			}
		}
		return sel[:k]
	}
}

// nEvents is events(name, window) (sum: false) or total(name, window).
type nEvents struct {
	event string
	days  int
	sum   bool
}

func (p *nEvents) cost() int { return 5 }
func (p *nEvents) key() string {
	if p.sum {
		return "total:" + p.event + ":" + itoa(p.days)
	}
	return "events:" + p.event + ":" + itoa(p.days)
}

func (p *nEvents) num(b *binding) numFn {
	e := b.events[p.event]
	days := int64(p.days)
	f := countWindow
	if p.sum {
		f = sumWindow
	}
	return func(c *evalCtx, sel []uint32, v []float64, ok []bool) {
		lo := c.today - days + 1
		for i, r := range sel {
			v[i], ok[i] = f(e, r, lo, c.today), true
		}
	}
}

func (p *nEvents) rangeFilter(b *binding, lo, hi float64, neg bool) filterFn {
	e := b.events[p.event]
	days := int64(p.days)
	if e == nil {
		// No customer has this event: every value is 0.
		in := 0 >= lo && 0 <= hi
		return (&pConst{in != neg}).filter(b)
	}
	if p.sum {
		if e.Sums == nil {
			in := 0 >= lo && 0 <= hi
			return (&pConst{in != neg}).filter(b)
		}
		return func(c *evalCtx, sel []uint32) []uint32 {
			wlo, whi := c.today-days+1, c.today
			k := 0
			for _, r := range sel {
				x := sumWindow(e, r, wlo, whi)
				if (x >= lo && x <= hi) != neg {
					sel[k] = r
					k++
				}
			}
			return sel[:k]
		}
	}
	start, cnt, dayv, counts := e.Start, e.N, e.Days, e.Counts
	return func(c *evalCtx, sel []uint32) []uint32 {
		wlo, whi := c.today-days+1, c.today
		k := 0
		for _, r := range sel {
			s := start[r]
			n := uint32(cnt[r])
			var x float64
			if n != 0 {
				ds := dayv[s : s+n]
				cs := counts[s : s+n]
				var sum uint64
				for i := len(ds) - 1; i >= 0; i-- {
					d := int64(ds[i])
					if d > whi {
						continue
					}
					if d < wlo {
						break
					}
					if y := cs[i]; y != OverflowCount {
						sum += uint64(y)
					} else {
						sum += uint64(e.Overflow[OverflowKey(r, ds[i])])
					}
				}
				x = float64(sum)
			}
			if (x >= lo && x <= hi) != neg {
				sel[k] = r
				k++
			}
		}
		return sel[:k]
	}
}

// nDaysSince is days_since(t).
type nDaysSince struct{ t tplan }

func (p *nDaysSince) cost() int   { return p.t.cost() }
func (p *nDaysSince) key() string { return "days_since:" + p.t.key() }
func (p *nDaysSince) num(b *binding) numFn {
	tf := p.t.days(b)
	return func(c *evalCtx, sel []uint32, v []float64, ok []bool) {
		d := pop(&c.i64s, len(sel))
		tf(c, sel, d, ok)
		for i := range sel {
			v[i] = float64(c.today - d[i])
		}
		push(&c.i64s, d)
	}
}

// rangeFilter turns lo <= today - day <= hi into a range of days. The
// value is a whole number, so the bounds are rounded inwards first and the
// rest is integer arithmetic (floats would round today - 30.000000000000004
// to today - 30).
func (p *nDaysSince) rangeFilter(b *binding, lo, hi float64, neg bool) filterFn {
	xlo, xhi := ceilInt(lo), floorInt(hi)
	return p.t.dayRange(b, func(c *evalCtx) (int64, int64) {
		return c.today - xhi, c.today - xlo
	}, neg)
}

// dayLimit bounds day arithmetic far from int64 overflow.
const dayLimit = 1 << 60

func ceilInt(x float64) int64 {
	switch {
	case math.IsNaN(x):
		return dayLimit // an empty range
	case x <= -dayLimit:
		return -dayLimit
	case x >= dayLimit:
		return dayLimit
	}
	return int64(math.Ceil(x))
}

func floorInt(x float64) int64 {
	switch {
	case math.IsNaN(x):
		return -dayLimit
	case x <= -dayLimit:
		return -dayLimit
	case x >= dayLimit:
		return dayLimit
	}
	return int64(math.Floor(x))
}

// nRFM is rfm.r, rfm.f or rfm.m.
type nRFM struct{ which byte }

func (p *nRFM) cost() int   { return 1 }
func (p *nRFM) key() string { return "rfm:" + string(p.which) }
func (p *nRFM) col(b *binding) []uint8 {
	if !b.hasRFM {
		return nil
	}
	switch p.which {
	case 'r':
		return b.rfm.R
	case 'f':
		return b.rfm.F
	}
	return b.rfm.M
}

func (p *nRFM) num(b *binding) numFn {
	q := p.col(b)
	return func(_ *evalCtx, sel []uint32, v []float64, ok []bool) {
		for i, r := range sel {
			if q == nil || q[r] == 0 {
				v[i], ok[i] = 0, false
				continue
			}
			v[i], ok[i] = float64(q[r]), true
		}
	}
}

func (p *nRFM) rangeFilter(b *binding, lo, hi float64, neg bool) filterFn {
	q := p.col(b)
	if q == nil {
		return (&pConst{false}).filter(b)
	}
	// A quintile is 1..5: precompute which pass.
	var pass [6]bool
	for i := 1; i <= 5; i++ {
		x := float64(i)
		pass[i] = (x >= lo && x <= hi) != neg
	}
	return func(_ *evalCtx, sel []uint32) []uint32 {
		k := 0
		for _, r := range sel {
			if x := q[r]; x <= 5 && pass[x] {
				sel[k] = r
				k++
			}
		}
		return sel[:k]
	}
}

// pRFM keeps rows whose quintiles pass a table for each of r, f and m.
type pRFM struct {
	pass [3][6]bool
}

func newPRFM() *pRFM {
	p := &pRFM{}
	for i := range p.pass {
		for q := 1; q <= 5; q++ {
			p.pass[i][q] = true
		}
	}
	return p
}

// and narrows one quintile's table by a range.
func (p *pRFM) and(which byte, lo, hi float64, neg bool) {
	i := map[byte]int{'r': 0, 'f': 1, 'm': 2}[which]
	for q := 1; q <= 5; q++ {
		x := float64(q)
		p.pass[i][q] = p.pass[i][q] && (x >= lo && x <= hi) != neg
	}
}

func (p *pRFM) cost() int { return 1 }
func (p *pRFM) filter(b *binding) filterFn {
	if !b.hasRFM {
		return (&pConst{false}).filter(b)
	}
	rq, fq, mq := b.rfm.R, b.rfm.F, b.rfm.M
	pr, pf, pm := p.pass[0], p.pass[1], p.pass[2]
	return func(_ *evalCtx, sel []uint32) []uint32 {
		k := 0
		for _, r := range sel {
			if x := rq[r]; x > 5 || !pr[x] {
				continue
			}
			if y := fq[r]; y > 5 || !pf[y] {
				continue
			}
			if z := mq[r]; z <= 5 && pm[z] {
				sel[k] = r
				k++
			}
		}
		return sel[:k]
	}
}

// nLen is len(list trait).
type nLen struct{ name string }

func (p *nLen) cost() int   { return 1 }
func (p *nLen) key() string { return "len:" + p.name }
func (p *nLen) num(b *binding) numFn {
	col := b.lists[p.name]
	cnt, pres := col.N, col.Present
	return func(_ *evalCtx, sel []uint32, v []float64, ok []bool) {
		for i, r := range sel {
			v[i], ok[i] = float64(cnt[r]), has(pres, r)
		}
	}
}

func (p *nLen) rangeFilter(b *binding, lo, hi float64, neg bool) filterFn {
	col := b.lists[p.name]
	cnt, pres := col.N, col.Present
	return func(_ *evalCtx, sel []uint32) []uint32 {
		k := 0
		for _, r := range sel {
			if has(pres, r) {
				if x := float64(cnt[r]); (x >= lo && x <= hi) != neg {
					sel[k] = r
					k++
				}
			}
		}
		return sel[:k]
	}
}

// nArith is l op r for + - * / ** (and ^).
type nArith struct {
	op   string
	l, r nplan
}

func (p *nArith) cost() int { return max(p.l.cost(), p.r.cost()) + 1 }
func (p *nArith) num(b *binding) numFn {
	lf, rf := p.l.num(b), p.r.num(b)
	var op func(a, b float64) float64
	switch p.op {
	case "+":
		op = func(a, b float64) float64 { return a + b }
	case "-":
		op = func(a, b float64) float64 { return a - b }
	case "*":
		op = func(a, b float64) float64 { return a * b }
	case "/":
		op = func(a, b float64) float64 { return a / b }
	case "**", "^":
		op = math.Pow
	default:
		panic("rules: unknown arithmetic " + p.op)
	}
	return func(c *evalCtx, sel []uint32, v []float64, ok []bool) {
		lf(c, sel, v, ok)
		rv, rok := c.getNum(len(sel))
		rf(c, sel, rv, rok)
		for i := range sel {
			v[i] = op(v[i], rv[i])
			ok[i] = ok[i] && rok[i]
		}
		c.putNum(rv, rok)
	}
}

// nNeg is -x.
type nNeg struct{ x nplan }

func (p *nNeg) cost() int { return p.x.cost() }
func (p *nNeg) num(b *binding) numFn {
	xf := p.x.num(b)
	return func(c *evalCtx, sel []uint32, v []float64, ok []bool) {
		xf(c, sel, v, ok)
		for i := range sel {
			v[i] = -v[i]
		}
	}
}

// nCoalesce is l ?? r.
type nCoalesce struct{ l, r nplan }

func (p *nCoalesce) cost() int { return max(p.l.cost(), p.r.cost()) }
func (p *nCoalesce) num(b *binding) numFn {
	lf, rf := p.l.num(b), p.r.num(b)
	return func(c *evalCtx, sel []uint32, v []float64, ok []bool) {
		lf(c, sel, v, ok)
		rv, rok := c.getNum(len(sel))
		rf(c, sel, rv, rok)
		for i := range sel {
			if !ok[i] {
				v[i], ok[i] = rv[i], rok[i]
			}
		}
		c.putNum(rv, rok)
	}
}

// nTernary is c ? a : b over numbers.
type nTernary struct {
	c    bplan
	a, b nplan
}

func (p *nTernary) cost() int { return max(p.c.cost(), p.a.cost(), p.b.cost()) }
func (p *nTernary) num(b *binding) numFn {
	cf, af, bf := p.c.filter(b), p.a.num(b), p.b.num(b)
	return func(c *evalCtx, sel []uint32, v []float64, ok []bool) {
		yes := cf(c, c.copySel(sel))
		af(c, sel, v, ok)
		bv, bok := c.getNum(len(sel))
		bf(c, sel, bv, bok)
		j := 0
		for i, r := range sel {
			if j < len(yes) && yes[j] == r {
				j++
				continue
			}
			v[i], ok[i] = bv[i], bok[i]
		}
		c.putNum(bv, bok)
		c.putSel(yes)
	}
}

// nVM evaluates a number subtree with expr's VM.
type nVM struct{ prog *vmProg }

func (p *nVM) cost() int { return 100 }
func (p *nVM) num(*binding) numFn {
	prog := p.prog
	return func(c *evalCtx, sel []uint32, v []float64, ok []bool) {
		run := c.runner()
		for i, r := range sel {
			out, err := run.run(prog, r)
			if err != nil {
				c.vmErrors++
			}
			v[i], ok[i] = toFloat(out)
		}
	}
}

func toFloat(x any) (float64, bool) {
	switch v := x.(type) {
	case float64:
		return v, true
	case int:
		return float64(v), true
	case float32:
		return float64(v), true
	case int64:
		return float64(v), true
	case int32:
		return float64(v), true
	case uint8:
		return float64(v), true
	case uint:
		return float64(v), true
	case uint64:
		return float64(v), true
	case uint32:
		return float64(v), true
	case uint16:
		return float64(v), true
	case int16:
		return float64(v), true
	case int8:
		return float64(v), true
	}
	return 0, false
}

// ---- time plans (values are UTC days) ----

type tplan interface {
	days(b *binding) dayFn
	key() string
	cost() int
	// dayRange keeps rows where the time is present and
	// (lo <= day <= hi) != neg, with lo and hi computed per batch.
	dayRange(b *binding, bounds func(*evalCtx) (int64, int64), neg bool) filterFn
}

type tCol struct{ name string }

func (p *tCol) cost() int   { return 1 }
func (p *tCol) key() string { return "time:" + p.name }
func (p *tCol) days(b *binding) dayFn {
	col := b.times[p.name]
	days, pres := col.Days, col.Present
	return func(_ *evalCtx, sel []uint32, d []int64, ok []bool) {
		for i, r := range sel {
			d[i], ok[i] = int64(days[r]), has(pres, r)
		}
	}
}

func (p *tCol) dayRange(b *binding, bounds func(*evalCtx) (int64, int64), neg bool) filterFn {
	col := b.times[p.name]
	days, pres := col.Days, col.Present
	return func(c *evalCtx, sel []uint32) []uint32 {
		lo, hi := bounds(c)
		k := 0
		for _, r := range sel {
			if has(pres, r) {
				if d := int64(days[r]); (d >= lo && d <= hi) != neg {
					sel[k] = r
					k++
				}
			}
		}
		return sel[:k]
	}
}

// tEvent is first_time(name) or last_time(name).
type tEvent struct {
	event string
	last  bool
}

func (p *tEvent) cost() int { return 1 }
func (p *tEvent) key() string {
	if p.last {
		return "last_time:" + p.event
	}
	return "first_time:" + p.event
}

func (p *tEvent) col(e *EventColumn) []uint16 {
	if p.last {
		return e.Last
	}
	return e.First
}

func (p *tEvent) days(b *binding) dayFn {
	e := b.events[p.event]
	if e == nil {
		return func(_ *evalCtx, sel []uint32, d []int64, ok []bool) {
			for i := range sel {
				d[i], ok[i] = 0, false
			}
		}
	}
	first, col := e.First, p.col(e)
	return func(_ *evalCtx, sel []uint32, d []int64, ok []bool) {
		for i, r := range sel {
			d[i], ok[i] = int64(col[r]), first[r] != 0
		}
	}
}

func (p *tEvent) dayRange(b *binding, bounds func(*evalCtx) (int64, int64), neg bool) filterFn {
	e := b.events[p.event]
	if e == nil {
		return (&pConst{false}).filter(b)
	}
	first, col := e.First, p.col(e)
	return func(c *evalCtx, sel []uint32) []uint32 {
		lo, hi := bounds(c)
		k := 0
		for _, r := range sel {
			if first[r] != 0 {
				if d := int64(col[r]); (d >= lo && d <= hi) != neg {
					sel[k] = r
					k++
				}
			}
		}
		return sel[:k]
	}
}

// tConst is a constant time, as its day (days_since of a constant).
type tConst struct{ day int64 }

func (p *tConst) cost() int   { return 0 }
func (p *tConst) key() string { return "day:" + itoa(int(p.day)) }
func (p *tConst) days(*binding) dayFn {
	day := p.day
	return func(_ *evalCtx, sel []uint32, d []int64, ok []bool) {
		for i := range sel {
			d[i], ok[i] = day, true
		}
	}
}

func (p *tConst) dayRange(b *binding, bounds func(*evalCtx) (int64, int64), neg bool) filterFn {
	day := p.day
	return func(c *evalCtx, sel []uint32) []uint32 {
		lo, hi := bounds(c)
		if (day >= lo && day <= hi) != neg {
			return sel
		}
		return sel[:0]
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	neg := i < 0
	if neg {
		i = -i
	}
	var b [24]byte
	n := len(b)
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	if neg {
		n--
		b[n] = '-'
	}
	return string(b[n:])
}
