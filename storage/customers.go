package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Customer is one customer row: traits as a JSON object of name to value.
type Customer struct {
	ID        string
	Traits    json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
}

// upsertChunk is rows per INSERT statement: ~100 is fastest with the pure-Go
// SQLite driver (larger statements bind parameters quadratically).
const upsertChunk = 100

// UpsertCustomers inserts customers or merges their traits into existing
// rows: given traits replace stored values, a trait given as JSON null is
// removed, other traits are kept (RFC 7396 merge). All rows are written in one
// transaction.
func (db *DB) UpsertCustomers(ctx context.Context, cs []Customer) error {
	if len(cs) == 0 {
		return nil
	}
	return db.Tx(ctx, func(tx *Tx) error { return tx.UpsertCustomers(cs) })
}

// UpsertCustomers is DB.UpsertCustomers inside a transaction.
func (tx *Tx) UpsertCustomers(cs []Customer) error {
	if len(cs) == 0 {
		return nil
	}
	now := time.Now().UTC()
	merge := "json_patch(customers.traits, excluded.traits)"
	if tx.dialect == Postgres {
		merge = "jsonb_strip_nulls(customers.traits || excluded.traits)"
	}
	tail := fmt.Sprintf(" ON CONFLICT (id) DO UPDATE SET traits = %s, updated_at = excluded.updated_at", merge)
	args := make([]any, 0, 4*upsertChunk)
	return tx.chunked("INSERT INTO customers (id, traits, created_at, updated_at) VALUES ", 4, tail, len(cs), func(lo, hi int) ([]any, error) {
		args = args[:0]
		for _, c := range cs[lo:hi] {
			if c.ID == "" {
				return nil, errors.New("storage: customer with an empty id")
			}
			traits := string(c.Traits)
			if traits == "" {
				traits = "{}"
			}
			args = append(args, c.ID, traits, now, now)
		}
		return args, nil
	})
}

// EnsureCustomers creates an empty profile for each id that has none (an
// event for a customer no source has described yet is never dropped).
func (tx *Tx) EnsureCustomers(ids []string) error {
	now := time.Now().UTC()
	err := tx.chunked("INSERT INTO customers (id, traits, created_at, updated_at) VALUES ", 4,
		" ON CONFLICT (id) DO NOTHING", len(ids), func(lo, hi int) ([]any, error) {
			args := make([]any, 0, 4*(hi-lo))
			for _, id := range ids[lo:hi] {
				args = append(args, id, "{}", now, now)
			}
			return args, nil
		})
	if err != nil {
		return fmt.Errorf("storage: create customers: %w", err)
	}
	return nil
}

// GetCustomer returns one customer, or ErrNotFound.
func (db *DB) GetCustomer(ctx context.Context, id string) (Customer, error) {
	var row struct {
		ID        string
		Traits    string
		CreatedAt time.Time
		UpdatedAt time.Time
	}
	res := db.session(ctx).Raw("SELECT id, traits, created_at, updated_at FROM customers WHERE id = ?", id).Scan(&row)
	if res.Error != nil {
		return Customer{}, fmt.Errorf("storage: get customer %q: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return Customer{}, fmt.Errorf("customer %q: %w", id, ErrNotFound)
	}
	return Customer{ID: row.ID, Traits: json.RawMessage(row.Traits), CreatedAt: row.CreatedAt.UTC(), UpdatedAt: row.UpdatedAt.UTC()}, nil
}

// DeleteCustomers removes customers and their event rollups by id; unknown
// ids are ignored. Consent records are kept: they are the evidence of what a
// customer agreed to.
func (db *DB) DeleteCustomers(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	return db.Tx(ctx, func(tx *Tx) error { return tx.DeleteCustomers(ids) })
}

// DeleteCustomers is DB.DeleteCustomers inside a transaction.
func (tx *Tx) DeleteCustomers(ids []string) error {
	for start := 0; start < len(ids); start += upsertChunk {
		chunk := ids[start:min(start+upsertChunk, len(ids))]
		if err := tx.g.Exec("DELETE FROM customers WHERE id IN ?", chunk).Error; err != nil {
			return fmt.Errorf("storage: delete customers: %w", err)
		}
		if err := tx.g.Exec("DELETE FROM event_rollups WHERE customer_id IN ?", chunk).Error; err != nil {
			return fmt.Errorf("storage: delete customers' rollups: %w", err)
		}
	}
	return nil
}

// CountCustomers returns the number of customers.
func (db *DB) CountCustomers(ctx context.Context) (int64, error) {
	var n int64
	err := db.session(ctx).Raw("SELECT COUNT(*) FROM customers").Scan(&n).Error
	return n, err
}

// EachCustomer calls fn for every customer in id order, streaming rows so a
// large table is never held in memory twice. fn must not retain Traits.
func (db *DB) EachCustomer(ctx context.Context, fn func(Customer) error) error {
	rows, err := db.session(ctx).Raw("SELECT id, traits, created_at, updated_at FROM customers ORDER BY id").Rows()
	if err != nil {
		return fmt.Errorf("storage: read customers: %w", err)
	}
	defer rows.Close()
	var (
		c      Customer
		traits sql.RawBytes
	)
	for rows.Next() {
		if err := rows.Scan(&c.ID, &traits, &c.CreatedAt, &c.UpdatedAt); err != nil {
			return fmt.Errorf("storage: read customers: %w", err)
		}
		c.Traits = json.RawMessage(traits)
		if err := fn(c); err != nil {
			return err
		}
	}
	return rows.Err()
}
