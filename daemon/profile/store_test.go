package profile

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
)

var testSchema = rules.Schema{
	Traits: map[string]sdk.TraitType{
		"age":          sdk.TypeNumber,
		"ltv":          sdk.TypeNumber,
		"country":      sdk.TypeString,
		"city":         sdk.TypeString,
		"vip":          sdk.TypeBool,
		"signed_up_at": sdk.TypeTime,
		"interests":    sdk.TypeStringList,
	},
	Events:   []string{"purchase", "page_view"},
	RFMEvent: "purchase",
}

var testNow = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

func day(t time.Time) int32 { return int32(rules.Day(t)) }

func TestUpsertRowsAndIDs(t *testing.T) {
	s := New(testSchema)
	require.NoError(t, s.Upsert("a", map[string]sdk.Value{"age": sdk.Number(30), "country": sdk.String("DE")}))
	require.NoError(t, s.Upsert("b", nil))
	require.NoError(t, s.Upsert("a", map[string]sdk.Value{"country": {}, "vip": sdk.Bool(true)}))
	require.Equal(t, 2, s.Len())
	r, ok := s.Row("a")
	require.True(t, ok)
	require.Equal(t, uint32(0), r)
	require.Equal(t, "b", s.ID(1))
	require.Equal(t, "", s.ID(7))
	require.NoError(t, s.View(func(t2 rules.Table) error {
		age, _ := t2.Number("age")
		require.True(t, age.Present.Has(0))
		require.Equal(t, 30.0, age.Values[0], "a trait not given is kept")
		country, _ := t2.String("country")
		require.Equal(t, uint32(0), country.Codes[0], "a null value removes the trait")
		vip, _ := t2.Bool("vip")
		require.True(t, vip.Present.Has(0) && vip.Values.Has(0))
		require.False(t, age.Present.Has(1))
		return nil
	}))

	for _, tc := range []struct {
		traits map[string]sdk.Value
		err    string
	}{
		{map[string]sdk.Value{"agee": sdk.Number(1)}, `unknown trait "agee"`},
		{map[string]sdk.Value{"age": sdk.String("x")}, `trait "age" is a number, got a string`},
		{map[string]sdk.Value{"age": sdk.Number(math.NaN())}, `trait "age" is NaN`},
		{map[string]sdk.Value{"interests": sdk.List(make([]string, 70000)...)}, `at most 65535`},
	} {
		gen := s.Generation()
		err := s.Upsert("c", tc.traits)
		require.ErrorContains(t, err, tc.err)
		require.Equal(t, gen, s.Generation(), "a rejected upsert changes nothing")
		_, ok := s.Row("c")
		require.False(t, ok)
	}
	require.Error(t, s.Upsert("", nil))
}

func TestDelete(t *testing.T) {
	s := New(testSchema)
	require.NoError(t, s.Upsert("a", map[string]sdk.Value{"age": sdk.Number(30), "interests": sdk.List("x")}))
	require.NoError(t, s.AddEvents([]Rollup{{CustomerID: "a", Name: "purchase", Day: 20000, Count: 70000, Sum: 5}}))
	require.True(t, s.Delete("a"))
	require.False(t, s.Delete("a"))
	require.Equal(t, 0, s.Customers())
	_, ok := s.Row("a")
	require.False(t, ok)
	require.NoError(t, s.View(func(t2 rules.Table) error {
		require.False(t, t2.Live().Has(0))
		age, _ := t2.Number("age")
		require.False(t, age.Present.Has(0))
		ev, _ := t2.Events("purchase")
		require.Equal(t, uint16(0), ev.N[0])
		require.Equal(t, uint16(0), ev.First[0])
		require.Empty(t, ev.Overflow, "overflow counts of a deleted row are dropped")
		return nil
	}))
	require.NoError(t, s.Upsert("a", nil))
	r, _ := s.Row("a")
	require.Equal(t, uint32(1), r, "a deleted id comes back as a new row")
}

