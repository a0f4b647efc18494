package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// listSource sends fixed batches, then ends the stream.
type listSource struct{ batches []*sdk.Batch }

func (s *listSource) Configure(context.Context, sdk.ConfigureRequest) (sdk.SourceInfo, error) {
	return info, nil
}

func (s *listSource) Pull(_ context.Context, _ string, send func(*sdk.Batch) error) error {
	for _, b := range s.batches {
		if err := send(b); err != nil {
			return err
		}
	}
	return nil
}

// mixedBatches covers what validation and encoding must agree on: good and
// bad traits, nulls, duplicate and missing ids, deletes, events (one a
// replay), consents, batches without a cursor, and many customers.
func mixedBatches() []*sdk.Batch {
	day := now.Add(-72 * time.Hour)
	big := &sdk.Batch{Cursor: "3"}
	for i := range 230 {
		big.Customers = append(big.Customers, sdk.Customer{ID: fmt.Sprintf("bulk-%03d", i), Traits: map[string]sdk.Value{
			"plan": sdk.String([]string{"free", "pro", `"quoted" <b>&`}[i%3]), "age": sdk.Number(float64(i)), "signed_up_at": sdk.Time(day.Add(time.Duration(i) * time.Minute)),
		}})
	}
	return []*sdk.Batch{
		{
			Customers: []sdk.Customer{
				{ID: "c1", Traits: map[string]sdk.Value{"plan": sdk.String("pro"), "age": sdk.String("forty"), "shoe": sdk.Number(42)}},
				{ID: "c1", Traits: map[string]sdk.Value{"plan": sdk.String("free")}},
				{ID: "", Traits: map[string]sdk.Value{"plan": sdk.String("free")}},
				{ID: "c2", Traits: map[string]sdk.Value{"signed_up_at": sdk.Time(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)), "age": {}}},
				{ID: "ünï✓", Traits: map[string]sdk.Value{"plan": sdk.String("チーム"), "age": sdk.Number(-0.5)}},
			},
			Events: []sdk.Event{
				{ID: "e1", CustomerID: "c1", Name: "purchase", Time: day, Value: 30, HasValue: true},
				{ID: "e2", CustomerID: "ghost", Name: "purchase", Time: day.Add(time.Hour)},
			},
			Consents: []sdk.ConsentChange{{CustomerID: "c1", Kind: "Email", Status: sdk.OptIn, Time: now}},
			Cursor:   "1",
		},
		{
			Customers: []sdk.Customer{{ID: "c1", Traits: map[string]sdk.Value{"age": sdk.Number(41)}}},
			Events:    []sdk.Event{{ID: "e1", CustomerID: "c1", Name: "purchase", Time: day, Value: 30, HasValue: true}},
			Deletes:   []string{"c2", ""},
		},
		big,
		{Customers: []sdk.Customer{{ID: "bulk-007", Traits: map[string]sdk.Value{"plan": {}}}}, Cursor: "4", CaughtUp: true},
	}
}

// stored is everything a test compares after an import.
type stored struct {
	Customers map[string]string
	Rollups   []storage.Rollup
	Cursor    string
	CaughtUp  bool
}

func dump(t *testing.T, db *storage.DB) stored {
	t.Helper()
	ctx := context.Background()
	s := stored{Customers: map[string]string{}}
	require.NoError(t, db.EachCustomer(ctx, func(c storage.Customer) error {
		s.Customers[c.ID] = string(c.Traits)
		return nil
	}))
	require.NoError(t, db.EachRollup(ctx, func(r storage.Rollup) error { s.Rollups = append(s.Rollups, r); return nil }))
	var err error
	s.Cursor, s.CaughtUp, err = db.Cursor(ctx, "crm")
	require.NoError(t, err)
	return s
}

