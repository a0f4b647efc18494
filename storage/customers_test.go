package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// TestUpsertCustomersAcrossStatements writes more rows than one statement
// holds, with a partial last statement, then merges into all of them.
func TestUpsertCustomersAcrossStatements(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const n = 123
		var cs []storage.Customer
		for i := range n {
			cs = append(cs, storage.Customer{ID: fmt.Sprintf("c%03d", i), Traits: json.RawMessage(fmt.Sprintf(`{"n":%d,"plan":"free"}`, i))})
		}
		cs[5].Traits = nil // no traits: stored as {}
		require.NoError(t, db.UpsertCustomers(ctx, cs))
		for i := range cs {
			cs[i].Traits = json.RawMessage(fmt.Sprintf(`{"plan":"pro","seen":%d}`, i))
		}
		require.NoError(t, db.UpsertCustomers(ctx, cs))
		count := 0
		require.NoError(t, db.EachCustomer(ctx, func(c storage.Customer) error {
			var i int
			if _, err := fmt.Sscanf(c.ID, "c%03d", &i); err != nil {
				return err
			}
			want := fmt.Sprintf(`{"n":%d,"plan":"pro","seen":%d}`, i, i)
			if i == 5 {
				want = `{"plan":"pro","seen":5}`
			}
			require.JSONEq(t, want, string(c.Traits), "customer %s", c.ID)
			require.False(t, c.CreatedAt.IsZero(), "customer %s", c.ID)
			count++
			return nil
		}))
		require.Equal(t, n, count)
		require.ErrorContains(t, db.UpsertCustomers(ctx, []storage.Customer{{ID: "ok"}, {ID: ""}}), "empty id")
	})
}

// BenchmarkUpsertCustomers writes 100,000 new customers with ~350-byte
// trait documents into SQLite, 1,000 per transaction.
func BenchmarkUpsertCustomers(b *testing.B) {
	const n = 100_000
	rows := make([]storage.Customer, n)
	for i := range rows {
		rows[i] = storage.Customer{ID: fmt.Sprintf("cus_%07d", i), Traits: []byte(fmt.Sprintf(
			`{"age":40,"app_version":"5.1.0","city":"City1","country":"DE","device":"ios","email":"user%d@example.com","gender":"f","interests":["travel"],"lifetime_value":120.5,"orders":3,"plan":"pro","score":0.5,"signed_up_at":"2025-03-04T00:00:00.000Z","vip":false}`, i))}
	}
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		db, err := storage.Open(ctx, storage.Config{Driver: storage.SQLite, DSN: filepath.Join(b.TempDir(), "cohort.db")})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for i := 0; i < n; i += 1000 {
			if err := db.UpsertCustomers(ctx, rows[i:min(i+1000, n)]); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
}
