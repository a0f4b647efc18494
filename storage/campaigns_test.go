package storage_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/stretchr/testify/require"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// runRaw is storagetest.Run with a second, plain connection to the same
// database, for looking at what the API does not show (every table).
func runRaw(t *testing.T, fn func(t *testing.T, db *storage.DB, raw *gorm.DB)) {
	t.Helper()
	run := func(t *testing.T, cfg storage.Config) {
		db, raw := openRaw(t, cfg)
		fn(t, db, raw)
	}
	t.Run("sqlite", func(t *testing.T) { run(t, storagetest.SQLiteConfig(t)) })
	t.Run("postgres", func(t *testing.T) { run(t, storagetest.PostgresConfig(t)) })
}

// openRaw opens the database of cfg through the API and through a plain
// connection (for locks and every table), both closed at the test's end.
func openRaw(t *testing.T, cfg storage.Config) (*storage.DB, *gorm.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := storage.Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	var d gorm.Dialector
	if cfg.Driver == storage.SQLite {
		d = sqlite.Open("file:" + cfg.DSN + "?_pragma=busy_timeout(10000)")
	} else {
		d = postgres.Open(cfg.DSN)
	}
	raw, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard})
	require.NoError(t, err)
	sqlDB, err := raw.DB()
	require.NoError(t, err)
	t.Cleanup(func() { sqlDB.Close() })
	return db, raw
}

var t0 = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

func outboxRow(key, customer string) storage.OutboxRow {
	return storage.OutboxRow{Key: key, Campaign: "winback", Occurrence: "enter:1", CustomerID: customer, Channel: "email_main",
		Kind: "email", Arm: "a", Created: t0}
}

func enqueue(t *testing.T, db *storage.DB, rows ...storage.OutboxRow) {
	t.Helper()
	require.NoError(t, db.Tx(context.Background(), func(tx *storage.Tx) error {
		_, err := tx.Enqueue(rows)
		return err
	}))
}

func byKey(t *testing.T, db *storage.DB, key string) storage.OutboxRow {
	t.Helper()
	m, err := db.OutboxByKeys(context.Background(), []string{key})
	require.NoError(t, err)
	r, ok := m[key]
	require.True(t, ok, "row %s", key)
	return r
}

func due(t *testing.T, db *storage.DB, now time.Time, limit int) []storage.OutboxRow {
	t.Helper()
	var rows []storage.OutboxRow
	require.NoError(t, db.Tx(context.Background(), func(tx *storage.Tx) error {
		var err error
		rows, err = tx.DueOutbox("email_main", now, limit)
		return err
	}))
	return rows
}

func claim(t *testing.T, db *storage.DB, ids []int64, token string, now, until time.Time) []int64 {
	t.Helper()
	var got []int64
	require.NoError(t, db.Tx(context.Background(), func(tx *storage.Tx) error {
		var err error
		got, err = tx.Claim(ids, token, now, until)
		return err
	}))
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	return got
}

func ids(rows []storage.OutboxRow) []int64 {
	out := make([]int64, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.ID)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func TestOutboxEnqueueIsIdempotentByKey(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		enqueue(t, db, outboxRow("k1", "c1"), outboxRow("k2", "c2"))
		first := byKey(t, db, "k1")
		require.Equal(t, storage.OutboxPending, first.State)
		require.Equal(t, "a", first.Arm)
		require.Equal(t, t0, first.Created)
		require.True(t, first.NotBefore.IsZero())

		// The same keys again (a planner repeating after a crash), one
		// with a different arm, and a new key.
		again := outboxRow("k1", "c1")
		again.Arm = "b"
		enqueue(t, db, again, outboxRow("k2", "c2"), outboxRow("k3", "c3"))
		counts, err := db.OutboxCounts(ctx, "winback")
		require.NoError(t, err)
		require.Equal(t, map[string]int64{storage.OutboxPending: 3}, counts)
		require.Equal(t, first, byKey(t, db, "k1"), "an existing row is left alone")

		// Even a row that was sent is not queued again.
		rows := due(t, db, t0, 10)
		require.Len(t, rows, 3)
		got := claim(t, db, []int64{first.ID}, "tok", t0, t0.Add(time.Minute))
		require.Equal(t, []int64{first.ID}, got)
		applied, err := db.Complete(ctx, []storage.Completion{{ID: first.ID, Token: "tok", State: storage.OutboxSent, ProviderID: "p1"}}, t0)
		require.NoError(t, err)
		require.Equal(t, []int64{first.ID}, applied)
		enqueue(t, db, outboxRow("k1", "c1"))
		require.Equal(t, storage.OutboxSent, byKey(t, db, "k1").State)
	})
}

