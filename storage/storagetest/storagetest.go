// Package storagetest runs a storage test on every database: SQLite (a file
// under t.TempDir, never in-memory: WAL behaves differently) and PostgreSQL
// when COHORT_TEST_DATABASE_URL is set, each test on its own fresh database.
// When the variable is set but the server cannot be reached, tests fail
// rather than skip; CI always sets it.
package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cohortd/cohort/storage"
)

// EnvPostgresURL names the environment variable holding the PostgreSQL
// server URL for tests, e.g. postgres://postgres@127.0.0.1:5432/test.
const EnvPostgresURL = "COHORT_TEST_DATABASE_URL"

// Run runs fn as subtests "sqlite" and "postgres" (when configured), each
// against its own new, migrated database.
func Run(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		fn(t, OpenSQLite(t))
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, OpenPostgres(t))
	})
}

// OpenSQLite opens a new SQLite database under t.TempDir.
func OpenSQLite(t testing.TB) *storage.DB {
	t.Helper()
	cfg := SQLiteConfig(t)
	return open(t, cfg)
}

// SQLiteConfig returns the config of a new SQLite database under t.TempDir.
func SQLiteConfig(t testing.TB) storage.Config {
	return storage.Config{Driver: storage.SQLite, DSN: filepath.Join(t.TempDir(), "cohort.db"), Logger: testLogger(t)}
}

// OpenPostgres creates a throwaway PostgreSQL database, dropped at cleanup,
// and opens it. It skips when EnvPostgresURL is unset, and fails when it is
// set but the server is unreachable.
func OpenPostgres(t testing.TB) *storage.DB {
	t.Helper()
	return open(t, PostgresConfig(t))
}

// PostgresConfig creates a throwaway database and returns its config.
func PostgresConfig(t testing.TB) storage.Config {
	t.Helper()
	base := os.Getenv(EnvPostgresURL)
	if base == "" {
		t.Skipf("%s is not set: PostgreSQL tests skipped (CI sets it)", EnvPostgresURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("%s is set but PostgreSQL is unreachable: %v", EnvPostgresURL, err)
	}
	defer admin.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "cohort_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop test database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	return storage.Config{Driver: storage.Postgres, DSN: withDatabase(t, base, name), Logger: testLogger(t)}
}

// withDatabase replaces the database name in a URL or keyword DSN.
func withDatabase(t testing.TB, dsn, name string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("%s: %v", EnvPostgresURL, err)
		}
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name
}

func open(t testing.TB, cfg storage.Config) *storage.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, err := storage.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.Driver, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// testLogger sends storage logs to t.Logf.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
