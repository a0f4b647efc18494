// Package profile is the in-memory profile store: one row per customer,
// traits in typed columns with presence bitmaps, and daily event rollups,
// laid out for rules (package rules) to read without interface calls per
// row.
//
// # Layout
//
// Rows are dense uint32s handed out in arrival order; an id -> row map and a
// row -> id slice translate. Numbers are []float64 with a presence bitmap,
// bools two bitmaps, times days (int32) with a presence bitmap, strings
// dictionary codes (uint32, 0 = missing) per column, lists offsets into one
// shared code array per column. Event rollups are, per event name, one
// entry per customer and UTC day: day (uint16, days since 1970), count
// (uint16, larger counts kept in a side map) and, only for events that
// carry values, the day's sum (float64, parallel array). Each row owns a
// range of those arrays (start, length, capacity); a range that outgrows
// its capacity moves to the end of the arrays with twice the room, and the
// arrays are compacted when abandoned ranges pass half their size.
//
// # Concurrency
//
// One sync.RWMutex guards everything. Writers (Upsert, Delete, AddEvents,
// Apply, ComputeRFM, Compact) take the write lock for one call, so a batch
// is applied at once; readers evaluate inside View, under the read lock.
// Every write bumps the generation, which makes rules rebind (the slices
// they hold may have moved). A segment pass can go range by range
// (rules.Segment.EvalRange), taking View per range, so ingestion waits for
// one range, not a whole pass.
package profile

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
)

// Store is the in-memory profile store. It is safe for concurrent use.
type Store struct {
	mu     sync.RWMutex
	schema rules.Schema
	gen    uint64

	ids   []string
	index map[string]uint32
	live  rules.Bitmap
	n     int

	nums   map[string]*rules.NumberColumn
	strs   map[string]*strCol
	bools  map[string]*rules.BoolColumn
	times  map[string]*rules.TimeColumn
	lists  map[string]*listCol
	events map[string]*eventCol
	rfm    rules.RFMColumns
	hasRFM bool
}

type strCol struct {
	rules.StringColumn
	index map[string]uint32
}

type listCol struct {
	rules.ListColumn
	index   map[string]uint32
	garbage int
}

type eventCol struct {
	rules.EventColumn
	cap     []uint16
	garbage int
}

// New returns an empty store for the schema's traits.
func New(schema rules.Schema) *Store {
	s := &Store{
		schema: schema,
		index:  map[string]uint32{},
		nums:   map[string]*rules.NumberColumn{},
		strs:   map[string]*strCol{},
		bools:  map[string]*rules.BoolColumn{},
		times:  map[string]*rules.TimeColumn{},
		lists:  map[string]*listCol{},
		events: map[string]*eventCol{},
	}
	for name, t := range schema.Traits {
		s.addColumn(name, t)
	}
	for _, e := range schema.Events {
		s.eventColumn(e)
	}
	return s
}

func (s *Store) addColumn(name string, t sdk.TraitType) {
	switch t {
	case sdk.TypeNumber:
		s.nums[name] = &rules.NumberColumn{}
	case sdk.TypeString:
		s.strs[name] = &strCol{StringColumn: rules.StringColumn{Dict: []string{""}}, index: map[string]uint32{}}
	case sdk.TypeBool:
		s.bools[name] = &rules.BoolColumn{}
	case sdk.TypeTime:
		s.times[name] = &rules.TimeColumn{}
	case sdk.TypeStringList:
		s.lists[name] = &listCol{ListColumn: rules.ListColumn{Dict: []string{""}}, index: map[string]uint32{}}
	}
}

// Len is the number of rows, deleted ones included: rows are 0..Len()-1.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.n
}

// Customers is the number of customers (rows not deleted).
func (s *Store) Customers() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.live.Count()
}

// Row returns a customer's row.
func (s *Store) Row(id string) (uint32, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.index[id]
	return r, ok
}

// ID returns a row's customer id ("" for a deleted or unknown row).
func (s *Store) ID(row uint32) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if int(row) >= len(s.ids) {
		return ""
	}
	return s.ids[row]
}

// Generation changes with every write.
func (s *Store) Generation() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gen
}

// View runs fn with the store read-locked. The Table is valid only inside
// fn: do not keep it, or anything it returned, afterwards.
func (s *Store) View(fn func(t rules.Table) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return fn(view{s})
}

// view is the rules.Table of a read-locked store.
type view struct{ s *Store }

var _ rules.Table = view{}

func (v view) Len() int                      { return v.s.n }
func (v view) Generation() uint64            { return v.s.gen }
func (v view) Live() rules.Bitmap            { return v.s.live }
func (v view) RFM() (rules.RFMColumns, bool) { return v.s.rfm, v.s.hasRFM }