func TestOutboxClaimCompleteFencing(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		later := outboxRow("later", "c9")
		later.NotBefore = t0.Add(time.Hour)
		enqueue(t, db, outboxRow("k1", "c1"), outboxRow("k2", "c2"), outboxRow("k3", "c3"), later)

		rows := due(t, db, t0, 10)
		require.Len(t, rows, 3, "a row whose not_before is ahead is not due")
		all := ids(rows)
		got := claim(t, db, all[:2], "A", t0, t0.Add(2*time.Minute))
		require.Equal(t, all[:2], got)
		// A second claimant of the same rows gets none of them, the free
		// one only.
		require.Equal(t, all[2:], claim(t, db, all, "B", t0, t0.Add(2*time.Minute)))

		r1 := byKey(t, db, "k1")
		require.Equal(t, storage.OutboxSending, r1.State)
		require.Equal(t, "A", r1.LeaseToken)
		require.Equal(t, t0.Add(2*time.Minute), r1.LeaseUntil)
		require.Equal(t, t0, r1.Claimed)
		require.Equal(t, 1, r1.Attempts)
		require.Len(t, due(t, db, t0, 10), 0, "sending rows are not due")

		done := t0.Add(10 * time.Second)
		// A completion under a stale token does nothing.
		applied, err := db.Complete(ctx, []storage.Completion{{ID: r1.ID, Token: "B", State: storage.OutboxFailed, Reason: "late"}}, done)
		require.NoError(t, err)
		require.Empty(t, applied)
		require.Equal(t, r1, byKey(t, db, "k1"))

		applied, err = db.Complete(ctx, []storage.Completion{
			{ID: r1.ID, Token: "A", State: storage.OutboxSent, ProviderID: "msg-1"},
			{ID: all[1], Token: "A", State: storage.OutboxPending, Reason: "429", NotBefore: done.Add(30 * time.Second)},
		}, done)
		require.NoError(t, err)
		require.ElementsMatch(t, all[:2], applied)
		r1 = byKey(t, db, "k1")
		require.Equal(t, storage.OutboxSent, r1.State)
		require.Equal(t, "msg-1", r1.ProviderID)
		require.Equal(t, done, r1.Done)
		require.Empty(t, r1.LeaseToken)
		require.True(t, r1.LeaseUntil.IsZero())

		// A second completion of the same lease does nothing.
		applied, err = db.Complete(ctx, []storage.Completion{{ID: r1.ID, Token: "A", State: storage.OutboxFailed, Reason: "dup"}}, done.Add(time.Second))
		require.NoError(t, err)
		require.Empty(t, applied)
		require.Equal(t, r1, byKey(t, db, "k1"))

		// The retry is pending again, due at its not_before, and counts
		// its attempts.
		r2 := byKey(t, db, "k2")
		require.Equal(t, storage.OutboxPending, r2.State)
		require.True(t, r2.Done.IsZero())
		require.Equal(t, "429", r2.Reason)
		require.Equal(t, done.Add(30*time.Second), r2.NotBefore)
		require.NotContains(t, ids(due(t, db, done.Add(29*time.Second), 10)), r2.ID)
		require.Contains(t, ids(due(t, db, done.Add(30*time.Second), 10)), r2.ID)
		require.Equal(t, []int64{r2.ID}, claim(t, db, []int64{r2.ID}, "C", done.Add(30*time.Second), done.Add(time.Minute)))
		require.Equal(t, 2, byKey(t, db, "k2").Attempts)
		// The old lease's token cannot complete the new claim.
		applied, err = db.Complete(ctx, []storage.Completion{{ID: r2.ID, Token: "A", State: storage.OutboxSent}}, done.Add(time.Minute))
		require.NoError(t, err)
		require.Empty(t, applied)
		require.Equal(t, storage.OutboxSending, byKey(t, db, "k2").State)
	})
}

// TestOutboxCompleteBatch: a batch of one outcome with each row's provider
// id (the common batch, recorded with one statement) and a mixed batch are
// both fenced row by row, and keep provider ids and reasons byte for byte.
func TestOutboxCompleteBatch(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		var rows []storage.OutboxRow
		for i := range 6 {
			rows = append(rows, outboxRow(fmt.Sprintf("k%d", i), fmt.Sprintf("c%d", i)))
		}
		enqueue(t, db, rows...)
		all := ids(due(t, db, t0, 10))
		require.Len(t, all, 6)
		require.Equal(t, all[:5], claim(t, db, all[:5], "A", t0, t0.Add(time.Minute)))
		require.Equal(t, all[5:], claim(t, db, all[5:], "B", t0, t0.Add(time.Minute)))
		done := t0.Add(time.Second)
		pids := []string{"<m1@example.com>", `q"uo\te`, "tab\tline\nnul\u0001", "café ✓", ""}
		var cs []storage.Completion
		for i, id := range all[:3] {
			cs = append(cs, storage.Completion{ID: id, Token: "A", State: storage.OutboxSent, ProviderID: pids[i]})
		}
		// all[5] is B's: the same outcome under A's token is not applied.
		cs = append(cs, storage.Completion{ID: all[5], Token: "A", State: storage.OutboxSent, ProviderID: "stolen"})
		applied, err := db.Complete(ctx, cs, done)
		require.NoError(t, err)
		require.ElementsMatch(t, all[:3], applied)
		for i := range 3 {
			r := byKey(t, db, fmt.Sprintf("k%d", i))
			require.Equal(t, storage.OutboxSent, r.State)
			require.Equal(t, pids[i], r.ProviderID)
			require.Equal(t, done, r.Done)
			require.Empty(t, r.LeaseToken)
			require.Equal(t, 1, r.Attempts)
		}
		require.Equal(t, storage.OutboxSending, byKey(t, db, "k5").State)

		// Mixed outcomes in one call.
		applied, err = db.Complete(ctx, []storage.Completion{
			{ID: all[3], Token: "A", State: storage.OutboxPending, Reason: "429: slow \"down\"", NotBefore: done.Add(time.Minute), Uncounted: true},
			{ID: all[4], Token: "A", State: storage.OutboxFailed, Reason: pids[3]},
			{ID: all[5], Token: "B", State: storage.OutboxUnknown, Reason: "lost"},
		}, done)
		require.NoError(t, err)
		require.ElementsMatch(t, all[3:], applied)
		r3 := byKey(t, db, "k3")
		require.Equal(t, storage.OutboxPending, r3.State)
		require.Equal(t, "429: slow \"down\"", r3.Reason)
		require.Equal(t, done.Add(time.Minute), r3.NotBefore)
		require.Zero(t, r3.Attempts, "an uncounted retry gives its attempt back")
		require.True(t, r3.Done.IsZero())
		require.Equal(t, pids[3], byKey(t, db, "k4").Reason)
		require.Equal(t, storage.OutboxUnknown, byKey(t, db, "k5").State)
	})
}

