package storage

import (
	"context"
	"database/sql"
	"strconv"
	"strings"

	"gorm.io/gorm"
)

// Tx is a transaction; repositories offer their writes on it so callers can
// commit several changes (a batch and its cursor) atomically.
type Tx struct {
	g       *gorm.DB
	dialect Dialect
}

// Tx runs fn in a transaction, committing when it returns nil. On SQLite the
// transaction begins IMMEDIATE, taking the write lock up front.
func (db *DB) Tx(ctx context.Context, fn func(*Tx) error) error {
	return db.txSession(ctx).Transaction(func(g *gorm.DB) error {
		return fn(&Tx{g: g, dialect: db.dialect})
	})
}

// sqliteChunkParams bounds the parameters of one multi-row INSERT on SQLite
// (chunked): the outbox's 10 columns go 40 rows a statement, 15 µs a row
// instead of 18 at 100 rows (20,000 rows enqueued); 4-column rows stay at
// upsertChunk.
const sqliteChunkParams = 400

// chunked inserts n rows of `cols` parameters each in multi-row statements
// of up to upsertChunk rows (fewer on SQLite, see sqliteChunkParams): head + "(?, ...), (...)" + tail. The statement
// for a full chunk is prepared once and reused (a statement with hundreds of
// parameters is costly to compile); args(lo, hi) returns the parameters of
// rows [lo, hi).
func (tx *Tx) chunked(head string, cols int, tail string, n int, args func(lo, hi int) ([]any, error)) error {
	ctx := tx.g.Statement.Context
	pool := tx.g.Statement.ConnPool
	var full *sql.Stmt
	defer func() {
		if full != nil {
			full.Close()
		}
	}()
	per := upsertChunk
	if tx.dialect == SQLite {
		// The SQLite driver binds each parameter by scanning the
		// arguments for its ordinal: quadratic in a statement's
		// parameters, so wide rows go fewer to a statement.
		per = max(1, min(upsertChunk, sqliteChunkParams/cols))
	}
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		a, err := args(lo, hi)
		if err != nil {
			return err
		}
		if hi-lo == per {
			if full == nil {
				if full, err = pool.PrepareContext(ctx, tx.values(head, cols, per, tail)); err != nil {
					return err
				}
			}
			if _, err := full.ExecContext(ctx, a...); err != nil {
				return err
			}
			continue
		}
		if _, err := pool.ExecContext(ctx, tx.values(head, cols, hi-lo, tail), a...); err != nil {
			return err
		}
	}
	return nil
}

// values builds head + rows tuples of cols placeholders + tail, with the
// dialect's placeholders (? on SQLite, $n on PostgreSQL).
func (tx *Tx) values(head string, cols, rows int, tail string) string {
	var b strings.Builder
	b.Grow(len(head) + len(tail) + rows*cols*5)
	b.WriteString(head)
	p := 0
	for r := range rows {
		if r > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for c := range cols {
			if c > 0 {
				b.WriteByte(',')
			}
			p++
			if tx.dialect == Postgres {
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(p))
			} else {
				b.WriteByte('?')
			}
		}
		b.WriteByte(')')
	}
	b.WriteString(tail)
	return b.String()
}
