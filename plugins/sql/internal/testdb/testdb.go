// Package testdb gives each test its own throwaway database on the
// PostgreSQL and MySQL/MariaDB servers named by environment variables, and
// drops it when the test ends.
//
//   - COHORT_TEST_DATABASE_URL: a PostgreSQL URL or key=value string, e.g.
//     postgres://postgres@127.0.0.1:5432/test
//   - COHORT_TEST_MYSQL_URL: a go-sql-driver DSN, e.g.
//     root@tcp(127.0.0.1:3306)/test
//
// A test is skipped when its variable is unset, and fails when the variable
// is set but the server cannot be reached or the database not created: CI
// sets both, so nothing is skipped silently there.
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
)

// Env vars naming the test servers.
const (
	PostgresEnv = "COHORT_TEST_DATABASE_URL"
	MySQLEnv    = "COHORT_TEST_MYSQL_URL"
)

// DB is a throwaway database.
type DB struct {
	// Driver is the plugin's driver key: "postgres" or "mysql".
	Driver string
	// DSN connects to the database, in the form the plugin's dsn takes.
	DSN string
	// Name is the database's name.
	Name string
	// SQL is a connection pool to it, closed when the test ends.
	SQL *sql.DB
}

// Postgres creates a PostgreSQL database for t.
func Postgres(t testing.TB) *DB {
	t.Helper()
	admin := os.Getenv(PostgresEnv)
	if admin == "" {
		t.Skipf("%s is not set: skipping a PostgreSQL test (set it to e.g. postgres://postgres@127.0.0.1:5432/test)", PostgresEnv)
	}
	name := newName()
	dsn, err := postgresDSN(admin, name)
	if err != nil {
		t.Fatalf("%s: %v", PostgresEnv, err)
	}
	create(t, "pgx", admin, PostgresEnv,
		`CREATE DATABASE `+name,
		`DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
	return &DB{Driver: "postgres", DSN: dsn, Name: name, SQL: connect(t, "pgx", dsn)}
}

// MySQL creates a MySQL/MariaDB database for t.
func MySQL(t testing.TB) *DB {
	t.Helper()
	admin := os.Getenv(MySQLEnv)
	if admin == "" {
		t.Skipf("%s is not set: skipping a MySQL test (set it to e.g. root@tcp(127.0.0.1:3306)/test)", MySQLEnv)
	}
	cfg, err := mysqldrv.ParseDSN(admin)
	if err != nil {
		t.Fatalf("%s: %v", MySQLEnv, err)
	}
	name := newName()
	create(t, "mysql", admin, MySQLEnv,
		"CREATE DATABASE "+name+" CHARACTER SET utf8mb4",
		"DROP DATABASE IF EXISTS "+name)
	cfg.DBName = name
	dsn := cfg.FormatDSN()
	// The test's own pool reads times as UTC times, like the plugin.
	tcfg := cfg.Clone()
	tcfg.ParseTime = true
	if tcfg.Params == nil {
		tcfg.Params = map[string]string{}
	}
	tcfg.Params["time_zone"] = "'+00:00'"
	return &DB{Driver: "mysql", DSN: dsn, Name: name, SQL: connect(t, "mysql", tcfg.FormatDSN())}
}

func newName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "cohort_sql_" + hex.EncodeToString(b[:])
}

// create runs createSQL on the admin connection and dropSQL when the test
// ends.
func create(t testing.TB, driver, admin, env, createSQL, dropSQL string) {
	t.Helper()
	db, err := sql.Open(driver, admin)
	if err != nil {
		t.Fatalf("%s: %v", env, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		t.Fatalf("%s is set but the server cannot be reached: %v", env, err)
	}
	if _, err := db.ExecContext(ctx, createSQL); err != nil {
		db.Close()
		t.Fatalf("%s: %s: %v", env, createSQL, err)
	}
	t.Cleanup(func() {
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, dropSQL); err != nil {
			t.Errorf("%s: %v", dropSQL, err)
		}
	})
}

func connect(t testing.TB, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// postgresDSN points the admin connection string at database name.
func postgresDSN(admin, name string) (string, error) {
	if strings.HasPrefix(admin, "postgres://") || strings.HasPrefix(admin, "postgresql://") {
		u, err := url.Parse(admin)
		if err != nil {
			return "", fmt.Errorf("not a URL: %v", err)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	return admin + " dbname=" + name, nil
}

// Exec runs statements, failing the test on an error. Placeholders are
// written ? and rewritten to $n for PostgreSQL.
func (d *DB) Exec(t testing.TB, query string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d.SQL.ExecContext(ctx, d.Rebind(query), args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// Rebind rewrites ? placeholders to $1, $2... for PostgreSQL.
func (d *DB) Rebind(query string) string {
	if d.Driver != "postgres" {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Now is the database's clock.
func (d *DB) Now(t testing.TB) time.Time {
	t.Helper()
	q := "SELECT now()"
	if d.Driver == "mysql" {
		q = "SELECT NOW(6)"
	}
	var now time.Time
	if err := d.SQL.QueryRowContext(context.Background(), q).Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now
}