func TestAddEventsRollups(t *testing.T) {
	s := New(testSchema)
	d := int32(20000)
	require.NoError(t, s.AddEvents([]Rollup{
		{CustomerID: "a", Name: "page_view", Day: d + 5, Count: 1},
		{CustomerID: "a", Name: "page_view", Day: d + 1, Count: 2},
		{CustomerID: "a", Name: "page_view", Day: d + 3, Count: 1},
		{CustomerID: "a", Name: "page_view", Day: d + 3, Count: 4},
		{CustomerID: "a", Name: "page_view", Day: d + 9, Count: 65534},
		{CustomerID: "a", Name: "page_view", Day: d + 9, Count: 10},
		{CustomerID: "a", Name: "signup", Day: d, Count: 1}, // not in the schema: kept anyway
	}))
	err := s.AddEvents([]Rollup{
		{CustomerID: "a", Name: "page_view", Day: 0, Count: 1},
		{CustomerID: "a", Name: "page_view", Day: 70000, Count: 1},
		{CustomerID: "a", Name: "page_view", Day: d, Count: 0},
		{CustomerID: "a", Name: "purchase", Day: d, Count: 1, Sum: math.Inf(1)},
		{CustomerID: "b", Name: "purchase", Day: d, Count: 1, Sum: 2.5},
	})
	require.ErrorContains(t, err, "4 rollup(s) rejected")
	require.NoError(t, s.View(func(t2 rules.Table) error {
		ev, ok := t2.Events("page_view")
		require.True(t, ok)
		st, n := ev.Start[0], uint32(ev.N[0])
		require.Equal(t, []uint16{uint16(d + 1), uint16(d + 3), uint16(d + 5), uint16(d + 9)}, ev.Days[st:st+n], "sorted by day")
		require.Equal(t, []uint16{2, 5, 1, rules.OverflowCount}, ev.Counts[st:st+n])
		require.Equal(t, uint32(65544), ev.Overflow[rules.OverflowKey(0, uint16(d+9))])
		require.Nil(t, ev.Sums, "page_view never carried a value")
		require.Equal(t, uint16(d+1), ev.First[0])
		require.Equal(t, uint16(d+9), ev.Last[0])
		p, _ := t2.Events("purchase")
		require.Equal(t, 2.5, p.Sums[p.Start[1]])
		_, ok = t2.Events("signup")
		require.True(t, ok)
		return nil
	}))
}

// model is a naive store: what the Store must be equivalent to.
type model struct {
	rows    []*modelRow
	byID    map[string]int
	rollups map[string]map[string]map[int32]*agg // id -> event -> day
}

type modelRow struct {
	id      string
	traits  map[string]sdk.Value
	deleted bool
}

type agg struct {
	count int64
	sum   float64
}

func newModel() *model {
	return &model{byID: map[string]int{}, rollups: map[string]map[string]map[int32]*agg{}}
}

func (m *model) row(id string) *modelRow {
	if i, ok := m.byID[id]; ok {
		return m.rows[i]
	}
	r := &modelRow{id: id, traits: map[string]sdk.Value{}}
	m.byID[id] = len(m.rows)
	m.rows = append(m.rows, r)
	return r
}

func (m *model) upsert(id string, traits map[string]sdk.Value) {
	r := m.row(id)
	for k, v := range traits {
		if v.Null() {
			delete(r.traits, k)
		} else {
			r.traits[k] = v
		}
	}
}

func (m *model) delete(id string) {
	i, ok := m.byID[id]
	if !ok {
		return
	}
	m.rows[i].deleted = true
	delete(m.byID, id)
	delete(m.rollups, id)
}

func (m *model) add(r Rollup) {
	m.row(r.CustomerID)
	ev := m.rollups[r.CustomerID]
	if ev == nil {
		ev = map[string]map[int32]*agg{}
		m.rollups[r.CustomerID] = ev
	}
	if ev[r.Name] == nil {
		ev[r.Name] = map[int32]*agg{}
	}
	a := ev[r.Name][r.Day]
	if a == nil {
		a = &agg{}
		ev[r.Name][r.Day] = a
	}
	a.count += r.Count
	a.sum += r.Sum
}

// table builds the model as a rules.MemTable, rows in the same order.
func (m *model) table(t *testing.T) *rules.MemTable {
	var cs []rules.MemCustomer
	for _, r := range m.rows {
		c := rules.MemCustomer{ID: r.id, Traits: r.traits, Deleted: r.deleted}
		if !r.deleted {
			for name, days := range m.rollups[r.id] {
				for d, a := range days {
					for i := int64(0); i < a.count; i++ {
						v := 0.0
						if i == 0 {
							v = a.sum
						}
						c.Events = append(c.Events, rules.EventRecord{Name: name, Time: rules.DayTime(int64(d)).Add(time.Hour), Value: v})
					}
				}
			}
		}
		cs = append(cs, c)
	}
	tab, err := rules.NewMemTable(testSchema, cs)
	require.NoError(t, err)
	return tab
}

var storeRules = []string{
	`age > 30`, `!(age > 30)`, `ltv / age > 2`, `country == "DE"`, `country in ["DE", "AT"]`, `city startsWith "B"`,
	`vip`, `!vip`, `days_since(signed_up_at) < 100`, `"running" in interests`, `len(interests) >= 2`, `has(interests)`,
	`ever("purchase")`, `events("purchase", "30d") >= 2`, `events("page_view", "2w") > 0`, `total("purchase", "90d") > 50`,
	`days_since(last_time("purchase")) > 20`, `days_since(first_time("page_view")) > 60`, `rfm.r >= 4 && rfm.m >= 3`,
	`rfm.f <= 2`, `lower(city) == "berlin" || age < 20`, `events("page_view", "400d") > 70000`,
}

