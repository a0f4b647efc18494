package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

func TestMigrationsAppliedAndRecorded(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		ms, err := storage.Migrations(db.Dialect())
		require.NoError(t, err)
		require.NotEmpty(t, ms)
		applied, err := db.AppliedMigrations(ctx)
		require.NoError(t, err)
		want := make([]int, len(ms))
		for i, m := range ms {
			want[i] = m.Version
		}
		require.Equal(t, want, applied)
	})
}

func TestReopenDoesNotReapplyMigrations(t *testing.T) {
	cfg := storagetest.SQLiteConfig(t)
	ctx := context.Background()
	db, err := storage.Open(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, db.UpsertCustomers(ctx, []storage.Customer{{ID: "c1", Traits: json.RawMessage(`{"plan":"pro"}`)}}))
	require.NoError(t, db.Close())

	db, err = storage.Open(ctx, cfg)
	require.NoError(t, err)
	defer db.Close()
	n, err := db.CountCustomers(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

func TestMigrationsHaveSameVersionsOnBothDialects(t *testing.T) {
	lite, err := storage.Migrations(storage.SQLite)
	require.NoError(t, err)
	pg, err := storage.Migrations(storage.Postgres)
	require.NoError(t, err)
	require.Equal(t, len(lite), len(pg))
	for i := range lite {
		require.Equal(t, lite[i].Name, pg[i].Name)
	}
}

func TestUpsertMergesTraits(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		require.NoError(t, db.UpsertCustomers(ctx, []storage.Customer{
			{ID: "c1", Traits: json.RawMessage(`{"plan":"pro","city":"Lyon","age":41}`)},
			{ID: "c2", Traits: json.RawMessage(`{"plan":"free"}`)},
		}))
		// c1: city replaced, age removed by null, plan kept, tags added.
		require.NoError(t, db.UpsertCustomers(ctx, []storage.Customer{
			{ID: "c1", Traits: json.RawMessage(`{"city":"Nantes","age":null,"tags":["a","b"]}`)},
		}))
		c1, err := db.GetCustomer(ctx, "c1")
		require.NoError(t, err)
		var got map[string]any
		require.NoError(t, json.Unmarshal(c1.Traits, &got))
		require.Equal(t, map[string]any{"plan": "pro", "city": "Nantes", "tags": []any{"a", "b"}}, got)
		require.False(t, c1.CreatedAt.IsZero())
		require.False(t, c1.UpdatedAt.Before(c1.CreatedAt))

		_, err = db.GetCustomer(ctx, "nobody")
		require.True(t, errors.Is(err, storage.ErrNotFound), "got %v", err)
	})
}

func TestDeleteAndEach(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		var cs []storage.Customer
		for i := range 250 { // more than one insert chunk
			cs = append(cs, storage.Customer{ID: fmt.Sprintf("c%03d", i), Traits: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
		}
		require.NoError(t, db.UpsertCustomers(ctx, cs))
		require.NoError(t, db.DeleteCustomers(ctx, []string{"c000", "c100", "missing"}))
		var ids []string
		require.NoError(t, db.EachCustomer(ctx, func(c storage.Customer) error {
			var tr struct{ N int }
			if err := json.Unmarshal(c.Traits, &tr); err != nil {
				return err
			}
			if fmt.Sprintf("c%03d", tr.N) != c.ID {
				return fmt.Errorf("customer %s has traits of %d", c.ID, tr.N)
			}
			ids = append(ids, c.ID)
			return nil
		}))
		require.Len(t, ids, 248)
		require.Equal(t, "c001", ids[0])
		require.NotContains(t, ids, "c100")
	})
}

// TestConcurrentWriters: 8 writers x 1,000 writes each must all succeed; on
// SQLite none may fail with "database is locked".
func TestConcurrentWriters(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const writers, writes = 8, 1000
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range writes {
					// Every writer also updates a shared row, so writes truly contend.
					err := db.UpsertCustomers(ctx, []storage.Customer{
						{ID: fmt.Sprintf("w%d-%d", w, i), Traits: json.RawMessage(`{"w":1}`)},
						{ID: "shared", Traits: json.RawMessage(fmt.Sprintf(`{"last":%d}`, w))},
					})
					if err != nil {
						errs <- fmt.Errorf("writer %d write %d: %w", w, i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NotContains(t, err.Error(), "database is locked")
			require.NoError(t, err)
		}
		n, err := db.CountCustomers(ctx)
		require.NoError(t, err)
		require.EqualValues(t, writers*writes+1, n)
	})
}

func TestOpenUnwritableSQLitePath(t *testing.T) {
	// A path below a regular file cannot be created, even by root.
	dir := t.TempDir()
	file := filepath.Join(dir, "not-a-dir")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	_, err := storage.Open(context.Background(), storage.Config{Driver: storage.SQLite, DSN: filepath.Join(file, "cohort.db")})
	require.Error(t, err)
	require.Contains(t, err.Error(), "storage.dsn: cannot create directory "+file)
	require.Contains(t, err.Error(), "choose a writable path")
}

func TestOpenUnreachablePostgres(t *testing.T) {
	// Port 1 on loopback: nothing listens there.
	_, err := storage.Open(context.Background(), storage.Config{Driver: storage.Postgres, DSN: "postgres://cohort:secret@127.0.0.1:1/cohort?connect_timeout=5"})
	require.Error(t, err)
	msg := err.Error()
	require.Contains(t, msg, `cannot reach PostgreSQL at 127.0.0.1:1 database "cohort" as user "cohort"`)
	require.Contains(t, msg, "check storage.dsn")
	require.False(t, strings.Contains(msg, "secret"), "password leaked: %s", msg)
}
