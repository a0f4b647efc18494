package segment_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/daemon/segment"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// failingStore is real storage whose transactions fail while fail is set.
type failingStore struct {
	*storage.DB
	fail bool
}

func (s *failingStore) Tx(ctx context.Context, fn func(*storage.Tx) error) error {
	if s.fail {
		return errors.New("disk full")
	}
	return s.DB.Tx(ctx, fn)
}

// TestIncrementalWindow: incremental passes share one pass row, whose size
// rows and counts are written when a full pass closes the window; the
// change log has every change at once.
func TestIncrementalWindow(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := func() time.Time { return time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC) }
		p := &memProfiles{table(t, cust("a", "pro", 30, true), cust("b", "free", 16, false), cust("c", "free", 40, true))}
		s := segment.New(db, p, loadRules(t), slog.New(slog.DiscardHandler), prometheus.NewRegistry(), now)
		require.NoError(t, s.Load(ctx))
		_, err := s.FullPass(ctx, nil)
		require.NoError(t, err)

		p.t = table(t, cust("a", "pro", 30, true), cust("b", "pro", 16, false), cust("c", "free", 40, true))
		r1, err := s.Incremental(ctx, []string{"b"})
		require.NoError(t, err)
		require.Equal(t, []string{"b"}, r1.Segments["pro"].Entered)
		p.t = table(t, cust("a", "pro", 30, true), cust("b", "pro", 16, false), cust("c", "pro", 40, true))
		r2, err := s.Incremental(ctx, []string{"c"})
		require.NoError(t, err)
		require.Equal(t, []string{"c"}, r2.Segments["pro"].Entered)
		require.Equal(t, []string{"c"}, r2.Segments["pro_buyers"].Entered, "in_segment sees this pass's flip of pro")
		require.Equal(t, r1.Pass, r2.Pass, "one pass row per window")
		require.Equal(t, 3, s.Size("pro"))
		require.Equal(t, 3, r2.Segments["pro"].Size)

		chs, err := db.SegmentChanges(ctx, 0, 100)
		require.NoError(t, err)
		var last []string
		for _, c := range chs[len(chs)-3:] {
			last = append(last, c.Segment+":"+c.Change+":"+c.CustomerID)
		}
		require.Equal(t, []string{"pro:enter:b", "pro:enter:c", "pro_buyers:enter:c"}, last)
		sizes, err := db.SizeHistory(ctx, "pro", time.Time{})
		require.NoError(t, err)
		require.Len(t, sizes, 1, "the open window has no size row yet")

		// The next full pass closes the window: its size rows, then the pass's.
		res, err := s.FullPass(ctx, nil)
		require.NoError(t, err)
		require.Empty(t, res.Segments["pro"].Entered, "the full pass agrees with the incremental ones")
		sizes, err = db.SizeHistory(ctx, "pro", time.Time{})
		require.NoError(t, err)
		require.Len(t, sizes, 3)
		require.Equal(t, storage.SegmentSize{Segment: "pro", Pass: r1.Pass, At: now(), Size: 3, Entered: 2}, sizes[1])
		require.Equal(t, res.Pass, sizes[2].Pass)
		adults, err := db.SizeHistory(ctx, "adults", time.Time{})
		require.NoError(t, err)
		require.Len(t, adults, 2, "a segment the window did not change gets no size row from it, only the full passes'")
		require.NotEqual(t, r1.Pass, adults[1].Pass)
	})
}

// TestIncrementalUndoesOnFailure: when persisting fails, the in-memory
// membership is as before, so the next pass reports the same changes.
func TestIncrementalUndoesOnFailure(t *testing.T) {
	ctx := context.Background()
	store := &failingStore{DB: storagetest.OpenSQLite(t)}
	p := &memProfiles{table(t, cust("a", "pro", 30, true), cust("b", "free", 16, true))}
	s := segment.New(store, p, loadRules(t), slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	require.NoError(t, s.Load(ctx))
	_, err := s.FullPass(ctx, nil)
	require.NoError(t, err)
	before := s.Members("pro_buyers")

	p.t = table(t, cust("a", "free", 30, true), cust("b", "pro", 16, true))
	store.fail = true
	_, err = s.Incremental(ctx, []string{"a", "b"})
	require.ErrorContains(t, err, "disk full")
	require.Equal(t, before, s.Members("pro_buyers"))
	require.Equal(t, 1, s.Size("pro"))

	store.fail = false
	res, err := s.Incremental(ctx, []string{"a", "b"})
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, res.Segments["pro_buyers"].Entered)
	require.Equal(t, []string{"a"}, res.Segments["pro_buyers"].Exited)
	require.Equal(t, 1, s.Size("pro_buyers"))
}

// TestFullPassFailureKeepsMembership: a failed full pass (storage down)
// leaves the previous membership current and writes nothing.
func TestFullPassFailureKeepsMembership(t *testing.T) {
	ctx := context.Background()
	store := &failingStore{DB: storagetest.OpenSQLite(t)}
	p := &memProfiles{table(t, cust("a", "pro", 30, true))}
	s := segment.New(store, p, loadRules(t), slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	require.NoError(t, s.Load(ctx))
	_, err := s.FullPass(ctx, nil)
	require.NoError(t, err)

	p.t = table(t, cust("a", "free", 30, true))
	store.fail = true
	_, err = s.FullPass(ctx, nil)
	require.ErrorContains(t, err, "disk full")
	require.True(t, rules.Bitmap(s.Members("pro")).Has(0))
	store.fail = false
	res, err := s.FullPass(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, res.Segments["pro"].Exited)
}
