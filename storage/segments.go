package storage

import (
	"context"
	"database/sql"
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
	w := tx.DiffWriter(pass, at)
	if err := w.Add(segment, entered, exited); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// DiffWriter writes the membership changes of one pass, for any number of
// segments, in multi-row statements of upsertChunk rows: rows of all
// segments are buffered together and a statement runs whenever a chunk
// fills, so a pass with many small per-segment diffs still runs full chunks
// and only one short remainder per table. (The full-chunk statement is
// prepared once per writer; note that the pure-Go SQLite driver still
// compiles it at every execution.) Changes get their seq numbers in the
// order they are added: per Add, entries then exits. Close flushes the
// remainder; call it before the transaction ends, also after an error.
type DiffWriter struct {
	tx   *Tx
	pass int64
	at   time.Time

	add, del, log []any // buffered parameters
	stmts         [3]*sql.Stmt
	err           error
}

const (
	diffAddHead = "INSERT INTO segment_members (segment, customer_id, since) VALUES "
	diffAddTail = " ON CONFLICT (segment, customer_id) DO NOTHING"
	diffLogHead = "INSERT INTO segment_changes (segment, customer_id, change, at, pass) VALUES "
	// Row values in a subquery so both databases look each pair up by the
	// primary key (a bare "IN (VALUES ...)" scans the table on SQLite).
	diffDelHead = "DELETE FROM segment_members WHERE (segment, customer_id) IN (SELECT * FROM (VALUES "
	diffDelTail = ") AS d)"
)

// DiffWriter returns a writer of pass's changes, all at time at.
func (tx *Tx) DiffWriter(pass int64, at time.Time) *DiffWriter {
	return &DiffWriter{tx: tx, pass: pass, at: at.UTC()}
}

// Add buffers a segment's entries and exits, writing every chunk that fills.
func (w *DiffWriter) Add(segment string, entered, exited []string) error {
	if w.err != nil {
		return w.err
	}
	for _, id := range entered {
		w.add = append(w.add, segment, id, w.at)
		w.log = append(w.log, segment, id, "enter", w.at, w.pass)
		if err := w.flush(false); err != nil {
			return fmt.Errorf("storage: segment %q: %w", segment, err)
		}
	}
	for _, id := range exited {
		w.del = append(w.del, segment, id)
		w.log = append(w.log, segment, id, "exit", w.at, w.pass)
		if err := w.flush(false); err != nil {
			return fmt.Errorf("storage: segment %q: %w", segment, err)
		}
	}
	return nil
}

// Close writes what is buffered and releases the prepared statements.
func (w *DiffWriter) Close() error {
	err := w.err
	if err == nil {
		if err = w.flush(true); err != nil {
			err = fmt.Errorf("storage: segment changes of pass %d: %w", w.pass, err)
		}
	}
	for i, st := range w.stmts {
		if st != nil {
			st.Close()
			w.stmts[i] = nil
		}
	}
	return err
}

// flush runs the full chunks buffered, and with all the remainder too.
func (w *DiffWriter) flush(all bool) error {
	for _, k := range []struct {
		i          int
		buf        *[]any
		cols       int
		head, tail string
		what       string
	}{
		{0, &w.add, 3, diffAddHead, diffAddTail, "add members"},
		{1, &w.del, 2, diffDelHead, diffDelTail, "remove members"},
		{2, &w.log, 5, diffLogHead, "", "log changes"},
	} {
		if err := w.run(k.i, k.buf, k.cols, k.head, k.tail, all); err != nil {
			w.err = fmt.Errorf("%s: %w", k.what, err)
			return w.err
		}
	}
	return nil
}

func (w *DiffWriter) run(i int, buf *[]any, cols int, head, tail string, all bool) error {
	ctx := w.tx.g.Statement.Context
	pool := w.tx.g.Statement.ConnPool
	full := cols * upsertChunk
	for len(*buf) >= full {
		if w.stmts[i] == nil {
			st, err := pool.PrepareContext(ctx, w.tx.values(head, cols, upsertChunk, tail))
			if err != nil {
				return err
			}
			w.stmts[i] = st
		}
		if _, err := w.stmts[i].ExecContext(ctx, (*buf)[:full]...); err != nil {
			return err
		}
		*buf = append((*buf)[:0], (*buf)[full:]...)
	}
	if all && len(*buf) > 0 {
		if _, err := pool.ExecContext(ctx, w.tx.values(head, cols, len(*buf)/cols, tail), *buf...); err != nil {
			return err
		}
		*buf = (*buf)[:0]
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