// TestOutboxCompleteThenDue: a worker's outcomes and its next due rows in
// one call (one statement on PostgreSQL): completions fenced as Complete's,
// due rows as DueForClaim's, with their customers' traits.
func TestOutboxCompleteThenDue(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		require.NoError(t, db.UpsertCustomers(ctx, []storage.Customer{{ID: "c1", Traits: []byte(`{"email":"c1@example.com"}`)}}))
		enqueue(t, db, outboxRow("k1", "c1"), outboxRow("k2", "c2"), outboxRow("k3", "c3"), outboxRow("k4", "c1"))
		all := ids(due(t, db, t0, 10))
		require.Equal(t, all[:2], claim(t, db, all[:2], "A", t0, t0.Add(time.Minute)))
		done := t0.Add(time.Second)
		var (
			applied []int64
			rows    []storage.Due
		)
		require.NoError(t, db.WriteTx(ctx, func(tx *storage.Tx) error {
			var err error
			applied, rows, err = tx.CompleteThenDue([]storage.Completion{
				{ID: all[0], Token: "A", State: storage.OutboxSent, ProviderID: "p1"},
				{ID: all[1], Token: "A", State: storage.OutboxPending, Reason: "429", NotBefore: done.Add(time.Second), Uncounted: true},
				{ID: all[2], Token: "A", State: storage.OutboxSent}, // not claimed: not applied
			}, done, "email_main", 10)
			return err
		}))
		require.ElementsMatch(t, all[:2], applied)
		require.Len(t, rows, 2, "the retry waits for its not_before")
		require.Equal(t, []int64{all[2], all[3]}, []int64{rows[0].ID, rows[1].ID})
		require.Nil(t, rows[0].Traits, "c3 is not a stored customer")
		require.JSONEq(t, `{"email":"c1@example.com"}`, string(rows[1].Traits))
		require.Equal(t, "k4", rows[1].Key)
		require.Equal(t, "c1", rows[1].CustomerID)
		require.Equal(t, "winback", rows[1].Campaign)
		require.Equal(t, "email", rows[1].Kind)
		require.Equal(t, "a", rows[1].Arm)
		require.Equal(t, storage.OutboxSent, byKey(t, db, "k1").State)
		r2 := byKey(t, db, "k2")
		require.Equal(t, storage.OutboxPending, r2.State)
		require.Zero(t, r2.Attempts)
		require.Equal(t, storage.OutboxPending, byKey(t, db, "k3").State)

		// Without completions it is DueForClaim.
		require.NoError(t, db.WriteTx(ctx, func(tx *storage.Tx) error {
			var err error
			applied, rows, err = tx.CompleteThenDue(nil, done.Add(time.Second), "email_main", 10)
			return err
		}))
		require.Empty(t, applied)
		require.Equal(t, []int64{all[2], all[3], all[1]}, []int64{rows[0].ID, rows[1].ID, rows[2].ID}, "the retry is due now, last by not_before")
	})
}

func TestOutboxDeferFinishAndExpiredLeases(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		enqueue(t, db, outboxRow("k1", "c1"), outboxRow("k2", "c2"), outboxRow("k3", "c3"), outboxRow("k4", "c4"))
		all := ids(due(t, db, t0, 10))
		require.Len(t, all, 4)
		k1, k2, k3, k4 := all[0], all[1], all[2], all[3]

		// k3 and k4 are claimed: Defer and Finish leave them alone.
		require.Equal(t, []int64{k3}, claim(t, db, []int64{k3}, "A", t0, t0.Add(time.Minute)))
		require.Equal(t, []int64{k4}, claim(t, db, []int64{k4}, "B", t0, t0.Add(5*time.Minute)))
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			if err := tx.Defer([]int64{k1, k3}, t0.Add(11*time.Hour), "quiet hours"); err != nil {
				return err
			}
			return tx.Finish([]int64{k2, k4}, storage.OutboxSkipped, "suppressed: hard bounce", t0)
		}))
		r1 := byKey(t, db, "k1")
		require.Equal(t, storage.OutboxPending, r1.State)
		require.Equal(t, t0.Add(11*time.Hour), r1.NotBefore)
		require.Equal(t, 1, r1.Deferrals)
		require.Equal(t, "quiet hours", r1.DeferReason)
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			return tx.Defer([]int64{k1}, t0.Add(24*time.Hour), "frequency cap")
		}))
		r1 = byKey(t, db, "k1")
		require.Equal(t, 2, r1.Deferrals)
		require.Equal(t, "frequency cap", r1.DeferReason)
		require.Equal(t, t0.Add(24*time.Hour), r1.NotBefore)

		r2 := byKey(t, db, "k2")
		require.Equal(t, storage.OutboxSkipped, r2.State)
		require.Equal(t, "suppressed: hard bounce", r2.Reason)
		require.Equal(t, t0, r2.Done)
		for _, k := range []string{"k3", "k4"} {
			r := byKey(t, db, k)
			require.Equal(t, storage.OutboxSending, r.State, k)
			require.Zero(t, r.Deferrals, k)
			require.Empty(t, r.Reason, k)
		}

		expired, err := db.ExpiredLeases(ctx, t0.Add(2*time.Minute), false, 100)
		require.NoError(t, err)
		require.Equal(t, []int64{k3}, ids(expired))
		require.Equal(t, "A", expired[0].LeaseToken)
		expired, err = db.ExpiredLeases(ctx, t0.Add(10*time.Minute), false, 100)
		require.NoError(t, err)
		require.Equal(t, []int64{k3, k4}, ids(expired))
		expired, err = db.ExpiredLeases(ctx, t0, true, 100)
		require.NoError(t, err)
		require.Equal(t, []int64{k3, k4}, ids(expired), "all: every sending row, whatever its lease")
		expired, err = db.ExpiredLeases(ctx, t0.Add(10*time.Minute), false, 1)
		require.NoError(t, err)
		require.Len(t, expired, 1)
	})
}