func (v view) Number(name string) (rules.NumberColumn, bool) {
	c, ok := v.s.nums[name]
	if !ok {
		return rules.NumberColumn{}, false
	}
	return *c, true
}

func (v view) String(name string) (rules.StringColumn, bool) {
	c, ok := v.s.strs[name]
	if !ok {
		return rules.StringColumn{}, false
	}
	return c.StringColumn, true
}

func (v view) Bool(name string) (rules.BoolColumn, bool) {
	c, ok := v.s.bools[name]
	if !ok {
		return rules.BoolColumn{}, false
	}
	return *c, true
}

func (v view) Time(name string) (rules.TimeColumn, bool) {
	c, ok := v.s.times[name]
	if !ok {
		return rules.TimeColumn{}, false
	}
	return *c, true
}

func (v view) List(name string) (rules.ListColumn, bool) {
	c, ok := v.s.lists[name]
	if !ok {
		return rules.ListColumn{}, false
	}
	return c.ListColumn, true
}

func (v view) Events(name string) (rules.EventColumn, bool) {
	c, ok := v.s.events[name]
	if !ok {
		return rules.EventColumn{}, false
	}
	return c.EventColumn, true
}

// rowFor returns id's row, adding a live row when id is new.
func (s *Store) rowFor(id string) (uint32, error) {
	if r, ok := s.index[id]; ok {
		return r, nil
	}
	if id == "" {
		return 0, errors.New("empty customer id")
	}
	if s.n >= math.MaxUint32 {
		return 0, errors.New("profile store is full")
	}
	r := uint32(s.n)
	s.n++
	s.ids = append(s.ids, id)
	s.index[id] = r
	words := (s.n + 63) / 64
	growBits := func(b rules.Bitmap) rules.Bitmap {
		for len(b) < words {
			b = append(b, 0)
		}
		return b
	}
	s.live = growBits(s.live)
	s.live.Set(r)
	for _, c := range s.nums {
		c.Values = append(c.Values, 0)
		c.Present = growBits(c.Present)
	}
	for _, c := range s.strs {
		c.Codes = append(c.Codes, 0)
	}
	for _, c := range s.bools {
		c.Values, c.Present = growBits(c.Values), growBits(c.Present)
	}
	for _, c := range s.times {
		c.Days = append(c.Days, 0)
		c.Present = growBits(c.Present)
	}
	for _, c := range s.lists {
		c.Start = append(c.Start, 0)
		c.N = append(c.N, 0)
		c.Present = growBits(c.Present)
	}
	for _, c := range s.events {
		c.grow()
	}
	if s.hasRFM {
		s.rfm.R = append(s.rfm.R, 0)
		s.rfm.F = append(s.rfm.F, 0)
		s.rfm.M = append(s.rfm.M, 0)
	}
	return r, nil
}

func (c *eventCol) grow() {
	c.Start = append(c.Start, 0)
	c.N = append(c.N, 0)
	c.First = append(c.First, 0)
	c.Last = append(c.Last, 0)
	c.cap = append(c.cap, 0)
}

// Upsert sets a customer's traits (sdk.Customer semantics): given traits
// replace their values, a null Value removes the trait, traits not given
// are kept. A new id adds a row. Unknown traits, wrong types and NaN are
// rejected before anything changes.
func (s *Store) Upsert(id string, traits map[string]sdk.Value) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.upsert(id, traits)
}

func (s *Store) upsert(id string, traits map[string]sdk.Value) error {
	if err := s.checkTraits(traits); err != nil {
		return fmt.Errorf("customer %q: %w", id, err)
	}
	row, err := s.rowFor(id)
	if err != nil {
		return err
	}
	s.gen++
	for name, v := range traits {
		s.set(row, name, v)
	}
	return nil
}

func (s *Store) checkTraits(traits map[string]sdk.Value) error {
	for name, v := range traits {
		t, ok := s.schema.Traits[name]
		if !ok {
			return fmt.Errorf("unknown trait %q", name)
		}
		if v.Null() {
			continue
		}
		if v.Type != t {
			return fmt.Errorf("trait %q is a %s, got a %s", name, t, v.Type)
		}
		switch t {
		case sdk.TypeNumber:
			if math.IsNaN(v.Num) {
				return fmt.Errorf("trait %q is NaN", name)
			}
		case sdk.TypeTime:
			if d := rules.Day(v.Time); d < math.MinInt32 || d > math.MaxInt32 {
				return fmt.Errorf("trait %q: time %s out of range", name, v.Time)
			}
		case sdk.TypeStringList:
			if len(v.List) > math.MaxUint16 {
				return fmt.Errorf("trait %q has %d items, at most %d are kept", name, len(v.List), math.MaxUint16)
			}
		}
	}
	return nil
}

