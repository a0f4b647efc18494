package storage

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
)

func openPostgres(cfg Config, gcfg *gorm.Config) (*gorm.DB, error) {
	if _, err := pgx.ParseConfig(cfg.DSN); err != nil {
		return nil, fmt.Errorf("storage.dsn: not a valid PostgreSQL connection string (%s); use e.g. postgres://user@127.0.0.1:5432/cohort", redactErr(err))
	}
	gdb, err := gorm.Open(postgres.New(postgres.Config{DSN: cfg.DSN}), gcfg)
	if err != nil {
		return nil, describeConnectError(cfg, err)
	}
	sqlDB, err := gdb.DB()
	if err != nil {
		return nil, err
	}
	n := cfg.MaxOpenConns
	if n <= 0 {
		n = 10
	}
	sqlDB.SetMaxOpenConns(n)
	sqlDB.SetMaxIdleConns(n)
	return gdb, nil
}

// describeConnectError says which database could not be reached, without
// printing a password.
func describeConnectError(cfg Config, err error) error {
	if cfg.Driver != Postgres {
		return fmt.Errorf("storage: SQLite database %s: %w", cfg.DSN, err)
	}
	target := "the configured server"
	if pc, perr := pgx.ParseConfig(cfg.DSN); perr == nil {
		target = fmt.Sprintf("%s:%d database %q as user %q", pc.Host, pc.Port, pc.Database, pc.User)
	}
	return fmt.Errorf("storage: cannot reach PostgreSQL at %s: %s; check storage.dsn and that the server is running", target, redactErr(err))
}

// redactErr strips anything that looks like a password from a driver error.
func redactErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, "password="); i >= 0 {
		j := strings.IndexAny(s[i:], " '\"")
		if j < 0 {
			j = len(s) - i
		}
		s = s[:i] + "password=xxxxx" + s[i+j:]
	}
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) {
		return s + " (SQLSTATE " + pgErr.SQLState() + ")"
	}
	return s
}
