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

// customerChunk is rows per customer upsert on SQLite. The driver compiles
// every statement afresh (a prepared statement is re-parsed on each Exec)
// and binds parameters in quadratic time, and its allocator maps and unmaps
// memory for a compiled program past a size: 50 rows of two parameters
// each stayed under it, and measured 1.6x faster per row than 100 rows of
// four (storage BenchmarkUpsertCustomers).
const customerChunk = 50

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
	for _, c := range cs {
		if c.ID == "" {
			return errors.New("storage: customer with an empty id")
		}
	}
	now := time.Now().UTC()
	if tx.dialect == Postgres {
		tail := " ON CONFLICT (id) DO UPDATE SET traits = jsonb_strip_nulls(customers.traits || excluded.traits), updated_at = excluded.updated_at"
		args := make([]any, 0, 4*upsertChunk)
		return tx.chunked("INSERT INTO customers (id, traits, created_at, updated_at) VALUES ", 4, tail, len(cs), func(lo, hi int) ([]any, error) {
			args = args[:0]
			for _, c := range cs[lo:hi] {
				args = append(args, c.ID, traitsText(c.Traits), now, now)
			}
			return args, nil
		})
	}
	// SQLite: the timestamps are bound once per statement, the rows as
	// (id, traits) pairs selected from VALUES.
	const (
		head = "INSERT INTO customers (id, traits, created_at, updated_at) SELECT column1, column2, ?, ? FROM (VALUES "
		tail = ") WHERE true ON CONFLICT (id) DO UPDATE SET traits = json_patch(customers.traits, excluded.traits), updated_at = excluded.updated_at"
	)
	ctx := tx.g.Statement.Context
	pool := tx.g.Statement.ConnPool
	args := make([]any, 0, 2+2*customerChunk)
	var full string
	for lo := 0; lo < len(cs); lo += customerChunk {
		hi := min(lo+customerChunk, len(cs))
		args = append(args[:0], now, now)
		for _, c := range cs[lo:hi] {
			args = append(args, c.ID, traitsText(c.Traits))
		}
		q := full
		if hi-lo < customerChunk {
			q = tx.values(head, 2, hi-lo, tail)
		} else if q == "" {
			full = tx.values(head, 2, customerChunk, tail)
			q = full
		}
		if _, err := pool.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("storage: upsert customers: %w", err)
		}
	}
	return nil
}

// traitsText is a customer's traits document as bound: "{}" when empty.
func traitsText(t json.RawMessage) string {
	if len(t) == 0 {
		return "{}"
	}
	return string(t)
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
