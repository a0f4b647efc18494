package storage

// The SQLite driver lives in this one file so it can be swapped.

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
)

// openSQLite opens the database file in WAL mode with a busy timeout and
// foreign keys on. Write transactions begin IMMEDIATE so concurrent writers
// queue on the busy timeout instead of failing with "database is locked".
func openSQLite(cfg Config, gcfg *gorm.Config) (*gorm.DB, error) {
	path := cfg.DSN
	if path == "" {
		return nil, errors.New("storage.dsn: the SQLite file path is empty; set it, e.g. var/cohort.db")
	}
	if err := checkWritable(path); err != nil {
		return nil, err
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
	q.Set("_txlock", "immediate")
	q.Set("_time_format", "sqlite")
	gdb, err := gorm.Open(sqlite.Open("file:"+path+"?"+q.Encode()), gcfg)
	if err != nil {
		return nil, fmt.Errorf("storage: open SQLite %s: %w", path, err)
	}
	sqlDB, err := gdb.DB()
	if err != nil {
		return nil, err
	}
	n := cfg.MaxOpenConns
	if n <= 0 {
		n = 4
	}
	sqlDB.SetMaxOpenConns(n)
	sqlDB.SetMaxIdleConns(n)
	return gdb, nil
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
