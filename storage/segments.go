package storage

import (
	"context"
	"fmt"
	"strconv"
	"strings"
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
	return tx.DiffWriter(pass, at).Add(segment, entered, exited)
}

// DiffWriter writes the membership changes of one pass, for any number of
// segments. Each Add writes its segment's changes at once, in statements
// that bind the segment, the kind of change, the time and the pass once and
// then one parameter per customer id (diffChunk ids a statement): the
// pure-Go SQLite driver compiles every statement afresh at each execution
// and binds parameters in time quadratic in their number, so a statement of
// 100 ids costs a fraction of one of 100 rows of five parameters. Changes
// get their seq numbers in the order they are added: per Add, entries then
// exits, each in the order given.
type DiffWriter struct {
	tx   *Tx
	pass int64
	at   time.Time
	ids  []any // parameter buffer, reused
}

// diffChunk is customer ids per statement of a DiffWriter.
const diffChunk = 100

// DiffWriter returns a writer of pass's changes, all at time at.
func (tx *Tx) DiffWriter(pass int64, at time.Time) *DiffWriter {
	return &DiffWriter{tx: tx, pass: pass, at: at.UTC()}
}

// Add writes a segment's entries and exits.
func (w *DiffWriter) Add(segment string, entered, exited []string) error {
	if err := w.write(segment, entered, exited); err != nil {
		return fmt.Errorf("storage: segment %q: %w", segment, err)
	}
	return nil
}

func (w *DiffWriter) write(segment string, entered, exited []string) error {
	pg := w.tx.dialect == Postgres
	// Members: entries inserted (a member already there stays), exits
	// deleted by primary key.
	addHead := "INSERT INTO segment_members (segment, customer_id) SELECT ?, column1 FROM (VALUES "
	addTail := ") AS v WHERE true ON CONFLICT (segment, customer_id) DO NOTHING"
	delHead := "DELETE FROM segment_members WHERE segment = ? AND customer_id IN ("
	delTail := ")"
	// The log: the change, time and pass bound once per statement.
	logHead := "INSERT INTO segment_changes (segment, customer_id, change, at, pass) SELECT ?, column1, ?, ?, ? FROM (VALUES "
	logTail := ") AS v"
	if pg {
		addHead = "INSERT INTO segment_members (segment, customer_id) SELECT $1::text, column1 FROM (VALUES "
		delHead = "DELETE FROM segment_members WHERE segment = $1 AND customer_id IN ("
		logHead = "INSERT INTO segment_changes (segment, customer_id, change, at, pass) SELECT $1::text, column1, $2::text, $3::timestamptz, $4::bigint FROM (VALUES "
	}
	if err := w.chunks(addHead, addTail, true, entered, segment); err != nil {
		return fmt.Errorf("add members: %w", err)
	}
	if err := w.chunks(delHead, delTail, false, exited, segment); err != nil {
		return fmt.Errorf("remove members: %w", err)
	}
	if err := w.chunks(logHead, logTail, true, entered, segment, "enter", w.at, w.pass); err != nil {
		return fmt.Errorf("log entries: %w", err)
	}
	if err := w.chunks(logHead, logTail, true, exited, segment, "exit", w.at, w.pass); err != nil {
		return fmt.Errorf("log exits: %w", err)
	}
	return nil
}

// chunks runs head + ids + tail for every diffChunk ids, with the fixed
// parameters first (on PostgreSQL head numbers them $1..); ids are
// "(?),(?)" rows when rows is set, else "?,?".
func (w *DiffWriter) chunks(head, tail string, rows bool, ids []string, fixed ...any) error {
	ctx := w.tx.g.Statement.Context
	pool := w.tx.g.Statement.ConnPool
	for lo := 0; lo < len(ids); lo += diffChunk {
		chunk := ids[lo:min(lo+diffChunk, len(ids))]
		w.ids = append(w.ids[:0], fixed...)
		var b strings.Builder
		b.Grow(len(head) + len(tail) + len(chunk)*8)
		b.WriteString(head)
		for i, id := range chunk {
			if i > 0 {
				b.WriteByte(',')
			}
			if rows {
				b.WriteByte('(')
			}
			if w.tx.dialect == Postgres {
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(len(fixed) + i + 1))
			} else {
				b.WriteByte('?')
			}
			if rows {
				b.WriteByte(')')
			}
			w.ids = append(w.ids, id)
		}
		b.WriteString(tail)
		if _, err := pool.ExecContext(ctx, b.String(), w.ids...); err != nil {
			return err
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