// TestStoreMatchesModel applies random upserts, deletes and rollups (with
// relocations, compactions and overflowing counts) and checks that every
// rule gives the same members on the store as on the model's MemTable.
func TestStoreMatchesModel(t *testing.T) {
	doc := "version: 1\nsegments:\n"
	for i, w := range storeRules {
		doc += fmt.Sprintf("  r%d:\n    when: %q\n", i, w)
	}
	set, err := rules.LoadFiles(map[string][]byte{"s.yaml": []byte(doc)}, rules.LoadOptions{Schema: testSchema})
	require.NoError(t, err)

	r := rand.New(rand.NewPCG(1, 2))
	s := New(testSchema)
	m := newModel()
	today := day(testNow)
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	for step := range 40 {
		var rs []Rollup
		for range 400 {
			id := fmt.Sprintf("c%d", r.IntN(300))
			switch x := r.IntN(100); {
			case x < 30:
				tr := map[string]sdk.Value{}
				if r.IntN(2) == 0 {
					tr["age"] = sdk.Number(float64(10 + r.IntN(60)))
				}
				if r.IntN(3) == 0 {
					tr["ltv"] = sdk.Number(float64(r.IntN(1000)))
				}
				if r.IntN(2) == 0 {
					tr["country"] = sdk.String(pick("DE", "AT", "FR", "Ü"))
				}
				if r.IntN(3) == 0 {
					tr["city"] = sdk.String(pick("Berlin", "berlin", "Bonn", "Paris", fmt.Sprintf("city%d", step)))
				}
				if r.IntN(3) == 0 {
					tr["vip"] = sdk.Bool(r.IntN(2) == 0)
				}
				if r.IntN(3) == 0 {
					tr["signed_up_at"] = sdk.Time(testNow.AddDate(0, 0, -r.IntN(300)))
				}
				if r.IntN(2) == 0 {
					var l []string
					for range r.IntN(5) {
						l = append(l, pick("running", "yoga", "books", fmt.Sprintf("i%d", step)))
					}
					tr["interests"] = sdk.List(l...)
				}
				if r.IntN(8) == 0 {
					for k := range tr {
						tr[k] = sdk.Value{} // remove
					}
				}
				require.NoError(t, s.Upsert(id, tr))
				m.upsert(id, tr)
			case x < 33:
				s.Delete(id)
				m.delete(id)
			default:
				ro := Rollup{CustomerID: id, Name: pick("purchase", "page_view", "page_view"), Day: today - int32(r.IntN(400)), Count: 1 + int64(r.IntN(3))}
				if ro.Name == "purchase" {
					ro.Sum = float64(r.IntN(10000)) / 100
				}
				rs = append(rs, ro)
			}
		}
		if step == 5 {
			// Two deltas adding up past the uint16 count of a rollup entry.
			big := Rollup{CustomerID: "c1", Name: "page_view", Day: today - 3, Count: 40000}
			rs = append(rs, big, big)
		}
		require.NoError(t, s.AddEvents(rs))
		for _, ro := range rs {
			m.add(ro)
		}
		if step%10 == 9 {
			s.Compact()
		}
		require.NoError(t, s.ComputeRFM())
		want, err := set.EvalAll(m.table(t), testNow)
		require.NoError(t, err)
		require.NoError(t, s.View(func(tab rules.Table) error {
			got, err := set.EvalAll(tab, testNow)
			require.NoError(t, err)
			for _, seg := range set.Segments() {
				require.Equalf(t, want[seg.Name].Rows(nil), got[seg.Name].Rows(nil), "step %d: %s", step, seg.When)
			}
			return nil
		}))
	}
	// The test went through relocations and compactions.
	require.NoError(t, s.View(func(rules.Table) error {
		require.NotEmpty(t, s.events["page_view"].Overflow)
		return nil
	}))
}

