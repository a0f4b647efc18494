package storage

// The SQLite driver lives in this one file so it can be swapped.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
)

// openSQLite opens the database file in WAL mode with a busy timeout and
// foreign keys on, twice: a pool of MaxOpenConns connections for reads and
// statements outside transactions, and one connection for transactions
// (Tx, WriteTx).
//
// SQLite has one writer at a time anyway. With transactions spread over a
// pool, each connection found the database changed by another at its next
// transaction and dropped its whole page cache, reading the pages back and
// allocating them anew; writers also waited for each other in SQLite's busy
// handler, which sleeps in steps of milliseconds. On one connection the
// cache stays valid across transactions and waiting writers queue in
// database/sql, each taking the connection as soon as it is free.
// Transactions still begin IMMEDIATE, so a statement outside a
// transaction that writes waits on the busy timeout instead of failing
// with "database is locked".
func openSQLite(cfg Config, gcfg *gorm.Config) (read, write *gorm.DB, err error) {
	path := cfg.DSN
	if path == "" {
		return nil, nil, errors.New("storage.dsn: the SQLite file path is empty; set it, e.g. var/cohort.db")
	}
	if err := checkWritable(path); err != nil {
		return nil, nil, err
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	// A 64 MiB page cache per connection (the 2 MB default spills dirty pages
	// mid-transaction on large passes) and statement journals in memory.
	q.Add("_pragma", "cache_size(-65536)")
	q.Add("_pragma", "temp_store(MEMORY)")
	// Commits copy the write-ahead log into the database file (a
	// checkpoint) only once it holds 64 MiB: the daemon checkpoints in the
	// background every second (CheckpointLoop), so a large commit such as a
	// full pass's does not pay for it. Durability is unchanged (committed
	// transactions are in the log either way); the cost is a log of up to
	// 64 MiB plus what a second of writes adds, replayed at open after a
	// crash, and reads that look pages up in a longer log.
	q.Add("_pragma", "wal_autocheckpoint(16384)")
	q.Set("_txlock", "immediate")
	q.Set("_time_format", "sqlite")
	n := cfg.MaxOpenConns
	if n <= 0 {
		n = 4
	}
	open := func(conns int) (*gorm.DB, error) {
		gdb, err := gorm.Open(sqlite.Open("file:"+path+"?"+q.Encode()), gcfg)
		if err != nil {
			return nil, fmt.Errorf("storage: open SQLite %s: %w", path, err)
		}
		sqlDB, err := gdb.DB()
		if err != nil {
			return nil, err
		}
		sqlDB.SetMaxOpenConns(conns)
		sqlDB.SetMaxIdleConns(conns)
		return gdb, nil
	}
	if read, err = open(n); err != nil {
		return nil, nil, err
	}
	if write, err = open(1); err != nil {
		closeGorm(read)
		return nil, nil, err
	}
	return read, write, nil
}

// checkWritable makes the database's directory and verifies the file can be
// created or written, so a bad path fails with a clear message at start.
func checkWritable(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("storage.dsn: cannot create directory %s for the SQLite database: %w; choose a writable path", dir, unwrapPathErr(err))
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("storage.dsn: cannot write SQLite database %s: %w; choose a writable path or fix its permissions", path, unwrapPathErr(err))
	}
	return f.Close()
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// CheckpointLoop checkpoints the SQLite write-ahead log every interval
// until ctx is done, logging failures; it returns at once on PostgreSQL.
func (db *DB) CheckpointLoop(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if db.dialect != SQLite {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := db.Checkpoint(cctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			log.Warn("SQLite checkpoint failed; the next commit past 64 MiB of log will checkpoint instead", "err", err)
		}
	}
}

// Checkpoint copies committed pages from SQLite's write-ahead log into the
// database file without blocking readers or writers (a PASSIVE
// checkpoint), and returns how many log frames remain uncopied (readers
// still using them). It does nothing on PostgreSQL.
func (db *DB) Checkpoint(ctx context.Context) (int, error) {
	if db.dialect != SQLite {
		return 0, nil
	}
	var busy, logFrames, copied int
	row := db.session(ctx).Raw("PRAGMA wal_checkpoint(PASSIVE)").Row()
	if err := row.Scan(&busy, &logFrames, &copied); err != nil {
		return 0, fmt.Errorf("storage: checkpoint the SQLite write-ahead log: %w", err)
	}
	return logFrames - copied, nil
}