func TestAssignmentsKeepTheirArm(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		put := func(as ...storage.Assignment) {
			require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error { return tx.PutAssignments(as) }))
		}
		put(storage.Assignment{Campaign: "winback", CustomerID: "c1", Arm: "a", Epoch: 0, Assigned: t0, Last: t0},
			storage.Assignment{Campaign: "winback", CustomerID: "c2", Arm: "holdout", Holdout: true, Assigned: t0, Last: t0})
		put(storage.Assignment{Campaign: "winback", CustomerID: "c1", Arm: "b", Epoch: 1, Assigned: t0.Add(time.Hour), Last: t0.Add(time.Hour)})
		a, err := db.Assignment(ctx, "winback", "c1")
		require.NoError(t, err)
		require.Equal(t, storage.Assignment{Campaign: "winback", CustomerID: "c1", Arm: "a", Epoch: 0, Assigned: t0, Last: t0.Add(time.Hour), Occurrences: 2}, a)
		h, err := db.Assignment(ctx, "winback", "c2")
		require.NoError(t, err)
		require.True(t, h.Holdout)
		_, err = db.Assignment(ctx, "winback", "c3")
		require.ErrorIs(t, err, storage.ErrNotFound)
		_, err = db.Assignment(ctx, "other", "c1")
		require.ErrorIs(t, err, storage.ErrNotFound)
	})
}

// TestDueOutboxSkipLocked: two transactions taking due rows at once get
// disjoint rows, and the second does not wait for the first.
func TestDueOutboxSkipLocked(t *testing.T) {
	db := storagetest.OpenPostgres(t)
	ctx := context.Background()
	var rows []storage.OutboxRow
	for i := range 10 {
		rows = append(rows, outboxRow(fmt.Sprintf("k%02d", i), fmt.Sprintf("c%02d", i)))
	}
	enqueue(t, db, rows...)

	held := make(chan []int64)
	release := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- db.Tx(ctx, func(tx *storage.Tx) error {
			got, err := tx.DueOutbox("email_main", t0, 4)
			if err != nil {
				return err
			}
			held <- ids(got)
			<-release
			return nil
		})
	}()
	var first []int64
	select {
	case first = <-held:
	case err := <-errc:
		t.Fatalf("first transaction: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("first transaction did not take rows")
	}
	require.Len(t, first, 4)

	// The second transaction runs while the first holds its rows: with
	// SKIP LOCKED it returns at once with the other six.
	ctx2, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var second []storage.OutboxRow
	require.NoError(t, db.Tx(ctx2, func(tx *storage.Tx) error {
		var err error
		second, err = tx.DueOutbox("email_main", t0, 10)
		return err
	}))
	close(release)
	require.NoError(t, <-errc)
	require.Len(t, second, 6)
	for _, id := range ids(second) {
		require.NotContains(t, first, id)
	}
}

