package rules

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/sdk"
)

func TestLoadValid(t *testing.T) {
	set, err := LoadDir("testdata/valid", LoadOptions{Schema: testSchema, Channels: testChannels})
	require.NoError(t, err)

	var names []string
	for _, s := range set.Segments() {
		names = append(names, s.Name)
	}
	// Dependency order: champions before vip_champions; otherwise file order.
	require.Equal(t, []string{"lapsed_buyers", "new_mobile", "champions", "vip_champions", "not_in_germany"}, names)

	lb := set.Segment("lapsed_buyers")
	require.Equal(t, "Bought before, nothing for 90 days", lb.Description)
	require.Equal(t, Pos{File: filepath.Join("testdata/valid", "segments.yaml"), Line: 4, Column: 3}, lb.Pos)
	require.Equal(t, 6, lb.WhenPos.Line)
	require.Equal(t, 100, lb.MinSize)
	require.Equal(t, 500000, lb.MaxSize)
	require.InDelta(t, 0.30, lb.AlertSwing, 1e-12)
	require.Equal(t, &Goal{Event: "purchase", Within: 30 * 24 * time.Hour}, lb.Goal)
	require.Equal(t, "*/10 * * * *", lb.Refresh, "the document's refresh")
	require.Equal(t, "@hourly", set.Segment("new_mobile").Refresh)
	require.Equal(t, []string{"champions"}, set.Segment("vip_champions").Deps)

	require.Len(t, set.Campaigns(), 2)
	w := set.Campaign("winback")
	require.Equal(t, "lapsed_buyers", w.Segment)
	require.Equal(t, Trigger{Kind: TriggerEnter}, w.Trigger)
	require.Equal(t, time.Duration(0), w.ReentryAfter)
	require.Equal(t, StatusActive, w.Status)
	require.Equal(t, "email", w.ChannelKind)
	require.Equal(t, "winback-2026", w.Salt)
	require.Equal(t, 1000, w.Holdout)
	require.Equal(t, []string{"a", "b"}, []string{w.Variants[0].Name, w.Variants[1].Name}, "variants sorted by name")
	require.Equal(t, "templates/winback_a.html", w.Variants[0].HTML)
	require.Equal(t, &Winner{Metric: "conversion", MinPerArm: 1000, Alpha: 0.05, Tau: DefaultTau}, w.Winner)

	wk := set.Campaign("weekly")
	require.Equal(t, TriggerCron, wk.Trigger.Kind)
	require.Equal(t, "0 9 * * 1", wk.Trigger.Cron)
	require.NotNil(t, wk.Trigger.Schedule)
	monday := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	require.Equal(t, monday.AddDate(0, 0, 7), wk.Trigger.Schedule.Next(monday), "the parsed schedule fires Mondays at 09:00")
	require.Equal(t, 14*24*time.Hour, wk.ReentryAfter)
	require.Equal(t, StatusPaused, wk.Status)
	require.Equal(t, 1250, wk.Holdout)
	require.Equal(t, "weekly", wk.Salt, "salt defaults to the name")
	require.Nil(t, wk.Winner)

	p := set.Policies()
	require.Equal(t, &Cap{Count: 3, Days: 7}, p["email"].Cap)
	require.Equal(t, &QuietHours{Start: 21 * 60, End: 8 * 60}, p["email"].QuietHours)
	require.True(t, p["email"].QuietHours.Contains(time.Date(2026, 1, 1, 23, 0, 0, 0, time.UTC)))
	require.True(t, p["email"].QuietHours.Contains(time.Date(2026, 1, 1, 7, 59, 0, 0, time.UTC)))
	require.False(t, p["email"].QuietHours.Contains(time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)))
	require.Equal(t, &Cap{Count: 1, Days: 1}, p["sms"].Cap)
}