// set writes one checked trait value.
func (s *Store) set(row uint32, name string, v sdk.Value) {
	switch s.schema.Traits[name] {
	case sdk.TypeNumber:
		c := s.nums[name]
		if v.Null() {
			c.Values[row] = 0
			c.Present.Clear(row)
			return
		}
		c.Values[row] = v.Num
		c.Present.Set(row)
	case sdk.TypeString:
		c := s.strs[name]
		if v.Null() {
			c.Codes[row] = 0
			return
		}
		c.Codes[row] = c.code(v.Str)
	case sdk.TypeBool:
		c := s.bools[name]
		if v.Null() {
			c.Present.Clear(row)
			c.Values.Clear(row)
			return
		}
		c.Present.Set(row)
		if v.Bool {
			c.Values.Set(row)
		} else {
			c.Values.Clear(row)
		}
	case sdk.TypeTime:
		c := s.times[name]
		if v.Null() {
			c.Days[row] = 0
			c.Present.Clear(row)
			return
		}
		c.Days[row] = int32(rules.Day(v.Time))
		c.Present.Set(row)
	case sdk.TypeStringList:
		c := s.lists[name]
		if v.Null() {
			c.setList(row, nil)
			c.Present.Clear(row)
			return
		}
		c.setList(row, v.List)
		c.Present.Set(row)
	}
}

func (c *strCol) code(v string) uint32 {
	if code, ok := c.index[v]; ok {
		return code
	}
	code := uint32(len(c.Dict))
	c.Dict = append(c.Dict, v)
	c.index[v] = code
	return code
}

func (c *listCol) code(v string) uint32 {
	if code, ok := c.index[v]; ok {
		return code
	}
	code := uint32(len(c.Dict))
	c.Dict = append(c.Dict, v)
	c.index[v] = code
	return code
}

// setList writes a row's items: in place when they fit in its old range,
// else at the end (the old range becomes garbage).
func (c *listCol) setList(row uint32, items []string) {
	old := int(c.N[row])
	if len(items) <= old {
		s := c.Start[row]
		for i, it := range items {
			c.Codes[int(s)+i] = c.code(it)
		}
		c.garbage += old - len(items)
	} else {
		c.garbage += old
		c.Start[row] = uint32(len(c.Codes))
		for _, it := range items {
			c.Codes = append(c.Codes, c.code(it))
		}
	}
	c.N[row] = uint16(len(items))
	if c.garbage > 1<<12 && c.garbage > len(c.Codes)/2 {
		c.compact()
	}
}

// compact rewrites the shared code array without garbage.
func (c *listCol) compact() {
	live := len(c.Codes) - c.garbage
	codes := make([]uint32, 0, live)
	for r := range c.Start {
		s, n := c.Start[r], uint32(c.N[r])
		c.Start[r] = uint32(len(codes))
		codes = append(codes, c.Codes[s:s+n]...)
	}
	c.Codes, c.garbage = codes, 0
}

// Delete tombstones a customer: the row is no longer evaluated, its data is
// dropped and its id forgotten (a later Upsert of the id adds a new row).
// It reports whether the id existed.
func (s *Store) Delete(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delete(id)
}

func (s *Store) delete(id string) bool {
	row, ok := s.index[id]
	if !ok {
		return false
	}
	s.gen++
	for name := range s.schema.Traits {
		s.set(row, name, sdk.Value{})
	}
	for _, c := range s.events {
		c.clearRow(row)
	}
	if s.hasRFM {
		s.rfm.R[row], s.rfm.F[row], s.rfm.M[row] = 0, 0, 0
	}
	s.live.Clear(row)
	s.ids[row] = ""
	delete(s.index, id)
	return true
}

// Batch is a set of changes applied under one lock.
type Batch struct {
	Customers []sdk.Customer
	Deletes   []string
	Rollups   []Rollup
}

