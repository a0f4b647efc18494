package rules

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// MemTable is a Table built at once from a list of customers: for fixtures,
// tests and tools. The profile store (daemon/profile) is the Table of the
// running daemon.
type MemTable struct {
	n      int
	ids    []string
	live   Bitmap
	nums   map[string]NumberColumn
	strs   map[string]StringColumn
	bools  map[string]BoolColumn
	times  map[string]TimeColumn
	lists  map[string]ListColumn
	events map[string]EventColumn
	rfm    RFMColumns
	hasRFM bool
}

var _ Table = (*MemTable)(nil)

// MemCustomer is one customer of a MemTable.
type MemCustomer struct {
	ID     string
	Traits map[string]sdk.Value
	Events []EventRecord
	// RFM, when R is not 0, replaces the computed quintiles (fixtures set
	// them for the few customers they describe).
	RFM [3]uint8
	// Deleted rows are tombstoned: never evaluated.
	Deleted bool
}

// EventRecord is one event of a MemCustomer.
type EventRecord struct {
	Name  string
	Time  time.Time
	Value float64
}

// NewMemTable builds a table; traits are typed by schema and checked.
func NewMemTable(schema Schema, customers []MemCustomer) (*MemTable, error) {
	n := len(customers)
	words := (n + 63) / 64
	t := &MemTable{
		n: n, live: NewBitmap(n),
		nums: map[string]NumberColumn{}, strs: map[string]StringColumn{}, bools: map[string]BoolColumn{},
		times: map[string]TimeColumn{}, lists: map[string]ListColumn{}, events: map[string]EventColumn{},
	}
	strIndex := map[string]map[string]uint32{}
	for name, typ := range schema.Traits {
		switch typ {
		case sdk.TypeNumber:
			t.nums[name] = NumberColumn{Values: make([]float64, n), Present: make(Bitmap, words)}
		case sdk.TypeString:
			t.strs[name] = StringColumn{Codes: make([]uint32, n), Dict: []string{""}}
			strIndex[name] = map[string]uint32{}
		case sdk.TypeBool:
			t.bools[name] = BoolColumn{Values: make(Bitmap, words), Present: make(Bitmap, words)}
		case sdk.TypeTime:
			t.times[name] = TimeColumn{Days: make([]int32, n), Present: make(Bitmap, words)}
		case sdk.TypeStringList:
			t.lists[name] = ListColumn{Start: make([]uint32, n), N: make([]uint16, n), Dict: []string{""}, Present: make(Bitmap, words)}
			strIndex[name] = map[string]uint32{}
		}
	}
	code := func(col string, dict *[]string, s string) uint32 {
		idx := strIndex[col]
		c, ok := idx[s]
		if !ok {
			c = uint32(len(*dict))
			*dict = append(*dict, s)
			idx[s] = c
		}
		return c
	}
	type dayAgg struct {
		count uint64
		sum   float64
	}
	rollups := map[string][]map[uint16]*dayAgg{}
	valued := map[string]bool{}
	for i, cu := range customers {
		row := uint32(i)
		t.ids = append(t.ids, cu.ID)
		if !cu.Deleted {
			t.live.Set(row)
		}
		for name, v := range cu.Traits {
			typ, ok := schema.Traits[name]
			if !ok {
				return nil, fmt.Errorf("customer %q: unknown trait %q", cu.ID, name)
			}
			if v.Null() {
				continue
			}
			if v.Type != typ {
				return nil, fmt.Errorf("customer %q: trait %q is a %s, got a %s", cu.ID, name, typ, v.Type)
			}
			switch typ {
			case sdk.TypeNumber:
				if math.IsNaN(v.Num) {
					return nil, fmt.Errorf("customer %q: trait %q is NaN", cu.ID, name)
				}
				c := t.nums[name]
				c.Values[row] = v.Num
				c.Present.Set(row)
			case sdk.TypeString:
				c := t.strs[name]
				c.Codes[row] = code(name, &c.Dict, v.Str)
				t.strs[name] = c
			case sdk.TypeBool:
				c := t.bools[name]
				c.Present.Set(row)
				if v.Bool {
					c.Values.Set(row)
				}
			case sdk.TypeTime:
				d := Day(v.Time)
				if d < math.MinInt32 || d > math.MaxInt32 {
					return nil, fmt.Errorf("customer %q: trait %q: time out of range", cu.ID, name)
				}
				c := t.times[name]
				c.Days[row] = int32(d)
				c.Present.Set(row)
			case sdk.TypeStringList:
				c := t.lists[name]
				if len(v.List) > math.MaxUint16 {
					return nil, fmt.Errorf("customer %q: trait %q has more than %d items", cu.ID, name, math.MaxUint16)
				}
				c.Start[row] = uint32(len(c.Codes))
				c.N[row] = uint16(len(v.List))
				for _, s := range v.List {
					c.Codes = append(c.Codes, code(name, &c.Dict, s))
				}
				c.Present.Set(row)
				t.lists[name] = c
			}
		}
		for _, e := range cu.Events {
			d := Day(e.Time)
			if d < 1 || d > math.MaxUint16 {
				return nil, fmt.Errorf("customer %q: event %q at %s: event times must be from 1970-01-02 to 2149", cu.ID, e.Name, e.Time)
			}
			if math.IsNaN(e.Value) {
				return nil, fmt.Errorf("customer %q: event %q has a NaN value", cu.ID, e.Name)
			}
			per := rollups[e.Name]
			if per == nil {
				per = make([]map[uint16]*dayAgg, n)
				rollups[e.Name] = per
			}
			if per[i] == nil {
				per[i] = map[uint16]*dayAgg{}
			}
			a := per[i][uint16(d)]
			if a == nil {
				a = &dayAgg{}
				per[i][uint16(d)] = a
			}
			a.count++
			a.sum += e.Value
			if e.Value != 0 {
				valued[e.Name] = true
			}
		}
	}
	for name, per := range rollups {
		c := EventColumn{Start: make([]uint32, n), N: make([]uint16, n), First: make([]uint16, n), Last: make([]uint16, n)}
		for i, days := range per {
			c.Start[i] = uint32(len(c.Days))
			keys := make([]int, 0, len(days))
			for d := range days {
				keys = append(keys, int(d))
			}
			sort.Ints(keys)
			for _, d := range keys {
				a := days[uint16(d)]
				cnt := uint16(OverflowCount)
				if a.count < OverflowCount {
					cnt = uint16(a.count)
				} else {
					if c.Overflow == nil {
						c.Overflow = map[uint64]uint32{}
					}
					c.Overflow[OverflowKey(uint32(i), uint16(d))] = uint32(min(a.count, math.MaxUint32))
				}
				c.Days = append(c.Days, uint16(d))
				c.Counts = append(c.Counts, cnt)
				if valued[name] {
					c.Sums = append(c.Sums, a.sum)
				}
			}
			c.N[i] = uint16(len(keys))
			if len(keys) > 0 {
				c.First[i], c.Last[i] = uint16(keys[0]), uint16(keys[len(keys)-1])
			}
		}
		t.events[name] = c
	}
	if schema.RFMEvent != "" {
		var ev *EventColumn
		if c, ok := t.events[schema.RFMEvent]; ok {
			ev = &c
		}
		t.rfm = ComputeRFM(ev, t.live, n)
		t.hasRFM = true
	}
	for i, cu := range customers {
		if cu.RFM[0] != 0 && !cu.Deleted {
			if !t.hasRFM {
				t.rfm = RFMColumns{R: make([]uint8, n), F: make([]uint8, n), M: make([]uint8, n)}
				t.hasRFM = true
			}
			t.rfm.R[i], t.rfm.F[i], t.rfm.M[i] = cu.RFM[0], cu.RFM[1], cu.RFM[2]
		}
	}
	return t, nil
}