func TestLoadWithoutChannelsSkipsChannelCheck(t *testing.T) {
	set, err := LoadDir("testdata/valid", LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	require.Equal(t, "", set.Campaign("winback").ChannelKind)
	_, err = LoadDir("testdata/valid", LoadOptions{Schema: testSchema, Channels: map[string]string{"email_main": "email"}})
	require.ErrorContains(t, err, `unknown channel instance "sms_main" (config.yaml has: email_main)`)
}

func TestLoadDirMissing(t *testing.T) {
	_, err := LoadDir("testdata/nope", LoadOptions{Schema: testSchema})
	require.Error(t, err)
	set, err := LoadDir(t.TempDir(), LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	require.Empty(t, set.Segments())
}

func TestFixturesPass(t *testing.T) {
	set, err := LoadDir("testdata/valid", LoadOptions{Schema: testSchema, Channels: testChannels})
	require.NoError(t, err)
	fx, err := LoadFixtures(filepath.Join("testdata/valid", FixturesDir), testSchema)
	require.NoError(t, err)
	require.Len(t, fx, 1)
	require.Equal(t, time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC), fx[0].Now)
	alice := fx[0].Customers[0]
	require.Equal(t, "alice", alice.ID)
	require.Equal(t, sdk.OptOut, alice.Consent["sms"])
	require.Equal(t, CampaignExpectation{Arm: "a", Outcome: "sent", Pos: alice.Campaigns["winback"].Pos}, alice.Campaigns["winback"])
	require.Len(t, alice.Events, 2)
	failures, err := RunFixtures(set, fx)
	require.NoError(t, err)
	for _, f := range failures {
		t.Error(f)
	}
}

// TestFixtureFailuresGolden shows what a failing fixture reports: the rule
// and the value each part of it saw.
func TestFixtureFailuresGolden(t *testing.T) {
	dir := "testdata/fixtures_fail"
	set, err := LoadDir(dir, LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	fx, err := LoadFixtures(filepath.Join(dir, FixturesDir), testSchema)
	require.NoError(t, err)
	failures, err := RunFixtures(set, fx)
	require.NoError(t, err)
	require.Len(t, failures, 3)
	var b strings.Builder
	for _, f := range failures {
		b.WriteString(strings.ReplaceAll(f.Error(), dir+string(filepath.Separator), "") + "\n")
	}
	golden := filepath.Join(dir, "expected.txt")
	if *update {
		require.NoError(t, os.WriteFile(golden, []byte(b.String()), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, string(want), b.String())
}

func TestFixtureErrors(t *testing.T) {
	set, err := LoadDir("testdata/valid", LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	_, err = LoadFixtureFiles(map[string][]byte{"f.yaml": []byte(`version: 1
now: yesterday
customers:
  x:
    traits: {agee: 3, age: old, interests: running, vip: maybe}
    events: [{name: purchse, time: 2026-01-01}, {name: purchase}]
    rfm: {r: 6, f: 1, m: 1}
`)}, testSchema)
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{
		`f.yaml:2:6: now: "yesterday" is not a time`,
		`f.yaml:5:14: customers.x.traits: unknown trait "agee" (did you mean "age"?)`,
		`f.yaml:5:28: customers.x.traits.age: expected a number, found "old"`,
		`customers.x.traits.interests: expected a list of strings`,
		`customers.x.traits.vip: expected true or false, found "maybe"`,
		`customers.x.events[0].name: unknown event "purchse" (did you mean "purchase"?)`,
		`customers.x.events[1]: an event needs a name and a time`,
		`customers.x.rfm: rfm needs r, f and m, each a quintile from 1 to 5`,
	} {
		require.Contains(t, msg, want)
	}
	fx, err := LoadFixtureFiles(map[string][]byte{"f.yaml": []byte(`version: 1
now: 2026-01-01
customers:
  x:
    must_be_in: [lapsd_buyers]
    campaigns: {winback: {arm: c}, nope: {arm: a}}
`)}, testSchema)
	require.NoError(t, err)
	_, err = RunFixtures(set, fx)
	require.ErrorContains(t, err, `f.yaml:5:18: customer "x": unknown segment "lapsd_buyers" (did you mean "lapsed_buyers"?)`)
	require.ErrorContains(t, err, `campaign "winback" has no arm "c"`)
	require.ErrorContains(t, err, `unknown campaign "nope"`)
}

// TestMissingValueSemantics pins the rules of DESIGN.md section 4 on a
// customer who has nothing and one who has everything, through the
// closures and expr's VM.
func TestMissingValueSemantics(t *testing.T) {
	now := time.Date(2026, 11, 24, 0, 30, 0, 0, time.UTC)
	customers := []MemCustomer{
		{ID: "nothing"},
		{ID: "full", Traits: map[string]sdk.Value{
			"age": sdk.Number(40), "country": sdk.String("DE"), "vip": sdk.Bool(false),
			"signed_up_at": sdk.Time(time.Date(2026, 11, 23, 23, 59, 0, 0, time.UTC)),
			"interests":    sdk.List(),
		}, Events: []EventRecord{
			{Name: "purchase", Time: time.Date(2026, 11, 23, 23, 59, 0, 0, time.UTC), Value: 10},
			{Name: "purchase", Time: now.AddDate(0, 0, -89), Value: 5},  // in a 90d window
			{Name: "purchase", Time: now.AddDate(0, 0, -90), Value: 20}, // just outside
			{Name: "page_view", Time: now.AddDate(0, 0, -13)},           // in "2w"
			{Name: "page_view", Time: now.AddDate(0, 0, -14)},           // outside "2w"
		}},
	}
	tab, err := NewMemTable(testSchema, customers)
	require.NoError(t, err)
	cases := []struct {
		when          string
		nothing, full bool
	}{
		{`age > 30`, false, true},
		{`age != 30`, false, true},   // comparison touching missing is false
		{`!(age > 30)`, true, false}, // ! of a comparison on missing is true
		{`has(age) && !(age > 30)`, false, false},
		{`age + 1 > 0`, false, true}, // arithmetic touching missing
		{`-age < 0`, false, true},
		{`(age ?? 0) == 0`, true, false},
		{`country not in ["FR"]`, true, true}, // not (missing in [...]) is true
		{`country in ["DE"]`, false, true},
		{`vip`, false, false},
		{`!vip`, true, true}, // missing bool is not true
		{`vip == false`, false, true},
		{`has(vip)`, false, true},
		{`has(interests) && len(interests) == 0`, false, true},
		{`"x" in interests`, false, false},
		{`days_since(signed_up_at) == 1`, false, true}, // 23:59 yesterday is 1 day before 00:30
		{`days_since(last_time("purchase")) == 1`, false, true},
		{`days_since(last_time("email_open")) >= 0`, false, false},
		{`!(days_since(last_time("email_open")) < 7)`, true, true},
		{`events("purchase", "90d") == 2`, false, true},
		{`events("purchase", "91d") == 3`, false, true},
		{`total("purchase", "90d") == 15`, false, true},
		{`events("page_view", "2w") == 1`, false, true},
		{`events("purchase", "90d") == 0`, true, false}, // counts are never missing
		{`ever("purchase")`, false, true},
		{`has(rfm.r)`, false, true},
	}
	doc := "version: 1\nsegments:\n"
	for i, c := range cases {
		doc += "  c" + itoa(i) + ":\n    when: '" + strings.ReplaceAll(c.when, "'", "''") + "'\n"
	}
	set, err := LoadFiles(map[string][]byte{"s.yaml": []byte(doc)}, LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	members, err := set.EvalAll(tab, now)
	require.NoError(t, err)
	for i, c := range cases {
		name := "c" + itoa(i)
		vm := make([]bool, 2)
		require.NoError(t, set.Segment(name).EvalVM(tab, Env{Now: now}, []uint32{0, 1}, vm))
		require.Equal(t, []bool{c.nothing, c.full}, []bool{members[name].Has(0), members[name].Has(1)}, "closures: %s", c.when)
		require.Equal(t, []bool{c.nothing, c.full}, vm, "vm: %s", c.when)
	}
}

func TestEvalNeedsNowAndMembers(t *testing.T) {
	set, err := LoadFiles(map[string][]byte{"s.yaml": []byte("version: 1\nsegments:\n  a: {when: vip}\n  b: {when: 'in_segment(\"a\")'}\n")}, LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	tab, err := NewMemTable(testSchema, testCustomers(10, 1))
	require.NoError(t, err)
	_, err = set.Segment("a").EvalAll(tab, Env{})
	require.ErrorContains(t, err, "Env.Now")
	_, err = set.Segment("b").EvalAll(tab, Env{Now: testNow})
	require.ErrorContains(t, err, `the membership of segment "a" was not given`)
}

// swapTable is a Table whose data is swapped underneath, like the profile
// store's columns after a compaction.
type swapTable struct {
	*MemTable
	gen uint64
}

func (s *swapTable) Generation() uint64 { return s.gen }

func TestRebindOnGeneration(t *testing.T) {
	set, err := LoadFiles(map[string][]byte{"s.yaml": []byte("version: 1\nsegments:\n  a: {when: 'country == \"DE\" && age > 30'}\n")}, LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	seg := set.Segment("a")
	mk := func(country string) *MemTable {
		tab, err := NewMemTable(testSchema, []MemCustomer{{ID: "x", Traits: map[string]sdk.Value{"country": sdk.String(country), "age": sdk.Number(40)}}})
		require.NoError(t, err)
		return tab
	}
	st := &swapTable{MemTable: mk("DE"), gen: 1}
	m, err := seg.EvalAll(st, Env{Now: testNow})
	require.NoError(t, err)
	require.True(t, m.Has(0))
	st.MemTable = mk("FR") // new columns and dictionary, same generation: the binding is stale
	st.gen = 2
	m, err = seg.EvalAll(st, Env{Now: testNow})
	require.NoError(t, err)
	require.False(t, m.Has(0), "rebinding on a new generation reads the new columns")
}

// growTable lets a test grow a string dictionary in place.
type growTable struct {
	*MemTable
	gen uint64
}

func (g *growTable) Generation() uint64 { return g.gen }

func TestCodeTableGrowsWithDictionary(t *testing.T) {
	set, err := LoadFiles(map[string][]byte{"s.yaml": []byte("version: 1\nsegments:\n  a: {when: 'city startsWith \"Ber\"'}\n")}, LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	tab, err := NewMemTable(testSchema, []MemCustomer{
		{ID: "x", Traits: map[string]sdk.Value{"city": sdk.String("Paris")}},
		{ID: "y", Traits: map[string]sdk.Value{"city": sdk.String("Berlin")}},
	})
	require.NoError(t, err)
	g := &growTable{MemTable: tab, gen: 1}
	m, err := set.Segment("a").EvalAll(g, Env{Now: testNow})
	require.NoError(t, err)
	require.Equal(t, []uint32{1}, m.Rows(nil))
	// A new city appears (the dictionary grows with room to spare) and x moves there.
	c := tab.strs["city"]
	c.Dict = append(make([]string, 0, 16), c.Dict...)
	c.Dict = append(c.Dict, "Bern")
	c.Codes[0] = uint32(len(c.Dict) - 1)
	tab.strs["city"] = c
	g.gen = 2
	m, err = set.Segment("a").EvalAll(g, Env{Now: testNow})
	require.NoError(t, err)
	require.Equal(t, []uint32{0, 1}, m.Rows(nil))
	c.Dict = append(c.Dict, "Bergen") // in place this time
	tab.strs["city"] = c
	g.gen = 3
	c.Codes[1] = uint32(len(c.Dict) - 1)
	m, err = set.Segment("a").EvalAll(g, Env{Now: testNow})
	require.NoError(t, err)
	require.Equal(t, []uint32{0, 1}, m.Rows(nil))
}

func TestConcurrentEval(t *testing.T) {
	set, err := LoadFiles(map[string][]byte{"corpus.yaml": corpusDoc()}, LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	tab, err := NewMemTable(testSchema, testCustomers(300, 5))
	require.NoError(t, err)
	want, err := set.EvalAll(tab, testNow)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := set.EvalAll(tab, testNow)
			if err != nil {
				errs <- err
				return
			}
			for name, m := range want {
				if !got[name].Equal(m) {
					errs <- &mismatch{name}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

type mismatch struct{ name string }

func (m *mismatch) Error() string { return "concurrent evaluation differs for " + m.name }

func TestComputeRFM(t *testing.T) {
	day := func(d int) time.Time { return DayTime(20000 + int64(d)) }
	var cs []MemCustomer
	// Five buyers with distinct recency, frequency and value; one with nothing.
	for i := range 5 {
		var evs []EventRecord
		for j := 0; j <= i; j++ {
			evs = append(evs, EventRecord{Name: "purchase", Time: day(i*10 - j), Value: float64(10 * (5 - i))})
		}
		cs = append(cs, MemCustomer{ID: itoa(i), Events: evs})
	}
	cs = append(cs, MemCustomer{ID: "none"}, MemCustomer{ID: "gone", Deleted: true, Events: []EventRecord{{Name: "purchase", Time: day(1)}}})
	tab, err := NewMemTable(testSchema, cs)
	require.NoError(t, err)
	rfm, ok := tab.RFM()
	require.True(t, ok)
	require.Equal(t, []uint8{1, 2, 3, 4, 5, 0, 0}, rfm.R, "most recent last day is 5")
	require.Equal(t, []uint8{1, 2, 3, 4, 5, 0, 0}, rfm.F, "most events is 5")
	// Monetary: customer i spends (i+1) * 10 * (5-i): 50, 80, 90, 80, 50: ties share a quintile.
	require.Equal(t, []uint8{2, 4, 5, 4, 2, 0, 0}, rfm.M)

	// All equal: everyone is in the middle quintile.
	q := make([]uint8, 4)
	quintiles([]uint32{0, 1, 2, 3}, []float64{7, 7, 7, 7}, q)
	require.Equal(t, []uint8{3, 3, 3, 3}, q)
	q = make([]uint8, 10)
	quintiles([]uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, []float64{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}, q)
	require.Equal(t, []uint8{5, 5, 4, 4, 3, 3, 2, 2, 1, 1}, q)
}

func TestBitmap(t *testing.T) {
	b := NewBitmap(130)
	require.Len(t, b, 3)
	for _, r := range []uint32{0, 63, 64, 129} {
		b.Set(r)
	}
	require.True(t, b.Has(64))
	require.False(t, b.Has(65))
	require.False(t, b.Has(100000), "out of range is not a member")
	require.Equal(t, 4, b.Count())
	require.Equal(t, []uint32{0, 63, 64, 129}, b.Rows(nil))
	b.Clear(63)
	b.Clear(100000)
	require.Equal(t, []uint32{0, 64, 129}, b.Rows(nil))
	require.True(t, b.Equal(append(b[:3:3], 0)), "trailing zero words do not matter")
	require.False(t, b.Equal(NewBitmap(130)))
}

func TestParseWindow(t *testing.T) {
	for s, want := range map[string]int{"1d": 1, "90d": 90, "2w": 14, "65535d": 65535} {
		got, err := parseWindow(s)
		require.NoError(t, err, s)
		require.Equal(t, want, got, s)
	}
	for _, s := range []string{"", "d", "0d", "-1d", "+1d", "1m", "1.5d", "65536d", "9999999999w", " 1d"} {
		_, err := parseWindow(s)
		require.Error(t, err, s)
	}
}

func TestExplain(t *testing.T) {
	set, err := LoadDir("testdata/valid", LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	tab, err := NewMemTable(testSchema, []MemCustomer{{ID: "alice", Traits: map[string]sdk.Value{"device": sdk.String("ios")},
		Events: []EventRecord{{Name: "purchase", Time: time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC), Value: 3}}}})
	require.NoError(t, err)
	ex, err := set.Explain(tab, 0, testNow)
	require.NoError(t, err)
	require.Len(t, ex, 5)
	got := ex[0].String() + ex[1].String()
	want := `segment "lapsed_buyers": in (testdata/valid/segments.yaml:6:11)
  ever("purchase") && days_since(last_time("purchase")) > 90 = true
    ever("purchase") = true
    days_since(last_time("purchase")) > 90 = true
      days_since(last_time("purchase")) = 146
        last_time("purchase") = 2026-07-01
segment "new_mobile": not in (testdata/valid/segments.yaml:12:11)
  days_since(signed_up_at) <= 14 && device in ["ios", "android"] = false
    days_since(signed_up_at) <= 14 = false
      days_since(signed_up_at) = missing
        signed_up_at = missing
    device in ["ios", "android"] = true
      device = "ios"
`
	require.Equal(t, want, got)
	_, err = set.Explain(tab, 5, testNow)
	require.Error(t, err)
}

func TestEvalRangeMatchesEvalAll(t *testing.T) {
	set, err := LoadFiles(map[string][]byte{"corpus.yaml": corpusDoc()}, LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	tab, err := NewMemTable(testSchema, testCustomers(1000, 9)) // 1002 rows: a partial last word
	require.NoError(t, err)
	all, err := set.EvalAll(tab, testNow)
	require.NoError(t, err)
	for _, seg := range set.Segments() {
		out := NewBitmap(tab.Len())
		for i := range out {
			out[i] = ^uint64(0) // stale bits must be cleared
		}
		for lo := 0; lo < tab.Len(); lo += 192 {
			require.NoError(t, seg.EvalRange(tab, Env{Now: testNow, Members: all}, lo, min(lo+192, tab.Len()), out))
		}
		require.Equal(t, all[seg.Name].Rows(nil), out.Rows(nil), seg.When)
	}
	require.Error(t, set.Segments()[0].EvalRange(tab, Env{Now: testNow}, 3, 10, NewBitmap(tab.Len())))
}