// Apply applies a batch: upserts, then deletes, then rollups. A customer or
// rollup that is rejected is skipped and reported; the rest is applied.
func (s *Store) Apply(b Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, c := range b.Customers {
		if err := s.upsert(c.ID, c.Traits); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range b.Deletes {
		s.delete(id)
	}
	if err := s.addEvents(b.Rollups); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Rollup is a delta to a customer's events of one name on one UTC day
// (the fields of storage.Rollup, so one converts to the other).
type Rollup struct {
	CustomerID string
	Name       string
	// Day is days since 1970-01-01 (UTC).
	Day   int32
	Count int64
	Sum   float64
	First time.Time
	Last  time.Time
}

// AddEvents adds rollup deltas (counts and sums add up; a new customer id
// adds a row). Days must be 1..65535 (1970-01-02 to 2149) and counts at
// least 1; a rejected rollup is skipped and reported, the rest applied.
func (s *Store) AddEvents(rs []Rollup) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addEvents(rs)
}

func (s *Store) addEvents(rs []Rollup) error {
	if len(rs) == 0 {
		return nil
	}
	s.gen++
	var errs []error
	touched := map[*eventCol]bool{}
	for _, r := range rs {
		if r.Day < 1 || r.Day > math.MaxUint16 {
			errs = append(errs, fmt.Errorf("customer %q: event %q: day %d is outside 1970-01-02..2149", r.CustomerID, r.Name, r.Day))
			continue
		}
		if r.Count < 1 {
			errs = append(errs, fmt.Errorf("customer %q: event %q: count %d, want at least 1", r.CustomerID, r.Name, r.Count))
			continue
		}
		if math.IsNaN(r.Sum) || math.IsInf(r.Sum, 0) {
			errs = append(errs, fmt.Errorf("customer %q: event %q: the value sum must be finite", r.CustomerID, r.Name))
			continue
		}
		row, err := s.rowFor(r.CustomerID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c := s.eventColumn(r.Name)
		c.add(row, uint16(r.Day), r.Count, r.Sum)
		touched[c] = true
	}
	for c := range touched {
		if c.garbage > 1<<14 && c.garbage > len(c.Days)/2 {
			c.compact()
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d rollup(s) rejected: %w", len(errs), errors.Join(errs...))
	}
	return nil
}

func (s *Store) eventColumn(name string) *eventCol {
	if c, ok := s.events[name]; ok {
		return c
	}
	c := &eventCol{}
	c.Start = make([]uint32, s.n)
	c.N = make([]uint16, s.n)
	c.First = make([]uint16, s.n)
	c.Last = make([]uint16, s.n)
	c.cap = make([]uint16, s.n)
	s.events[name] = c
	return c
}

// add merges one day's delta into a row's range.
func (c *eventCol) add(row uint32, day uint16, count int64, sum float64) {
	if sum != 0 && c.Sums == nil {
		c.Sums = make([]float64, len(c.Days), cap(c.Days))
	}
	s, n := c.Start[row], uint32(c.N[row])
	days := c.Days[s : s+n]
	i := sort.Search(len(days), func(j int) bool { return days[j] >= day })
	if i < len(days) && days[i] == day {
		c.addCount(row, s+uint32(i), day, count)
		if c.Sums != nil {
			c.Sums[s+uint32(i)] += sum
		}
		return
	}
	if n == math.MaxUint16 {
		// A row keeps at most 65535 days (179 years) of one event: merge into the nearest.
		j := min(uint32(i), n-1)
		c.addCount(row, s+j, days[j], count)
		if c.Sums != nil {
			c.Sums[s+j] += sum
		}
		return
	}
	if n == uint32(c.cap[row]) {
		s = c.relocate(row, max(2, min(2*n, math.MaxUint16)))
	}
	// Shift the tail right by one and insert at i.
	at := s + uint32(i)
	copy(c.Days[at+1:s+n+1], c.Days[at:s+n])
	copy(c.Counts[at+1:s+n+1], c.Counts[at:s+n])
	if c.Sums != nil {
		copy(c.Sums[at+1:s+n+1], c.Sums[at:s+n])
		c.Sums[at] = sum
	}
	c.Days[at] = day
	c.Counts[at] = 0
	c.N[row]++
	c.addCount(row, at, day, count)
	if c.First[row] == 0 || day < c.First[row] {
		c.First[row] = day
	}
	if day > c.Last[row] {
		c.Last[row] = day
	}
}

func (c *eventCol) addCount(row, at uint32, day uint16, count int64) {
	old := uint64(c.Counts[at])
	if old == rules.OverflowCount {
		old = uint64(c.Overflow[rules.OverflowKey(row, day)])
	}
	total := old + uint64(count)
	if total < rules.OverflowCount {
		c.Counts[at] = uint16(total)
		return
	}
	if c.Overflow == nil {
		c.Overflow = map[uint64]uint32{}
	}
	c.Counts[at] = rules.OverflowCount
	c.Overflow[rules.OverflowKey(row, day)] = uint32(min(total, math.MaxUint32))
}

// relocate moves a row's range to the end of the arrays with room for
// newCap entries and returns its new start.
func (c *eventCol) relocate(row uint32, newCap uint32) uint32 {
	s, n := c.Start[row], uint32(c.N[row])
	ns := uint32(len(c.Days))
	c.Days = append(c.Days, c.Days[s:s+n]...)
	c.Days = append(c.Days, make([]uint16, newCap-n)...)
	c.Counts = append(c.Counts, c.Counts[s:s+n]...)
	c.Counts = append(c.Counts, make([]uint16, newCap-n)...)
	if c.Sums != nil {
		c.Sums = append(c.Sums, c.Sums[s:s+n]...)
		c.Sums = append(c.Sums, make([]float64, newCap-n)...)
	}
	c.garbage += int(c.cap[row])
	c.Start[row], c.cap[row] = ns, uint16(newCap)
	return ns
}

func (c *eventCol) clearRow(row uint32) {
	s, n := c.Start[row], uint32(c.N[row])
	for i := s; i < s+n; i++ {
		if c.Counts[i] == rules.OverflowCount {
			delete(c.Overflow, rules.OverflowKey(row, c.Days[i]))
		}
	}
	c.garbage += int(c.cap[row])
	c.N[row], c.cap[row], c.First[row], c.Last[row] = 0, 0, 0, 0
}

// compact rewrites the entry arrays with each range exactly as long as its
// entries.
func (c *eventCol) compact() {
	live := len(c.Days) - c.garbage
	days := make([]uint16, 0, live)
	counts := make([]uint16, 0, live)
	var sums []float64
	if c.Sums != nil {
		sums = make([]float64, 0, live)
	}
	for r := range c.Start {
		s, n := c.Start[r], uint32(c.N[r])
		c.Start[r] = uint32(len(days))
		c.cap[r] = uint16(n)
		days = append(days, c.Days[s:s+n]...)
		counts = append(counts, c.Counts[s:s+n]...)
		if sums != nil {
			sums = append(sums, c.Sums[s:s+n]...)
		}
	}
	c.Days, c.Counts, c.Sums, c.garbage = days, counts, sums, 0
}

// Compact drops abandoned list and rollup ranges and trims every column to
// its length: after a bulk load, memory is then what the data needs.
func (s *Store) Compact() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for _, c := range s.events {
		c.compact()
		c.Start, c.N, c.First, c.Last, c.cap = trim(c.Start), trim(c.N), trim(c.First), trim(c.Last), trim(c.cap)
	}
	for _, c := range s.lists {
		c.compact()
		c.Start, c.N, c.Present, c.Dict = trim(c.Start), trim(c.N), trim(c.Present), trim(c.Dict)
	}
	for _, c := range s.nums {
		c.Values, c.Present = trim(c.Values), trim(c.Present)
	}
	for _, c := range s.strs {
		c.Codes, c.Dict = trim(c.Codes), trim(c.Dict)
	}
	for _, c := range s.bools {
		c.Values, c.Present = trim(c.Values), trim(c.Present)
	}
	for _, c := range s.times {
		c.Days, c.Present = trim(c.Days), trim(c.Present)
	}
	s.ids, s.live = trim(s.ids), trim(s.live)
	if s.hasRFM {
		s.rfm.R, s.rfm.F, s.rfm.M = trim(s.rfm.R), trim(s.rfm.F), trim(s.rfm.M)
	}
}

// trim returns x with no spare capacity (a copy when it had some).
func trim[T any](x []T) []T {
	if cap(x) == len(x) {
		return x
	}
	return append(make([]T, 0, len(x)), x...)
}

// ComputeRFM recomputes the RFM quintiles from the schema's RFM event over
// all customers (rules.ComputeRFM). A full pass calls it first. The
// computation runs under the read lock; installing it takes the write lock.
func (s *Store) ComputeRFM() error {
	if s.schema.RFMEvent == "" {
		return errors.New("no RFM event configured (config rfm.event)")
	}
	s.mu.RLock()
	var ev *rules.EventColumn
	if c, ok := s.events[s.schema.RFMEvent]; ok {
		ev = &c.EventColumn
	}
	q := rules.ComputeRFM(ev, s.live, s.n)
	s.mu.RUnlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	// Rows added meanwhile have no quintiles yet; rows deleted keep none.
	for len(q.R) < s.n {
		q.R, q.F, q.M = append(q.R, 0), append(q.F, 0), append(q.M, 0)
	}
	for r := range q.R {
		if !s.live.Has(uint32(r)) {
			q.R[r], q.F[r], q.M[r] = 0, 0, 0
		}
	}
	s.rfm, s.hasRFM = q, true
	return nil
}
