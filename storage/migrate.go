package storage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Migrations are embedded SQL files per dialect, named NNNN_description.sql
// and applied in order, each in its own transaction, and recorded in
// schema_migrations. Later features add tables with new files; a file once
// released is never edited.
//
//go:embed migrations
var migrationFS embed.FS

// Migration is one versioned schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// migrationLockKey is the PostgreSQL advisory lock held while migrating, so
// several daemons starting at once apply each migration once.
const migrationLockKey = 0x636f686f7274 // "cohort"

// Migrations lists the embedded migrations for a dialect, in order.
func Migrations(d Dialect) ([]Migration, error) {
	dir := "migrations/" + string(d)
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("storage: no migrations for %s: %w", d, err)
	}
	var ms []Migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("storage: migration %s/%s: name must start with a positive version, e.g. 0002_events.sql", dir, name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("storage: migrations %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		b, err := migrationFS.ReadFile(path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: strings.TrimSuffix(name, ".sql"), SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// AppliedMigrations lists the versions recorded as applied.
func (db *DB) AppliedMigrations(ctx context.Context) ([]int, error) {
	var vs []int
	err := db.session(ctx).Raw("SELECT version FROM schema_migrations ORDER BY version").Scan(&vs).Error
	return vs, err
}

func (db *DB) migrate(ctx context.Context) error {
	ms, err := Migrations(db.dialect)
	if err != nil {
		return err
	}
	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TIMESTAMP NOT NULL)`
	if err := db.session(ctx).Exec(create).Error; err != nil {
		return fmt.Errorf("storage: create schema_migrations: %w", err)
	}
	return db.withMigrationLock(ctx, func(g *gorm.DB) error {
		applied := map[int]bool{}
		var vs []int
		if err := g.Raw("SELECT version FROM schema_migrations").Scan(&vs).Error; err != nil {
			return fmt.Errorf("storage: read schema_migrations: %w", err)
		}
		for _, v := range vs {
			applied[v] = true
		}
		latest := 0
		for _, m := range ms {
			latest = max(latest, m.Version)
		}
		for _, v := range vs {
			if v > latest {
				return fmt.Errorf("storage: the database has migration %d but this cohort knows only up to %d; run a newer cohort", v, latest)
			}
		}
		for _, m := range ms {
			if applied[m.Version] {
				continue
			}
			err := g.Transaction(func(tx *gorm.DB) error {
				if err := tx.Exec(m.SQL).Error; err != nil {
					return err
				}
				return tx.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
					m.Version, m.Name, time.Now().UTC()).Error
			})
			if err != nil {
				return fmt.Errorf("storage: migration %s (%s): %w", m.Name, db.dialect, err)
			}
			db.log.InfoContext(ctx, "applied migration", "component", "storage", "version", m.Version, "name", m.Name)
		}
		return nil
	})
}

// withMigrationLock runs fn while holding the migration lock: a session-level
// advisory lock on one PostgreSQL connection; SQLite's single writer needs none.
func (db *DB) withMigrationLock(ctx context.Context, fn func(*gorm.DB) error) error {
	if db.dialect != Postgres {
		return fn(db.session(ctx))
	}
	return db.session(ctx).Connection(func(conn *gorm.DB) error {
		if err := conn.Exec("SELECT pg_advisory_lock(?)", migrationLockKey).Error; err != nil {
			return fmt.Errorf("storage: take migration lock: %w", err)
		}
		defer conn.Exec("SELECT pg_advisory_unlock(?)", migrationLockKey)
		return fn(conn)
	})
}