// TestPullMatchesCommit: pulling a stream in flat form, pipelined and
// grouped, stores exactly what committing its batches one by one in map
// form stores, and tells observers the same changes.
func TestPullMatchesCommit(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		byCommit := storagetest.OpenSQLite(t)
		if db.Dialect() == storage.Postgres {
			byCommit = storagetest.OpenPostgres(t)
		}
		recCommit := &recorder{}
		g, v := newIngester(byCommit, recCommit)
		for _, b := range mixedBatches() {
			require.NoError(t, g.Commit(ctx, v, b))
		}

		recPull := &recorder{}
		g, v = newIngester(db, recPull)
		require.NoError(t, g.Pull(ctx, v, &listSource{batches: mixedBatches()}, ""))

		want, got := dump(t, byCommit), dump(t, db)
		require.Equal(t, 233, len(got.Customers), "230 bulk customers, c1, the unicode one and ghost; c2 deleted")
		require.JSONEq(t, `{"age":41,"plan":"pro"}`, got.Customers["c1"])
		require.JSONEq(t, `{"age":-0.5,"plan":"チーム"}`, got.Customers["ünï✓"])
		require.JSONEq(t, `{"age":7,"signed_up_at":"2026-11-21T12:07:00.000Z"}`, got.Customers["bulk-007"])
		require.Equal(t, "4", got.Cursor)
		require.True(t, got.CaughtUp)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("stored by Pull differs from Commit one by one (-commit +pull):\n%s", diff)
		}
		// Events carry the receive time of the database that stored them.
		if diff := cmp.Diff(recCommit.got, recPull.got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("observers were told (-commit +pull):\n%s", diff)
		}
		require.True(t, g.CaughtUp("crm"))
	})
}

// failingStore fails every transaction after the first n.
type failingStore struct {
	*storage.DB
	n     int32
	calls atomic.Int32
}

var errDiskFull = errors.New("disk full")

func (s *failingStore) Tx(ctx context.Context, fn func(*storage.Tx) error) error {
	if s.calls.Add(1) > s.n {
		return errDiskFull
	}
	return s.DB.Tx(ctx, fn)
}

func TestPullStopsAtTheFirstFailedCommit(t *testing.T) {
	db := storagetest.OpenSQLite(t)
	var batches []*sdk.Batch
	for i := range 50 {
		batches = append(batches, &sdk.Batch{
			Customers: []sdk.Customer{{ID: fmt.Sprintf("c%02d", i), Traits: map[string]sdk.Value{"age": sdk.Number(float64(i))}}},
			Cursor:    fmt.Sprint(i + 1),
		})
	}
	store := &failingStore{DB: db, n: 1}
	clock := func() time.Time { return now }
	g := ingest.New(store, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), ingest.Options{Now: clock})
	v := ingest.NewValidator("crm", info, clock, 24*time.Hour)
	err := g.Pull(context.Background(), v, &listSource{batches: batches}, "")
	require.ErrorIs(t, err, errDiskFull)

	// What the one successful transaction held is stored with its cursor,
	// and nothing after it: a restart resumes exactly there.
	got := dump(t, db)
	require.NotEmpty(t, got.Cursor)
	n := 0
	_, err = fmt.Sscan(got.Cursor, &n)
	require.NoError(t, err)
	require.Equal(t, n, len(got.Customers), "customers stored with cursor %s", got.Cursor)
	for i := range n {
		require.Contains(t, got.Customers, fmt.Sprintf("c%02d", i))
	}
}

// TestPullFromCSVPluginProcess imports through the csv plugin run as a
// process, as the daemon runs it.
func TestPullFromCSVPluginProcess(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "crm.csv")
	var csv strings.Builder
	csv.WriteString("customer_id,email,plan,age,vip\n")
	const rows = 2345 // three batches of the plugin's default 1,000
	for i := range rows {
		fmt.Fprintf(&csv, "cus_%04d,user%d@example.com,%s,%d,%t\n", i, i, []string{"free", "pro"}[i%2], 20+i%50, i%10 == 0)
	}
	require.NoError(t, os.WriteFile(path, []byte(csv.String()), 0o644))

	src := sdktest.LaunchSource(t, sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/csv"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srcInfo, err := src.Configure(ctx, sdk.ConfigureRequest{Instance: "crm", Config: fmt.Appendf(nil, "path: %s\nid_column: customer_id\nemail: email\nwatch: false\n", path)})
	require.NoError(t, err)

	db := storagetest.OpenSQLite(t)
	rec := &recorder{}
	g := ingest.New(db, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), ingest.Options{}, rec)
	v := ingest.NewValidator("crm", srcInfo, time.Now, 24*time.Hour)
	require.NoError(t, g.Pull(ctx, v, src, ""))

	n, err := db.CountCustomers(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(rows), n)
	c, err := db.GetCustomer(ctx, "cus_0011")
	require.NoError(t, err)
	require.Equal(t, `{"age":31,"email":"user11@example.com","plan":"pro","vip":false}`, string(c.Traits))
	_, caughtUp, err := db.Cursor(ctx, "crm")
	require.NoError(t, err)
	require.True(t, caughtUp)
	total := 0
	for _, ch := range rec.got {
		total += len(ch.Customers)
	}
	require.Equal(t, rows, total, "observers are told of every customer, in map form")
}
