package daemon

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// gatedStore is real storage whose first transaction waits for release, so
// a test can queue callers behind a commit in progress. It counts
// transactions.
type gatedStore struct {
	*storage.DB
	release chan struct{}
	once    sync.Once
	txs     atomic.Int64
}

func (s *gatedStore) Tx(ctx context.Context, fn func(*storage.Tx) error) error {
	if s.txs.Add(1) == 1 {
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.DB.Tx(ctx, fn)
}

func (s *gatedStore) open() { s.once.Do(func() { close(s.release) }) }

// countingObserver records what committed batches changed.
type countingObserver struct {
	mu        sync.Mutex
	batches   int
	customers map[string]bool
}

func (o *countingObserver) Committed(_ context.Context, ch *ingest.Changes) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.batches++
	for _, c := range ch.Customers {
		o.customers[c.ID] = true
	}
}

type sinkFixture struct {
	sink  *webhookSink
	store *gatedStore
	obs   *countingObserver
	db    *storage.DB
	stop  func()
}

func newSinkFixture(t *testing.T, cfg storage.Config) *sinkFixture {
	t.Helper()
	db, err := storage.Open(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	store := &gatedStore{DB: db, release: make(chan struct{})}
	obs := &countingObserver{customers: map[string]bool{}}
	g := ingest.New(store, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), ingest.Options{}, obs)
	sink := &webhookSink{ingest: g, validators: map[string]*ingest.Validator{}}
	info := sdk.SourceInfo{Traits: []sdk.Trait{{Name: "plan", Type: sdk.TypeString}}, EventNames: []string{"purchase"}}
	sink.setValidator("web", ingest.NewValidator("web", info, time.Now, 24*time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	sink.start(ctx, &wg)
	stop := func() { store.open(); cancel(); wg.Wait() }
	t.Cleanup(stop)
	return &sinkFixture{sink: sink, store: store, obs: obs, db: db, stop: stop}
}

func purchase(id string) *sdk.Batch {
	return &sdk.Batch{
		Customers: []sdk.Customer{{ID: id, Traits: map[string]sdk.Value{"plan": sdk.String("pro")}}},
		Events: []sdk.Event{{ID: "ev-" + id, CustomerID: id, Name: "purchase", Time: time.Now().Add(-time.Minute),
			Value: 12, HasValue: true}},
	}
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// submitAll starts one caller per id behind a blocked first commit and
// returns their errors once the gate is opened and all have returned.
func (f *sinkFixture) submitAll(t *testing.T, ids []string) map[string]error {
	t.Helper()
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- f.sink.SourceBatch(ctx, "web", purchase("first")) }()
	waitFor(t, "the first commit to start", func() bool { return f.store.txs.Load() == 1 })

	var (
		mu   sync.Mutex
		errs = map[string]error{}
		wg   sync.WaitGroup
	)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f.sink.SourceBatch(ctx, "web", purchase(id))
			mu.Lock()
			errs[id] = err
			mu.Unlock()
		}()
	}
	waitFor(t, "every caller to queue", func() bool { return f.sink.committer().queued() == len(ids) })
	f.store.open()
	wg.Wait()
	require.NoError(t, <-first)
	return errs
}

func TestGroupCommitConcurrentCallers(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testConcurrentCallers(t, storagetest.SQLiteConfig(t)) })
	t.Run("postgres", func(t *testing.T) { testConcurrentCallers(t, storagetest.PostgresConfig(t)) })
}

func testConcurrentCallers(t *testing.T, cfg storage.Config) {
	f := newSinkFixture(t, cfg)
	var ids []string
	for i := range 100 {
		ids = append(ids, fmt.Sprintf("cus_%03d", i))
	}
	errs := f.submitAll(t, ids)
	for _, id := range ids {
		require.NoError(t, errs[id], id)
	}
	require.Equal(t, int64(2), f.store.txs.Load(), "the first call alone, then the 100 queued meanwhile as one group")
	require.Equal(t, 2, f.obs.batches, "one incremental pass per group")
	require.Len(t, f.obs.customers, 101)
	n, err := f.db.CountCustomers(context.Background())
	require.NoError(t, err)
	require.Equal(t, int64(101), n)
	rollups := 0
	require.NoError(t, f.db.EachRollup(context.Background(), func(storage.Rollup) error { rollups++; return nil }))
	require.Equal(t, 101, rollups, "every caller's event is stored once")
}

// TestSourceBatchKeepsPullCursor checks that a webhook batch never moves
// the source's pull cursor, even one committed alone that carries a cursor.
func TestSourceBatchKeepsPullCursor(t *testing.T) {
	f := newSinkFixture(t, storagetest.SQLiteConfig(t))
	f.store.open()
	ctx := context.Background()
	b := purchase("solo")
	b.Cursor, b.CaughtUp = "webhook-cursor", true
	require.NoError(t, f.sink.SourceBatch(ctx, "web", b))
	_, err := f.db.GetCustomer(ctx, "solo")
	require.NoError(t, err)
	cursor, caughtUp, err := f.db.Cursor(ctx, "web")
	require.NoError(t, err)
	require.Empty(t, cursor)
	require.False(t, caughtUp)
}

