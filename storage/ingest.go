package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Event is one raw event, deduplicated by (Source, ID).
type Event struct {
	Source     string
	ID         string
	CustomerID string
	Name       string
	Time       time.Time
	Value      float64
	HasValue   bool
}

// Rollup is a customer's events of one name on one UTC day.
type Rollup struct {
	CustomerID string
	Name       string
	// Day is days since 1970-01-01 (UTC).
	Day   int32
	Count int64
	Sum   float64
	First time.Time
	Last  time.Time
}

// Consent statuses as stored.
const (
	ConsentOptIn  = "opt_in"
	ConsentOptOut = "opt_out"
)

// Consent is one consent record: append-only evidence of who agreed to or
// withdrew from what, when, through which source, on what basis.
type Consent struct {
	Seq        int64
	CustomerID string
	Kind       string
	Status     string
	Time       time.Time
	Source     string
	Basis      string
	RecordedAt time.Time
}

// InsertEvents stores events, ignoring any (source, id) already stored, and
// returns the ones that were new, so only they are counted in rollups.
func (tx *Tx) InsertEvents(evs []Event) ([]Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	now := time.Now().UTC()
	type key struct{ source, id string }
	byKey := make(map[key]int, len(evs))
	var fresh []Event
	for start := 0; start < len(evs); start += upsertChunk {
		chunk := evs[start:min(start+upsertChunk, len(evs))]
		var b strings.Builder
		b.WriteString("INSERT INTO events (source, id, customer_id, name, time_ms, value, received_at) VALUES ")
		args := make([]any, 0, 7*len(chunk))
		for i, e := range chunk {
			byKey[key{e.Source, e.ID}] = start + i
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(?, ?, ?, ?, ?, ?, ?)")
			var v any
			if e.HasValue {
				v = e.Value
			}
			args = append(args, e.Source, e.ID, e.CustomerID, e.Name, e.Time.UnixMilli(), v, now)
		}
		b.WriteString(" ON CONFLICT (source, id) DO NOTHING RETURNING source, id")
		rows, err := tx.g.Raw(b.String(), args...).Rows()
		if err != nil {
			return nil, fmt.Errorf("storage: insert events: %w", err)
		}
		for rows.Next() {
			var k key
			if err := rows.Scan(&k.source, &k.id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: insert events: %w", err)
			}
			fresh = append(fresh, evs[byKey[k]])
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: insert events: %w", err)
		}
	}
	return fresh, nil
}

// AddRollups adds counts and sums into the daily rollups, widening first and
// last times.
func (tx *Tx) AddRollups(rs []Rollup) error {
	lo, hi := "MIN", "MAX"
	if tx.dialect == Postgres {
		lo, hi = "LEAST", "GREATEST"
	}
	tail := fmt.Sprintf(` ON CONFLICT (customer_id, name, day) DO UPDATE SET
		count = event_rollups.count + excluded.count,
		value_sum = event_rollups.value_sum + excluded.value_sum,
		first_time_ms = %s(event_rollups.first_time_ms, excluded.first_time_ms),
		last_time_ms = %s(event_rollups.last_time_ms, excluded.last_time_ms)`, lo, hi)
	err := tx.chunked("INSERT INTO event_rollups (customer_id, name, day, count, value_sum, first_time_ms, last_time_ms) VALUES ", 7,
		tail, len(rs), func(a, b int) ([]any, error) {
			args := make([]any, 0, 7*(b-a))
			for _, r := range rs[a:b] {
				args = append(args, r.CustomerID, r.Name, r.Day, r.Count, r.Sum, r.First.UnixMilli(), r.Last.UnixMilli())
			}
			return args, nil
		})
	if err != nil {
		return fmt.Errorf("storage: add rollups: %w", err)
	}
	return nil
}

// InsertConsents appends consent records.
func (tx *Tx) InsertConsents(cs []Consent) error {
	now := time.Now().UTC()
	err := tx.chunked("INSERT INTO consents (customer_id, kind, status, time_ms, source, basis, recorded_at) VALUES ", 7,
		"", len(cs), func(a, b int) ([]any, error) {
			args := make([]any, 0, 7*(b-a))
			for _, c := range cs[a:b] {
				args = append(args, c.CustomerID, c.Kind, c.Status, c.Time.UnixMilli(), c.Source, c.Basis, now)
			}
			return args, nil
		})
	if err != nil {
		return fmt.Errorf("storage: insert consents: %w", err)
	}
	return nil
}

// SetCursor records a source's cursor; called in the batch's transaction.
func (tx *Tx) SetCursor(source, cursor string, caughtUp bool) error {
	err := tx.g.Exec(`INSERT INTO source_cursors (source, cursor, caught_up, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, caught_up = excluded.caught_up, updated_at = excluded.updated_at`,
		source, cursor, caughtUp, time.Now().UTC()).Error
	if err != nil {
		return fmt.Errorf("storage: set cursor of %q: %w", source, err)
	}
	return nil
}

// Cursor returns a source's last committed cursor ("" if none).
func (db *DB) Cursor(ctx context.Context, source string) (cursor string, caughtUp bool, err error) {
	var row struct {
		Cursor   string
		CaughtUp bool
	}
	res := db.session(ctx).Raw("SELECT cursor, caught_up FROM source_cursors WHERE source = ?", source).Scan(&row)
	if res.Error != nil {
		return "", false, fmt.Errorf("storage: cursor of %q: %w", source, res.Error)
	}
	return row.Cursor, row.CaughtUp, nil
}

// EachRollup streams every rollup ordered by customer, name and day.
func (db *DB) EachRollup(ctx context.Context, fn func(Rollup) error) error {
	rows, err := db.session(ctx).Raw(`SELECT customer_id, name, day, count, value_sum, first_time_ms, last_time_ms
		FROM event_rollups ORDER BY customer_id, name, day`).Rows()
	if err != nil {
		return fmt.Errorf("storage: read rollups: %w", err)
	}
	defer rows.Close()
	var (
		r           Rollup
		first, last int64
	)
	for rows.Next() {
		if err := rows.Scan(&r.CustomerID, &r.Name, &r.Day, &r.Count, &r.Sum, &first, &last); err != nil {
			return fmt.Errorf("storage: read rollups: %w", err)
		}
		r.First, r.Last = time.UnixMilli(first).UTC(), time.UnixMilli(last).UTC()
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Consents returns a customer's consent records, oldest first.
func (db *DB) Consents(ctx context.Context, customerID string) ([]Consent, error) {
	rows, err := db.session(ctx).Raw(`SELECT seq, customer_id, kind, status, time_ms, source, basis, recorded_at
		FROM consents WHERE customer_id = ? ORDER BY time_ms, seq`, customerID).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: consents of %q: %w", customerID, err)
	}
	defer rows.Close()
	var out []Consent
	for rows.Next() {
		var (
			c  Consent
			ms int64
			at sql.NullTime
		)
		if err := rows.Scan(&c.Seq, &c.CustomerID, &c.Kind, &c.Status, &ms, &c.Source, &c.Basis, &at); err != nil {
			return nil, fmt.Errorf("storage: consents of %q: %w", customerID, err)
		}
		c.Time, c.RecordedAt = time.UnixMilli(ms).UTC(), at.Time.UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}
