package segment_test

import (
	"context"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/daemon/segment"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// memProfiles adapts a rules.MemTable (the rules package's own table) to
// segment.Profiles; tests swap it to simulate changed data.
type memProfiles struct{ t *rules.MemTable }

func (m *memProfiles) Read(fn func(rules.Table) error) error { return fn(m.t) }
func (m *memProfiles) Row(id string) (uint32, bool)          { return m.t.Row(id) }
func (m *memProfiles) ID(row uint32) string                  { return m.t.ID(row) }

var schema = rules.Schema{
	Traits: map[string]sdk.TraitType{"plan": sdk.TypeString, "age": sdk.TypeNumber},
	Events: []string{"purchase"},
}

const segmentsYAML = `version: 1
segments:
  pro:
    when: plan == "pro"
  pro_buyers:
    when: in_segment("pro") && ever("purchase")
  adults:
    when: age >= 18
    min_size: 3
`

func loadRules(t *testing.T) *rules.Set {
	set, err := rules.LoadFiles(map[string][]byte{"segments.yaml": []byte(segmentsYAML)}, rules.LoadOptions{Schema: schema})
	require.NoError(t, err)
	return set
}

func table(t *testing.T, cs ...rules.MemCustomer) *rules.MemTable {
	mt, err := rules.NewMemTable(schema, cs)
	require.NoError(t, err)
	return mt
}

func cust(id, plan string, age float64, purchased bool) rules.MemCustomer {
	c := rules.MemCustomer{ID: id, Traits: map[string]sdk.Value{"plan": sdk.String(plan), "age": sdk.Number(age)}}
	if purchased {
		c.Events = []rules.EventRecord{{Name: "purchase", Time: time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC), Value: 10}}
	}
	return c
}

func deleted(c rules.MemCustomer) rules.MemCustomer { c.Deleted = true; return c }

func sorted(s []string) []string { s = append([]string(nil), s...); sort.Strings(s); return s }

func TestPassesDiffsAndRestart(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := func() time.Time { return time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC) }
		p := &memProfiles{table(t,
			cust("a", "pro", 30, true), cust("b", "pro", 16, false), cust("c", "free", 40, true), cust("d", "free", 25, false))}
		s := segment.New(db, p, loadRules(t), slog.New(slog.DiscardHandler), prometheus.NewRegistry(), now)
		require.NoError(t, s.Load(ctx))

		res, err := s.FullPass(ctx, nil)
		require.NoError(t, err)
		require.Equal(t, []string{"a", "b"}, sorted(res.Segments["pro"].Entered))
		require.Equal(t, []string{"a"}, res.Segments["pro_buyers"].Entered, "in_segment reads this pass's membership")
		require.Equal(t, []string{"a", "c", "d"}, sorted(res.Segments["adults"].Entered))
		require.Empty(t, res.Segments["adults"].Held, "3 adults meet min_size 3")

		// Data changes: b upgrades nothing but turns 18, d is deleted, c goes pro.
		p.t = table(t, cust("a", "pro", 30, true), cust("b", "pro", 18, false), cust("c", "pro", 40, true), deleted(cust("d", "free", 25, false)))
		res, err = s.FullPass(ctx, nil)
		require.NoError(t, err)
		require.Equal(t, []string{"c"}, res.Segments["pro"].Entered)
		require.Empty(t, res.Segments["pro"].Exited)
		require.Equal(t, []string{"c"}, res.Segments["pro_buyers"].Entered)
		require.Equal(t, []string{"b"}, res.Segments["adults"].Entered)
		require.Equal(t, []string{"d"}, res.Segments["adults"].Exited, "a deleted customer exits")
		require.Equal(t, 3, s.Size("adults"))

		// A restarted daemon (new segmenter, same storage and data) sees no
		// change on its first pass: nothing re-fires.
		s2 := segment.New(db, p, loadRules(t), slog.New(slog.DiscardHandler), prometheus.NewRegistry(), now)
		require.NoError(t, s2.Load(ctx))
		res, err = s2.FullPass(ctx, nil)
		require.NoError(t, err)
		for name, d := range res.Segments {
			require.Empty(t, d.Entered, name)
			require.Empty(t, d.Exited, name)
		}

		// Incremental: only the named customers are re-evaluated.
		p.t = table(t, cust("a", "free", 30, true), cust("b", "pro", 18, false), cust("c", "pro", 40, true), deleted(cust("d", "free", 25, false)), cust("e", "pro", 12, true))
		res, err = s2.Incremental(ctx, []string{"a", "e"})
		require.NoError(t, err)
		require.Equal(t, []string{"e"}, res.Segments["pro"].Entered)
		require.Equal(t, []string{"a"}, res.Segments["pro"].Exited)
		require.Equal(t, []string{"e"}, res.Segments["pro_buyers"].Entered)
		require.Equal(t, []string{"a"}, res.Segments["pro_buyers"].Exited)
		require.Equal(t, 3, res.Segments["pro"].Size)

		// Everything above is in the numbered change log and size history.
		chs, err := db.SegmentChanges(ctx, 0, 100)
		require.NoError(t, err)
		require.Len(t, chs, 2+1+3+1+1+1+1+2+2)
		sizes, err := db.SizeHistory(ctx, "adults", time.Time{})
		require.NoError(t, err)
		require.Len(t, sizes, 3, "one size per full pass; the incremental pass did not change adults")
	})
}

func TestMinSizeHolds(t *testing.T) {
	db := storagetest.OpenSQLite(t)
	ctx := context.Background()
	p := &memProfiles{table(t, cust("a", "pro", 30, false), cust("b", "pro", 10, false))}
	s := segment.New(db, p, loadRules(t), slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	require.NoError(t, s.Load(ctx))
	res, err := s.FullPass(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, "size 1 is below min_size 3", res.Segments["adults"].Held)
	sizes, err := db.SizeHistory(ctx, "adults", time.Time{})
	require.NoError(t, err)
	require.Equal(t, "size 1 is below min_size 3", sizes[0].Held)
}