func TestGroupCommitPoisonedCallerFailsAlone(t *testing.T) {
	cfg := storagetest.SQLiteConfig(t)
	f := newSinkFixture(t, cfg)
	// A real database failure for one customer: a trigger refuses it.
	raw, err := sql.Open("sqlite", cfg.DSN)
	require.NoError(t, err)
	defer raw.Close()
	_, err = raw.Exec(`CREATE TRIGGER refuse_poison BEFORE INSERT ON customers WHEN NEW.id = 'poison'
		BEGIN SELECT RAISE(ABORT, 'customer poison is refused'); END`)
	require.NoError(t, err)
	raw.Close()

	ids := []string{"poison"}
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("good_%02d", i))
	}
	errs := f.submitAll(t, ids)
	require.ErrorContains(t, errs["poison"], "customer poison is refused")
	for _, id := range ids[1:] {
		require.NoError(t, errs[id], id)
	}
	require.Equal(t, int64(1+1+21), f.store.txs.Load(), "the first call, the failed group, then each member alone")
	_, err = f.db.GetCustomer(context.Background(), "poison")
	require.Error(t, err, "the poisoned batch is not committed")
	n, err := f.db.CountCustomers(context.Background())
	require.NoError(t, err)
	require.Equal(t, int64(21), n)
}

func TestGroupCommitCallerContext(t *testing.T) {
	f := newSinkFixture(t, storagetest.SQLiteConfig(t))
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- f.sink.SourceBatch(ctx, "web", purchase("first")) }()
	waitFor(t, "the first commit to start", func() bool { return f.store.txs.Load() == 1 })

	// A caller that gives up while queued returns at once, and its batch is
	// dropped rather than committed behind its back.
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- f.sink.SourceBatch(cctx, "web", purchase("impatient")) }()
	waitFor(t, "the caller to queue", func() bool { return f.sink.committer().queued() == 1 })
	cancel()
	select {
	case err := <-gaveUp:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(30 * time.Second):
		t.Fatal("a cancelled caller kept waiting")
	}
	// A caller queued behind it is still served.
	later := make(chan error, 1)
	go func() { later <- f.sink.SourceBatch(ctx, "web", purchase("patient")) }()
	waitFor(t, "the second caller to queue", func() bool { return f.sink.committer().queued() == 2 })
	f.store.open()
	require.NoError(t, <-first)
	require.NoError(t, <-later)
	_, err := f.db.GetCustomer(ctx, "impatient")
	require.Error(t, err, "a batch whose caller gave up before its commit is not committed")
	_, err = f.db.GetCustomer(ctx, "patient")
	require.NoError(t, err)

	// After shutdown, calls fail at once instead of hanging.
	f.stop()
	err = f.sink.SourceBatch(ctx, "web", purchase("late"))
	require.ErrorIs(t, err, errSinkStopped)
}

// TestGroupCommitKeepsOrder checks which queued batches may share a commit:
// only a prefix of the queue, of one source, whose customers do not
// conflict, within the caps.
func TestGroupCommitKeepsOrder(t *testing.T) {
	var (
		mu     sync.Mutex
		groups [][]string
	)
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	var entered atomic.Int64
	g := newGroupCommitter(func(ctx context.Context, source string, b *sdk.Batch) error {
		entered.Add(1)
		<-release
		var ids []string
		for _, c := range b.Customers {
			ids = append(ids, source+":"+c.ID)
		}
		for _, id := range b.Deletes {
			ids = append(ids, source+":-"+id)
		}
		for _, e := range b.Events {
			ids = append(ids, source+":e"+e.CustomerID)
		}
		mu.Lock()
		groups = append(groups, ids)
		mu.Unlock()
		return nil
	})
	g.maxRecords = 4
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	g.start(ctx, &wg)
	defer func() { open(); cancel(); wg.Wait() }()

	upsert := func(id string) *sdk.Batch { return &sdk.Batch{Customers: []sdk.Customer{{ID: id}}} }
	event := func(id string) *sdk.Batch { return &sdk.Batch{Events: []sdk.Event{{ID: "e", CustomerID: id}}} }
	del := func(id string) *sdk.Batch { return &sdk.Batch{Deletes: []string{id}} }
	calls := []struct {
		source string
		b      *sdk.Batch
	}{
		{"web", upsert("blocker")},                                      // committed alone while the rest queue
		{"web", upsert("a")}, {"web", event("a")}, {"web", upsert("b")}, // an event may join its customer's upsert
		{"web", upsert("a")},                   // a second upsert of a waits
		{"web", del("c")}, {"web", event("c")}, // an event after a delete waits
		{"crm", upsert("a")},                                                                                         // another source waits
		{"crm", upsert("d")}, {"crm", upsert("e")}, {"crm", upsert("f")}, {"crm", upsert("g")}, {"crm", upsert("h")}, // caps
	}
	errs := make(chan error, len(calls))
	for i, c := range calls {
		go func() { errs <- g.submit(ctx, c.source, c.b) }()
		if i == 0 {
			waitFor(t, "the first commit", func() bool { return entered.Load() == 1 })
			continue
		}
		waitFor(t, "the call to queue", func() bool { return g.queued() == i })
	}
	open()
	for range calls {
		require.NoError(t, <-errs)
	}
	require.Equal(t, [][]string{
		{"web:blocker"},
		{"web:a", "web:b", "web:ea"},
		{"web:a", "web:-c"},
		{"web:ec"},
		{"crm:a", "crm:d", "crm:e", "crm:f"},
		{"crm:g", "crm:h"},
	}, groups)
}