// TestLockContactsSerializes: a second transaction locking a recipient the
// first holds waits until the first commits; other recipients, and the
// same recipient on another kind, do not wait.
func TestLockContactsSerializes(t *testing.T) {
	db, raw := openRaw(t, storagetest.PostgresConfig(t))
	ctx := context.Background()

	locked := make(chan struct{})
	release := make(chan struct{})
	var mu sync.Mutex
	var order []string
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, s)
	}
	first := make(chan error, 1)
	go func() {
		first <- db.Tx(ctx, func(tx *storage.Tx) error {
			if err := tx.LockContacts("email", []string{"c1", "c2"}); err != nil {
				return err
			}
			close(locked)
			<-release
			note("first commits")
			return nil
		})
	}()
	select {
	case <-locked:
	case err := <-first:
		t.Fatalf("first transaction: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("first transaction did not lock")
	}

	// Not contended: other recipients, or c1 on sms.
	ctx2, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, db.Tx(ctx2, func(tx *storage.Tx) error { return tx.LockContacts("email", []string{"c3", "c4"}) }))
	require.NoError(t, db.Tx(ctx2, func(tx *storage.Tx) error { return tx.LockContacts("sms", []string{"c1"}) }))

	second := make(chan error, 1)
	go func() {
		second <- db.Tx(ctx, func(tx *storage.Tx) error {
			// Listed in another order: locks are taken sorted, so two
			// claims cannot deadlock.
			if err := tx.LockContacts("email", []string{"c9", "c1"}); err != nil {
				return err
			}
			note("second locked")
			return nil
		})
	}()
	// Wait until PostgreSQL shows the second transaction waiting on an
	// advisory lock.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int64
		require.NoError(t, raw.Raw(`SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting).Error)
		if waiting > 0 {
			break
		}
		select {
		case err := <-second:
			t.Fatalf("second transaction finished while the first held the lock: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("second transaction never waited on the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	require.NoError(t, <-first)
	select {
	case err := <-second:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("second transaction still waiting after the first committed")
	}
	require.Equal(t, []string{"first commits", "second locked"}, order)
}

func TestRecordDeliveryEvents(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		enqueue(t, db, outboxRow("unk1", "c1"), outboxRow("unk2", "c2"), outboxRow("sent", "c3"), outboxRow("pend", "c4"))
		all := ids(due(t, db, t0, 10))
		rows, err := db.OutboxByKeys(ctx, []string{"unk1", "unk2", "sent", "pend"})
		require.NoError(t, err)
		toClaim := []int64{rows["unk1"].ID, rows["unk2"].ID, rows["sent"].ID}
		require.Len(t, claim(t, db, toClaim, "A", t0, t0.Add(time.Minute)), 3)
		_, err = db.Complete(ctx, []storage.Completion{
			{ID: rows["unk1"].ID, Token: "A", State: storage.OutboxUnknown, Reason: "timeout"},
			{ID: rows["unk2"].ID, Token: "A", State: storage.OutboxUnknown, Reason: "timeout"},
			{ID: rows["sent"].ID, Token: "A", State: storage.OutboxSent, ProviderID: "p-3"},
		}, t0)
		require.NoError(t, err)
		require.Len(t, all, 4)

		resolve := func(e storage.DeliveryEvent) string {
			switch e.Type {
			case "dropped":
				return storage.OutboxFailed
			case "deferred":
				return ""
			}
			return storage.OutboxSent
		}
		ev := func(id, key, typ string) storage.DeliveryEvent {
			return storage.DeliveryEvent{Channel: "email_main", EventID: id, Key: key, Type: typ, Time: t0.Add(time.Minute)}
		}
		now := t0.Add(2 * time.Minute)
		fresh, err := db.RecordDeliveryEvents(ctx, []storage.DeliveryEvent{
			ev("e1", "unk1", "delivered"),
			ev("e2", "unk2", "dropped"),
			ev("e3", "sent", "opened"),
			ev("e4", "pend", "delivered"), // a pending row is not resolved
			ev("e5", "", "delivered"),     // no row known: stored, not fresh
		}, resolve, now)
		require.NoError(t, err)
		require.Equal(t, []string{"e1", "e2", "e3", "e4"}, eventIDs(fresh))

		r := byKey(t, db, "unk1")
		require.Equal(t, storage.OutboxSent, r.State)
		require.Equal(t, "resolved by a delivery event: delivered", r.Reason)
		require.Equal(t, "delivered", r.Delivery)
		require.Equal(t, now, r.Done)
		r = byKey(t, db, "unk2")
		require.Equal(t, storage.OutboxFailed, r.State)
		require.Equal(t, "dropped", r.Delivery)
		r = byKey(t, db, "sent")
		require.Equal(t, storage.OutboxSent, r.State)
		require.Equal(t, "p-3", r.ProviderID)
		require.Equal(t, "opened", r.Delivery)
		r = byKey(t, db, "pend")
		require.Equal(t, storage.OutboxPending, r.State)
		require.Equal(t, "delivered", r.Delivery)

		// The same events again (a provider retrying its webhook): none is
		// new and nothing changes; a new event on a resolved row changes
		// only its latest delivery type.
		fresh, err = db.RecordDeliveryEvents(ctx, []storage.DeliveryEvent{
			ev("e1", "unk1", "delivered"), ev("e2", "unk2", "dropped"), ev("e6", "unk2", "delivered"),
		}, resolve, now.Add(time.Minute))
		require.NoError(t, err)
		require.Equal(t, []string{"e6"}, eventIDs(fresh))
		r = byKey(t, db, "unk2")
		require.Equal(t, storage.OutboxFailed, r.State, "only unknown rows are resolved")
		require.Equal(t, "delivered", r.Delivery)
		// Event ids are per channel.
		other := ev("e1", "unk1", "clicked")
		other.Channel = "email_other"
		fresh, err = db.RecordDeliveryEvents(ctx, []storage.DeliveryEvent{other}, resolve, now)
		require.NoError(t, err)
		require.Len(t, fresh, 1)

		byRow, err := db.DeliveryEventsOf(ctx, []string{"unk1", "unk2"})
		require.NoError(t, err)
		require.Len(t, byRow["unk1"], 2)
		require.Len(t, byRow["unk2"], 2)
		keys, err := db.KeysByProviderID(ctx, "email_main", []string{"p-3", "p-none"})
		require.NoError(t, err)
		require.Equal(t, map[string]string{"p-3": "sent"}, keys)
	})
}

// TestUnindexedProviderIDs: a completion marked Unindexed (a channel with
// no delivery events) keeps its provider id on the row but
// KeysByProviderID does not find it; an indexed one is found. Both the
// statement for a uniform batch and the one for mixed outcomes are used.
func TestUnindexedProviderIDs(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		keys := []string{"u1", "u2", "i1", "i2", "m1", "m2"}
		var rows []storage.OutboxRow
		for i, k := range keys {
			rows = append(rows, outboxRow(k, fmt.Sprintf("c%d", i)))
		}
		enqueue(t, db, rows...)
		byKey, err := db.OutboxByKeys(ctx, keys)
		require.NoError(t, err)
		var all []int64
		for _, k := range keys {
			all = append(all, byKey[k].ID)
		}
		require.Len(t, claim(t, db, all, "A", t0, t0.Add(time.Minute)), len(keys))
		sent := func(k string, unindexed bool) storage.Completion {
			return storage.Completion{ID: byKey[k].ID, Token: "A", State: storage.OutboxSent, ProviderID: "p-" + k, Unindexed: unindexed}
		}
		// Uniform batches: one statement for the batch.
		applied, err := db.Complete(ctx, []storage.Completion{sent("u1", true), sent("u2", true)}, t0)
		require.NoError(t, err)
		require.Len(t, applied, 2)
		applied, err = db.Complete(ctx, []storage.Completion{sent("i1", false), sent("i2", false)}, t0)
		require.NoError(t, err)
		require.Len(t, applied, 2)
		// Mixed: one unindexed, one indexed, in the general statement.
		applied, err = db.Complete(ctx, []storage.Completion{sent("m1", true), sent("m2", false)}, t0)
		require.NoError(t, err)
		require.Len(t, applied, 2)

		found, err := db.KeysByProviderID(ctx, "email_main", []string{"p-u1", "p-u2", "p-i1", "p-i2", "p-m1", "p-m2"})
		require.NoError(t, err)
		require.Equal(t, map[string]string{"p-i1": "i1", "p-i2": "i2", "p-m2": "m2"}, found)
		after, err := db.OutboxByKeys(ctx, keys)
		require.NoError(t, err)
		for _, k := range keys {
			require.Equal(t, storage.OutboxSent, after[k].State, k)
			require.Equal(t, "p-"+k, after[k].ProviderID, "%s keeps its provider id", k)
		}
	})
}

func eventIDs(evs []storage.DeliveryEvent) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.EventID)
	}
	return out
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestForgetLeavesOnlyHashedSuppressions erases a customer with data in
// every table and then reads every table in full: neither the id nor the
// address appears anywhere, the hashed suppressions do, and another
// customer's data is untouched.
func TestForgetLeavesOnlyHashedSuppressions(t *testing.T) {
	runRaw(t, func(t *testing.T, db *storage.DB, raw *gorm.DB) {
		ctx := context.Background()
		const (
			id    = "cust-forget-7731"
			email = "forget.me.7731@example.com"
			other = "cust-keep-1"
		)
		seed := func(cid, addr string) {
			require.NoError(t, db.UpsertCustomers(ctx, []storage.Customer{{ID: cid, Traits: []byte(`{"email":"` + addr + `","first_name":"Ann"}`)}}))
			require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
				if _, err := tx.InsertEvents([]storage.Event{{Source: "shop", ID: "ev-" + cid, CustomerID: cid, Name: "purchase", Time: t0, Value: 12.5, HasValue: true}}); err != nil {
					return err
				}
				if err := tx.AddRollups([]storage.Rollup{{CustomerID: cid, Name: "purchase", Day: 20000, Count: 1, Sum: 12.5, First: t0, Last: t0}}); err != nil {
					return err
				}
				if err := tx.InsertConsents([]storage.Consent{{CustomerID: cid, Kind: "email", Status: storage.ConsentOptIn, Time: t0, Source: "shop", Basis: "signup"}}); err != nil {
					return err
				}
				pass, err := tx.BeginPass(storage.PassFull, t0)
				if err != nil {
					return err
				}
				if err := tx.ApplyDiff("vip", []string{cid}, nil, t0, pass); err != nil {
					return err
				}
				if err := tx.FinishPass(pass, 1, 1); err != nil {
					return err
				}
				if err := tx.PutAssignments([]storage.Assignment{{Campaign: "winback", CustomerID: cid, Arm: "a", Assigned: t0, Last: t0}}); err != nil {
					return err
				}
				_, err = tx.Enqueue([]storage.OutboxRow{outboxRow("key-"+sha(cid)[:8], cid)})
				return err
			}))
			_, err := db.RecordDeliveryEvents(ctx, []storage.DeliveryEvent{{Channel: "email_main", EventID: "d-" + cid, Key: "key-" + sha(cid)[:8],
				Type: "delivered", Time: t0}}, func(storage.DeliveryEvent) string { return "" }, t0)
			require.NoError(t, err)
		}
		seed(id, email)
		seed(other, "keep@example.com")
		require.True(t, dbContains(t, raw, id), "seeded")
		require.True(t, dbContains(t, raw, email), "seeded")

		keep := []storage.Suppression{
			{Kind: "all", Hash: sha("customer\x00" + id), Reason: "erased (forget)", Source: "forget", Created: t0},
			{Kind: "all", Hash: sha("address\x00" + email), Reason: "erased (forget)", Source: "forget", Created: t0},
		}
		found, err := db.Forget(ctx, id, keep)
		require.NoError(t, err)
		require.True(t, found)

		require.False(t, dbContains(t, raw, id), "the id is gone from every table")
		require.False(t, dbContains(t, raw, email), "the address is gone from every table")
		require.False(t, dbContains(t, raw, "key-"+sha(id)[:8]), "its outbox keys and delivery events are gone")
		_, err = db.GetCustomer(ctx, id)
		require.ErrorIs(t, err, storage.ErrNotFound)
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			sup, err := tx.Suppressions("email", []string{keep[0].Hash, keep[1].Hash})
			if err != nil {
				return err
			}
			require.Len(t, sup, 2)
			return nil
		}))

		// The other customer is untouched.
		require.True(t, dbContains(t, raw, other))
		out, err := db.OutboxOf(ctx, other, 10)
		require.NoError(t, err)
		require.Len(t, out, 1)
		cs, err := db.Consents(ctx, other)
		require.NoError(t, err)
		require.Len(t, cs, 1)
		_, err = db.Assignment(ctx, "winback", other)
		require.NoError(t, err)
		members := 0
		require.NoError(t, db.EachSegmentMember(ctx, "vip", func(_, _ string) error { members++; return nil }))
		require.Equal(t, 1, members)

		// Forgetting again finds nothing and keeps the suppressions.
		found, err = db.Forget(ctx, id, keep)
		require.NoError(t, err)
		require.False(t, found)
	})
}

// dbContains reports whether any value in any table contains s.
func dbContains(t *testing.T, raw *gorm.DB, s string) bool {
	t.Helper()
	var tables []string
	if raw.Dialector.Name() == "sqlite" {
		require.NoError(t, raw.Raw(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`).Scan(&tables).Error)
	} else {
		require.NoError(t, raw.Raw(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&tables).Error)
	}
	require.Contains(t, tables, "outbox")
	for _, table := range tables {
		rows, err := raw.Raw(`SELECT * FROM ` + table).Rows()
		require.NoError(t, err)
		cols, err := rows.Columns()
		require.NoError(t, err)
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			require.NoError(t, rows.Scan(ptrs...))
			for _, v := range vals {
				var str string
				switch v := v.(type) {
				case []byte:
					str = string(v)
				case string:
					str = v
				default:
					str = fmt.Sprint(v)
				}
				if strings.Contains(str, s) {
					rows.Close()
					return true
				}
			}
		}
		require.NoError(t, rows.Err())
		rows.Close()
	}
	return false
}