// TestConcurrentIngestAndPasses runs ingestion and segment passes at once
// (go test -race checks the locking).
func TestConcurrentIngestAndPasses(t *testing.T) {
	set, err := rules.LoadFiles(map[string][]byte{"s.yaml": []byte(`version: 1
segments:
  a: {when: 'age > 30 && events("purchase", "30d") >= 1'}
  b: {when: '"running" in interests || in_segment("a")'}
  c: {when: 'rfm.r >= 3'}
`)}, rules.LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	s := New(testSchema)
	today := day(testNow)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("c%d", i%500)
			_ = s.Apply(Batch{
				Customers: []sdk.Customer{{ID: id, Traits: map[string]sdk.Value{"age": sdk.Number(float64(i % 90)), "interests": sdk.List(strings.Repeat("x", i%3), "running")}}},
				Rollups:   []Rollup{{CustomerID: id, Name: "purchase", Day: today - int32(i%60), Count: 1, Sum: 1}},
			})
			if i%97 == 0 {
				s.Delete(id)
			}
			if i%500 == 0 {
				require.NoError(t, s.ComputeRFM())
			}
		}
	}()
	passes := 0
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) || passes < 20 {
		members := map[string]rules.Bitmap{}
		for _, seg := range set.Segments() {
			// Range by range, the read lock taken per range.
			n := s.Len()
			out := rules.NewBitmap(n)
			for lo := 0; lo < n; lo += 128 {
				require.NoError(t, s.View(func(tab rules.Table) error {
					return seg.EvalRange(tab, rules.Env{Now: testNow, Members: members}, lo, min(lo+128, n), out)
				}))
			}
			members[seg.Name] = out
		}
		// And the whole table at once, compared with the VM.
		require.NoError(t, s.View(func(tab rules.Table) error {
			all, err := set.EvalAll(tab, testNow)
			if err != nil {
				return err
			}
			rows := all["a"].Rows(nil)
			out := make([]bool, len(rows))
			if err := set.Segment("a").EvalVM(tab, rules.Env{Now: testNow}, rows, out); err != nil {
				return err
			}
			for i := range out {
				require.True(t, out[i])
			}
			return nil
		}))
		passes++
	}
	close(stop)
	wg.Wait()
	require.Greater(t, s.Customers(), 100)
}

func TestComputeRFMMatchesRules(t *testing.T) {
	s := New(testSchema)
	today := day(testNow)
	var cs []rules.MemCustomer
	for i := range 50 {
		id := fmt.Sprintf("c%d", i)
		require.NoError(t, s.Upsert(id, nil))
		c := rules.MemCustomer{ID: id}
		for j := range i % 7 {
			d := today - int32((i*13+j*7)%200)
			require.NoError(t, s.AddEvents([]Rollup{{CustomerID: id, Name: "purchase", Day: d, Count: 1, Sum: float64(i)}}))
			c.Events = append(c.Events, rules.EventRecord{Name: "purchase", Time: rules.DayTime(int64(d)), Value: float64(i)})
		}
		cs = append(cs, c)
	}
	require.NoError(t, s.ComputeRFM())
	tab, err := rules.NewMemTable(testSchema, cs)
	require.NoError(t, err)
	want, _ := tab.RFM()
	require.NoError(t, s.View(func(t2 rules.Table) error {
		got, ok := t2.RFM()
		require.True(t, ok)
		require.Equal(t, want, got)
		five := 0
		for _, q := range got.R {
			if q == 5 {
				five++
			}
		}
		require.Greater(t, five, 3)
		return nil
	}))
	require.Error(t, New(rules.Schema{}).ComputeRFM())
}

func TestCompactKeepsData(t *testing.T) {
	s := New(testSchema)
	today := day(testNow)
	for i := range 200 {
		id := fmt.Sprintf("c%d", i)
		require.NoError(t, s.Upsert(id, map[string]sdk.Value{"interests": sdk.List("a", "b", "c")}))
		require.NoError(t, s.Upsert(id, map[string]sdk.Value{"interests": sdk.List("d", "e", "f", "g")}))
		for j := range 5 {
			require.NoError(t, s.AddEvents([]Rollup{{CustomerID: id, Name: "page_view", Day: today - int32(j), Count: 1}}))
		}
	}
	snapshot := func() (lists []string, days []string) {
		require.NoError(t, s.View(func(t2 rules.Table) error {
			l, _ := t2.List("interests")
			e, _ := t2.Events("page_view")
			for r := range t2.Len() {
				var items []string
				for _, c := range l.Codes[l.Start[r] : l.Start[r]+uint32(l.N[r])] {
					items = append(items, l.Dict[c])
				}
				lists = append(lists, strings.Join(items, ","))
				days = append(days, fmt.Sprint(e.Days[e.Start[r]:e.Start[r]+uint32(e.N[r])]))
			}
			return nil
		}))
		return
	}
	l1, d1 := snapshot()
	before := len(s.events["page_view"].Days)
	s.Compact()
	l2, d2 := snapshot()
	require.Equal(t, l1, l2)
	require.Equal(t, d1, d2)
	require.Equal(t, 1000, len(s.events["page_view"].Days))
	require.Greater(t, before, 1000, "relocations left garbage before compaction")
	require.Equal(t, 800, len(s.lists["interests"].Codes))
	sort.Strings(l2)
	require.Equal(t, "d,e,f,g", l2[0])
}
