package storage

import (
	"context"

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
	return db.session(ctx).Transaction(func(g *gorm.DB) error {
		return fn(&Tx{g: g, dialect: db.dialect})
	})
}