// ID returns a row's customer id.
func (t *MemTable) ID(row uint32) string { return t.ids[row] }

// Row returns a customer's row.
func (t *MemTable) Row(id string) (uint32, bool) {
	for i, x := range t.ids {
		if x == id {
			return uint32(i), true
		}
	}
	return 0, false
}

func (t *MemTable) Len() int           { return t.n }
func (t *MemTable) Generation() uint64 { return 1 }
func (t *MemTable) Live() Bitmap       { return t.live }

func (t *MemTable) Number(name string) (NumberColumn, bool) { c, ok := t.nums[name]; return c, ok }
func (t *MemTable) String(name string) (StringColumn, bool) { c, ok := t.strs[name]; return c, ok }
func (t *MemTable) Bool(name string) (BoolColumn, bool)     { c, ok := t.bools[name]; return c, ok }
func (t *MemTable) Time(name string) (TimeColumn, bool)     { c, ok := t.times[name]; return c, ok }
func (t *MemTable) List(name string) (ListColumn, bool)     { c, ok := t.lists[name]; return c, ok }
func (t *MemTable) Events(name string) (EventColumn, bool)  { c, ok := t.events[name]; return c, ok }
func (t *MemTable) RFM() (RFMColumns, bool)                 { return t.rfm, t.hasRFM }
