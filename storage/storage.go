// Package storage is Cohort's persistence: embedded SQLite by default,
// PostgreSQL when several daemons share the work. Open connects and applies
// the versioned migrations; repositories return the project's own types,
// never gorm's.
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Dialect names a database engine.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Config selects and tunes the database.
type Config struct {
	// Driver is SQLite or Postgres.
	Driver Dialect
	// DSN is the SQLite file path, or the PostgreSQL connection string.
	DSN string
	// MaxOpenConns bounds the pool (0 = 4 on SQLite, 10 on PostgreSQL).
	MaxOpenConns int
	// Logger receives slow-query and error logs; nil discards them.
	Logger *slog.Logger
}

// ErrNotFound is returned when a requested record does not exist.
var ErrNotFound = errors.New("not found")

// DB is an open, migrated database.
type DB struct {
	gdb *gorm.DB
	// wdb runs transactions: on SQLite a pool of one connection of its
	// own (see openSQLite), on PostgreSQL gdb itself.
	wdb     *gorm.DB
	dialect Dialect
	log     *slog.Logger
}

// Open connects to the database, checks it answers and applies pending
// migrations. On error nothing is left open.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	gcfg := &gorm.Config{
		Logger:                 newGormLogger(cfg.Logger),
		TranslateError:         true,
		SkipDefaultTransaction: true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	}
	var (
		gdb, wdb *gorm.DB
		err      error
	)
	switch cfg.Driver {
	case SQLite:
		gdb, wdb, err = openSQLite(cfg, gcfg)
	case Postgres:
		gdb, err = openPostgres(cfg, gcfg)
		wdb = gdb
	default:
		return nil, fmt.Errorf("storage: unknown driver %q: use sqlite or postgres", cfg.Driver)
	}
	if err != nil {
		return nil, err
	}
	db := &DB{gdb: gdb, wdb: wdb, dialect: cfg.Driver, log: cfg.Logger}
	if err := db.Ping(ctx); err != nil {
		db.Close()
		return nil, describeConnectError(cfg, err)
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Dialect reports the database engine.
func (db *DB) Dialect() Dialect { return db.dialect }

// Ping checks the database answers.
func (db *DB) Ping(ctx context.Context) error {
	sqlDB, err := db.gdb.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}

// Close closes the connection pools.
func (db *DB) Close() error {
	err := closeGorm(db.gdb)
	if db.wdb != db.gdb {
		err = errors.Join(err, closeGorm(db.wdb))
	}
	return err
}

// closeGorm closes gdb's connection pool.
func closeGorm(gdb *gorm.DB) error {
	sqlDB, err := gdb.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// session returns a fresh gorm session bound to ctx (a chained *gorm.DB is
// not reusable).
func (db *DB) session(ctx context.Context) *gorm.DB {
	return db.gdb.WithContext(ctx)
}

// txSession is session for transactions: on SQLite its connection is the
// one that runs every transaction.
func (db *DB) txSession(ctx context.Context) *gorm.DB {
	return db.wdb.WithContext(ctx)
}

// gormLogger sends gorm's logs to slog: errors (other than not-found) and
// queries slower than 500ms.
type gormLogger struct {
	log  *slog.Logger
	slow time.Duration
}

func newGormLogger(l *slog.Logger) logger.Interface {
	return &gormLogger{log: l.With("component", "storage"), slow: 500 * time.Millisecond}
}

func (g *gormLogger) LogMode(logger.LogLevel) logger.Interface { return g }
func (g *gormLogger) Info(ctx context.Context, msg string, args ...any) {
	g.log.InfoContext(ctx, fmt.Sprintf(msg, args...))
}
func (g *gormLogger) Warn(ctx context.Context, msg string, args ...any) {
	g.log.WarnContext(ctx, fmt.Sprintf(msg, args...))
}
func (g *gormLogger) Error(ctx context.Context, msg string, args ...any) {
	g.log.ErrorContext(ctx, fmt.Sprintf(msg, args...))
}
func (g *gormLogger) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	elapsed := time.Since(begin)
	switch {
	case err != nil && !errors.Is(err, gorm.ErrRecordNotFound) && !errors.Is(err, context.Canceled):
		sql, rows := fc()
		g.log.DebugContext(ctx, "query failed", "err", err, "sql", truncate(sql, 300), "rows", rows, "elapsed", elapsed)
	case elapsed > g.slow:
		sql, rows := fc()
		g.log.WarnContext(ctx, "slow query", "sql", truncate(sql, 300), "rows", rows, "elapsed", elapsed)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