// TestCampaignArms counts a campaign's arms: assigned per epoch, matured
// members (their goal window closed) and conversions inside the window,
// outbox states and reasons, deferrals and delivery events.
func TestCampaignArms(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const within = 7 * 24 * time.Hour
		now := t0.Add(30 * 24 * time.Hour)
		old := now.Add(-10 * 24 * time.Hour) // matured: window closed 3 days ago
		young := now.Add(-2 * 24 * time.Hour)
		as := []storage.Assignment{
			{Campaign: "winback", CustomerID: "a1", Arm: "a", Assigned: old, Last: old},                      // converts in window
			{Campaign: "winback", CustomerID: "a2", Arm: "a", Assigned: old, Last: old},                      // converts after the window
			{Campaign: "winback", CustomerID: "a3", Arm: "a", Assigned: old, Last: old},                      // bought before assignment
			{Campaign: "winback", CustomerID: "a4", Arm: "a", Assigned: young, Last: young, Epoch: 1},        // not matured, converted
			{Campaign: "winback", CustomerID: "b1", Arm: "b", Assigned: old, Last: old},                      // converts twice in window
			{Campaign: "winback", CustomerID: "h1", Arm: "holdout", Holdout: true, Assigned: old, Last: old}, // converts in window
			{Campaign: "winback", CustomerID: "h2", Arm: "holdout", Holdout: true, Assigned: old, Last: old},
			{Campaign: "other", CustomerID: "a1", Arm: "x", Assigned: old, Last: old},
		}
		evs := []storage.Event{
			{Source: "shop", ID: "1", CustomerID: "a1", Name: "purchase", Time: old.Add(24 * time.Hour), Value: 10, HasValue: true},
			{Source: "shop", ID: "2", CustomerID: "a1", Name: "page_view", Time: old.Add(time.Hour)},
			{Source: "shop", ID: "3", CustomerID: "a2", Name: "purchase", Time: old.Add(within), Value: 99, HasValue: true}, // window is [assigned, assigned+within)
			{Source: "shop", ID: "4", CustomerID: "a3", Name: "purchase", Time: old.Add(-time.Hour), Value: 99, HasValue: true},
			{Source: "shop", ID: "5", CustomerID: "a4", Name: "purchase", Time: young.Add(time.Hour), Value: 99, HasValue: true},
			{Source: "shop", ID: "6", CustomerID: "b1", Name: "purchase", Time: old.Add(time.Hour), Value: 5, HasValue: true},
			{Source: "shop", ID: "7", CustomerID: "b1", Name: "purchase", Time: old.Add(2 * time.Hour), Value: 7.5, HasValue: true},
			{Source: "shop", ID: "8", CustomerID: "h1", Name: "purchase", Time: old.Add(within - time.Millisecond), Value: 20, HasValue: true},
		}
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			if err := tx.EnsureCustomers([]string{"a1", "a2", "a3", "a4", "b1", "h1", "h2"}); err != nil {
				return err
			}
			if err := tx.PutAssignments(as); err != nil {
				return err
			}
			_, err := tx.InsertEvents(evs)
			return err
		}))
		row := func(key, cust, arm string) storage.OutboxRow {
			r := outboxRow(key, cust)
			r.Arm = arm
			return r
		}
		enqueue(t, db, row("ka1", "a1", "a"), row("ka2", "a2", "a"), row("ka3", "a3", "a"), row("ka4", "a4", "a"), row("kb1", "b1", "b"))
		rows, err := db.OutboxByKeys(ctx, []string{"ka1", "ka2", "ka3", "ka4", "kb1"})
		require.NoError(t, err)
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			if err := tx.Finish([]int64{rows["ka3"].ID}, storage.OutboxSkipped, "consent: opted out", old); err != nil {
				return err
			}
			return tx.Defer([]int64{rows["ka4"].ID, rows["ka1"].ID}, old.Add(time.Hour), "quiet hours")
		}))
		claimed := claim(t, db, []int64{rows["ka1"].ID, rows["ka2"].ID, rows["kb1"].ID}, "A", old, old.Add(time.Minute))
		require.Len(t, claimed, 3)
		_, err = db.Complete(ctx, []storage.Completion{
			{ID: rows["ka1"].ID, Token: "A", State: storage.OutboxSent},
			{ID: rows["ka2"].ID, Token: "A", State: storage.OutboxFailed, Reason: "550 no such user"},
			{ID: rows["kb1"].ID, Token: "A", State: storage.OutboxSent},
		}, old)
		require.NoError(t, err)
		ev := func(id, key, typ string) storage.DeliveryEvent {
			return storage.DeliveryEvent{Channel: "email_main", EventID: id, Key: key, Type: typ, Time: old}
		}
		_, err = db.RecordDeliveryEvents(ctx, []storage.DeliveryEvent{
			ev("d1", "ka1", "delivered"), ev("d2", "ka1", "opened"), ev("d3", "ka1", "opened"), ev("d4", "kb1", "delivered"),
		}, func(storage.DeliveryEvent) string { return "" }, old)
		require.NoError(t, err)

		arms, err := db.CampaignArms(ctx, "winback", "purchase", within, now)
		require.NoError(t, err)
		require.Len(t, arms, 3)
		a := arms["a"]
		require.Equal(t, int64(4), a.Assigned)
		require.Equal(t, map[int]int64{0: 3, 1: 1}, a.AssignedByEpoch)
		require.Equal(t, int64(3), a.Matured, "a4 was assigned 2 days ago: its 7-day window is open")
		require.Equal(t, int64(1), a.Converted, "a1 only: a2 bought at the window's end, a3 before assignment, a4 not matured")
		require.InDelta(t, 10, a.Revenue, 1e-9)
		require.Equal(t, map[string]int64{storage.OutboxSent: 1, storage.OutboxFailed: 1, storage.OutboxSkipped: 1, storage.OutboxPending: 1}, a.States)
		require.Equal(t, map[string]int64{"consent: opted out": 1}, a.Skipped)
		require.Equal(t, map[string]int64{"550 no such user": 1}, a.Failed)
		require.Equal(t, int64(2), a.Deferred)
		require.Equal(t, map[string]int64{"delivered": 1, "opened": 1}, a.Events, "rows with at least one event of a type")
		require.False(t, a.Holdout)

		b := arms["b"]
		require.Equal(t, int64(1), b.Converted)
		require.InDelta(t, 12.5, b.Revenue, 1e-9)
		h := arms["holdout"]
		require.True(t, h.Holdout)
		require.Equal(t, int64(2), h.Assigned)
		require.Equal(t, int64(2), h.Matured)
		require.Equal(t, int64(1), h.Converted)
		require.Empty(t, h.States, "the holdout gets no messages")

		// Without a goal nothing is matured or converted.
		arms, err = db.CampaignArms(ctx, "winback", "", within, now)
		require.NoError(t, err)
		require.Zero(t, arms["a"].Matured)
		require.Zero(t, arms["a"].Converted)
		require.Equal(t, int64(4), arms["a"].Assigned)
	})
}

