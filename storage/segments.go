package storage

import (
	"context"
	"fmt"
	"time"
)

// Pass kinds.
const (
	PassFull        = "full"
	PassIncremental = "incremental"
)

// SegmentChange is one numbered entry into or exit from a segment.
type SegmentChange struct {
	Seq        int64
	Segment    string
	CustomerID string
	// Change is "enter" or "exit".
	Change string
	At     time.Time
	Pass   int64
}

// SegmentSize is a segment's size after one pass.
type SegmentSize struct {
	Segment string
	Pass    int64
	At      time.Time
	Size    int64
	Entered int64
	Exited  int64
	Held    string
}

// BeginPass records the start of a segmentation pass and returns its id.
func (tx *Tx) BeginPass(kind string, now time.Time) (int64, error) {
	var id int64
	err := tx.g.Raw("INSERT INTO segment_passes (kind, now_ms, started_at) VALUES (?, ?, ?) RETURNING id",
		kind, now.UnixMilli(), time.Now().UTC()).Scan(&id).Error
	if err != nil {
		return 0, fmt.Errorf("storage: begin pass: %w", err)
	}
	return id, nil
}

// FinishPass records a pass's end and counts.
func (tx *Tx) FinishPass(id int64, evaluated, changes int) error {
	err := tx.g.Exec("UPDATE segment_passes SET finished_at = ?, evaluated = ?, changes = ? WHERE id = ?",
		time.Now().UTC(), evaluated, changes, id).Error
	if err != nil {
		return fmt.Errorf("storage: finish pass %d: %w", id, err)
	}
	return nil
}

// ApplyDiff records a segment's entries and exits from one pass: members are
// added and removed, and each change is appended to the numbered log.
func (tx *Tx) ApplyDiff(segment string, entered, exited []string, at time.Time, pass int64) error {
	at = at.UTC()
	err := tx.chunked("INSERT INTO segment_members (segment, customer_id, since) VALUES ", 3,
		" ON CONFLICT (segment, customer_id) DO NOTHING", len(entered), func(a, b int) ([]any, error) {
			args := make([]any, 0, 3*(b-a))
			for _, id := range entered[a:b] {
				args = append(args, segment, id, at)
			}
			return args, nil
		})
	if err != nil {
		return fmt.Errorf("storage: segment %q: add members: %w", segment, err)
	}
	for start := 0; start < len(exited); start += upsertChunk {
		chunk := exited[start:min(start+upsertChunk, len(exited))]
		if err := tx.g.Exec("DELETE FROM segment_members WHERE segment = ? AND customer_id IN ?", segment, chunk).Error; err != nil {
			return fmt.Errorf("storage: segment %q: remove members: %w", segment, err)
		}
	}
	for _, group := range []struct {
		change string
		ids    []string
	}{{"enter", entered}, {"exit", exited}} {
		err := tx.chunked("INSERT INTO segment_changes (segment, customer_id, change, at, pass) VALUES ", 5,
			"", len(group.ids), func(a, b int) ([]any, error) {
				args := make([]any, 0, 5*(b-a))
				for _, id := range group.ids[a:b] {
					args = append(args, segment, id, group.change, at, pass)
				}
				return args, nil
			})
		if err != nil {
			return fmt.Errorf("storage: segment %q: log changes: %w", segment, err)
		}
	}
	return nil
}

// RecordSize appends a segment's size after a pass.
func (tx *Tx) RecordSize(s SegmentSize) error {
	err := tx.g.Exec("INSERT INTO segment_sizes (segment, pass, at, size, entered, exited, held) VALUES (?, ?, ?, ?, ?, ?, ?)",
		s.Segment, s.Pass, s.At.UTC(), s.Size, s.Entered, s.Exited, s.Held).Error
	if err != nil {
		return fmt.Errorf("storage: segment %q: record size: %w", s.Segment, err)
	}
	return nil
}

// EachSegmentMember streams a segment's current members (all segments when
// segment is ""), ordered by segment and customer id.
func (db *DB) EachSegmentMember(ctx context.Context, segment string, fn func(segment, customerID string) error) error {
	q := "SELECT segment, customer_id FROM segment_members ORDER BY segment, customer_id"
	var args []any
	if segment != "" {
		q = "SELECT segment, customer_id FROM segment_members WHERE segment = ? ORDER BY customer_id"
		args = append(args, segment)
	}
	rows, err := db.session(ctx).Raw(q, args...).Rows()
	if err != nil {
		return fmt.Errorf("storage: read segment members: %w", err)
	}
	defer rows.Close()
	var s, id string
	for rows.Next() {
		if err := rows.Scan(&s, &id); err != nil {
			return fmt.Errorf("storage: read segment members: %w", err)
		}
		if err := fn(s, id); err != nil {
			return err
		}
	}
	return rows.Err()
}

// SegmentChanges returns up to limit changes with seq > after, oldest first.
func (db *DB) SegmentChanges(ctx context.Context, after int64, limit int) ([]SegmentChange, error) {
	var out []SegmentChange
	rows, err := db.session(ctx).Raw(`SELECT seq, segment, customer_id, change, at, pass FROM segment_changes
		WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: read segment changes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c SegmentChange
		if err := rows.Scan(&c.Seq, &c.Segment, &c.CustomerID, &c.Change, &c.At, &c.Pass); err != nil {
			return nil, fmt.Errorf("storage: read segment changes: %w", err)
		}
		c.At = c.At.UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

// SizeHistory returns a segment's sizes after each pass since since, oldest first.
func (db *DB) SizeHistory(ctx context.Context, segment string, since time.Time) ([]SegmentSize, error) {
	var out []SegmentSize
	rows, err := db.session(ctx).Raw(`SELECT segment, pass, at, size, entered, exited, held FROM segment_sizes
		WHERE segment = ? AND at >= ? ORDER BY pass`, segment, since.UTC()).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: segment %q: size history: %w", segment, err)
	}
	defer rows.Close()
	for rows.Next() {
		var s SegmentSize
		if err := rows.Scan(&s.Segment, &s.Pass, &s.At, &s.Size, &s.Entered, &s.Exited, &s.Held); err != nil {
			return nil, fmt.Errorf("storage: segment %q: size history: %w", segment, err)
		}
		s.At = s.At.UTC()
		out = append(out, s)
	}
	return out, rows.Err()
}