func TestSuppressionsAndConsentsOf(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		require.NoError(t, db.AddSuppressions(ctx, []storage.Suppression{
			{Kind: "email", Hash: "h-email", Reason: "hard bounce", Source: "sg", Created: t0},
			{Kind: "all", Hash: "h-all", Reason: "erased", Source: "forget", Created: t0},
			{Kind: "sms", Hash: "h-sms", Reason: "STOP", Source: "tw", Created: t0},
		}))
		// An entry already listed keeps its first reason.
		require.NoError(t, db.AddSuppressions(ctx, []storage.Suppression{{Kind: "email", Hash: "h-email", Reason: "spam report", Source: "sg", Created: t0}}))
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			sup, err := tx.Suppressions("email", []string{"h-email", "h-all", "h-sms", "h-none"})
			if err != nil {
				return err
			}
			require.Len(t, sup, 2)
			require.Equal(t, "hard bounce", sup["h-email"].Reason)
			require.Equal(t, "all", sup["h-all"].Kind)

			// Consents come oldest first by the source's time, whatever
			// the order they were recorded in.
			if err := tx.InsertConsents([]storage.Consent{
				{CustomerID: "c1", Kind: "email", Status: storage.ConsentOptOut, Time: t0.Add(time.Hour), Source: "link"},
				{CustomerID: "c1", Kind: "email", Status: storage.ConsentOptIn, Time: t0, Source: "crm"},
				{CustomerID: "c2", Kind: "all", Status: storage.ConsentOptIn, Time: t0, Source: "crm"},
			}); err != nil {
				return err
			}
			cs, err := tx.ConsentsOf([]string{"c1", "c2", "c3"})
			if err != nil {
				return err
			}
			require.Len(t, cs, 2)
			require.Equal(t, []string{storage.ConsentOptIn, storage.ConsentOptOut}, []string{cs["c1"][0].Status, cs["c1"][1].Status})
			require.Equal(t, t0, cs["c1"][0].Time)
			return nil
		}))

		// PolicyInputs reads the same in one statement, with recent
		// contacts when asked for.
		enqueue(t, db, outboxRow("k1", "c1"), outboxRow("k2", "c1"), outboxRow("k3", "c2"), outboxRow("k4", "c3"))
		all := ids(due(t, db, t0, 10))
		claim(t, db, all[:3], "A", t0, t0.Add(time.Minute))
		claim(t, db, all[3:], "B", t0.Add(-48*time.Hour), t0.Add(time.Minute))
		customers, hashes := []string{"c1", "c2", "c3"}, []string{"h-email", "h-all", "h-sms", "h-none"}
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			since := t0.Add(-time.Hour)
			sup, err := tx.Suppressions("email", hashes)
			require.NoError(t, err)
			cs, err := tx.ConsentsOf(customers)
			require.NoError(t, err)
			recent, err := tx.RecentContacts("email", customers, since)
			require.NoError(t, err)
			require.Len(t, recent["c1"], 2)
			require.Empty(t, recent["c3"], "claimed before since")

			in, err := tx.PolicyInputs("email", customers, hashes, true, since)
			require.NoError(t, err)
			require.Equal(t, sup, in.Suppressions)
			for _, c := range customers {
				require.Equal(t, len(cs[c]), len(in.Consents[c]), c)
				for i := range cs[c] {
					want, got := cs[c][i], in.Consents[c][i]
					require.Equal(t, []any{want.Seq, want.CustomerID, want.Kind, want.Status, want.Time, want.Source, want.Basis},
						[]any{got.Seq, got.CustomerID, got.Kind, got.Status, got.Time, got.Source, got.Basis})
				}
				require.Equal(t, recent[c], in.Recent[c], c)
			}
			in, err = tx.PolicyInputs("email", customers, hashes, false, since)
			require.NoError(t, err)
			require.Empty(t, in.Recent, "no cap: no recent contacts")
			require.Equal(t, sup, in.Suppressions)
			return nil
		}))
	})
}
