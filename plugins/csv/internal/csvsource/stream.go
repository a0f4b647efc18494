package csvsource

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// headerError says a version of a file cannot be loaded at all because
// of its header (the id column is gone, a name is doubled, it is empty).
type headerError struct {
	field string // the config key of the file: "path" or "events.path"
	path  string
	label string // starts a problem about it: "" for the customers file
	msg   string
}

func (e *headerError) Error() string {
	if e.path == "" {
		return e.msg
	}
	return e.path + ": " + e.msg
}

// plan maps the schema onto one version of the file's header.
type plan struct {
	nfields     int
	id          int
	fields      []int // record position of each schema column, -1 if absent
	consent     int   // -1 if none
	consentTime int   // -1 if none
	missing     []string
	extra       []string
}

func makePlan(header []string, sc *schema) (*plan, error) {
	idx, err := headerIndex(header)
	if err != nil {
		return nil, &headerError{msg: err.Error()}
	}
	p := &plan{nfields: len(header), consent: -1, consentTime: -1}
	var ok bool
	if p.id, ok = idx[sc.idColumn]; !ok {
		return nil, &headerError{msg: fmt.Sprintf("the id column %q is not in the header any more", sc.idColumn)}
	}
	known := map[string]bool{sc.idColumn: true}
	p.fields = make([]int, len(sc.cols))
	for k, c := range sc.cols {
		known[c.header] = true
		if i, ok := idx[c.header]; ok {
			p.fields[k] = i
		} else {
			p.fields[k] = -1
			p.missing = append(p.missing, c.header)
		}
	}
	for _, c := range []struct {
		col string
		at  *int
	}{{sc.consent, &p.consent}, {sc.consentTime, &p.consentTime}} {
		if c.col == "" {
			continue
		}
		known[c.col] = true
		if i, ok := idx[c.col]; ok {
			*c.at = i
		} else {
			p.missing = append(p.missing, c.col)
		}
	}
	for _, h := range header {
		if !known[h] {
			p.extra = append(p.extra, h)
		}
	}
	return p, nil
}

// streamer turns one version of the file into batches.
type streamer struct {
	sc        *schema
	delimiter rune
	batch     int
	hash      string // SHA-256 of this version
	prev      string // hash of the last version committed in full, "" if none
	// ev is the events part of the cursors sent: what the host has
	// committed of the events file, unchanged while customers stream.
	ev evCursor
	// last marks the final batch CaughtUp: nothing follows it (no events).
	last bool
	// resume: rows ending at or before this offset were committed already;
	// they are read (for duplicate ids) but not sent again.
	resume int64
	// baseline holds the ids of the version the host committed last, for
	// delete_missing; nil means no deletes.
	baseline map[string]int32
	// keepIDs makes run return the ids (for the next version's deletes).
	keepIDs bool
	// consentTime is the time given to consent changes without a time
	// column value: the file's modification time.
	consentTime time.Time
	basis       string
	// fb is the stream's FlatBatch (its Names are the schema's traits,
	// column k's at k); emit sends it, and run resets it after each send.
	fb   *sdk.FlatBatch
	emit func(*sdk.FlatBatch) error
	// beforeFinal runs before the last batch, which carries the cursor of
	// the whole version; an error stops the stream before it is sent.
	beforeFinal func() error
	// sizeHint is the expected number of rows.
	sizeHint int
	// onPlan is told how the header maps onto the schema.
	onPlan func(*plan)

	stats streamStats
}

// streamStats counts what a stream sent.
type streamStats struct {
	customers, problems, consents, deletes int
}

func (st *streamStats) add(b *sdk.FlatBatch) {
	st.customers += len(b.Customers)
	st.problems += len(b.Problems)
	st.consents += len(b.Consents)
	st.deletes += len(b.Deletes)
}

// run streams r, which holds the whole file, and returns the ids it holds
// with the line of each (nil unless keepIDs).
func (s *streamer) run(ctx context.Context, r io.Reader) (map[string]int32, error) {
	cr := newCSVReader(r, s.delimiter)
	header, err := readHeader(cr)
	if errors.Is(err, io.EOF) {
		return nil, &headerError{msg: "the file is empty: it needs a header row naming the columns"}
	}
	if err != nil {
		return nil, &headerError{msg: fmt.Sprintf("cannot read the header: %v", err)}
	}
	p, err := makePlan(header, s.sc)
	if err != nil {
		return nil, err
	}
	if s.onPlan != nil {
		s.onPlan(p)
	}
	cols := s.sc.cols
	seen := newIDSet(s.keepIDs, s.sizeHint)
	b := s.fb
	b.Reset()
	cur := cursor{hash: s.hash, partial: true, prev: s.prev, ev: s.ev}
	flush := func(offset int64) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		cur.offset = offset
		b.Cursor = cur.String()
		if err := s.emit(b); err != nil {
			return err
		}
		s.stats.add(b)
		b.Reset()
		return nil
	}
	idHeader := s.sc.idColumn
	for n := 1; ; n++ {
		if len(b.Customers) >= s.batch || len(b.Problems) >= s.batch {
			if err := flush(cr.InputOffset()); err != nil {
				return nil, err
			}
		}
		if n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		end := cr.InputOffset()
		send := end > s.resume
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return nil, err
			}
			if send {
				msg := fmt.Sprintf("line %d: %v; row skipped", pe.StartLine, pe.Err)
				if pe.Line != pe.StartLine {
					msg = fmt.Sprintf("line %d: %v at line %d; row skipped", pe.StartLine, pe.Err, pe.Line)
				}
				b.Problems = append(b.Problems, sdk.Problem{Line: pe.StartLine, Message: msg})
			}
			continue
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != p.nfields {
			if send {
				b.Problems = append(b.Problems, sdk.Problem{Line: line, Message: fmt.Sprintf(
					"line %d: %d fields where the header has %d; row skipped", line, len(rec), p.nfields)})
			}
			continue
		}
		id := strings.TrimSpace(rec[p.id])
		if id == "" {
			if send {
				b.Problems = append(b.Problems, sdk.Problem{Line: line, Column: p.id + 1, Field: idHeader, Message: fmt.Sprintf(
					"line %d, column %d (%s): no customer id; row skipped", line, p.id+1, idHeader)})
			}
			continue
		}
		if first, dup := seen.add(id, line); dup {
			if send {
				b.Problems = append(b.Problems, sdk.Problem{CustomerID: id, Line: line, Column: p.id + 1, Field: idHeader, Message: fmt.Sprintf(
					"line %d, column %d (%s): customer id %s is already on line %d; row skipped (the first row wins)", line, p.id+1, idHeader, quoteCell(id), first)})
			}
			continue
		}
		if !send {
			continue
		}
		b.AddCustomer(id)
		for k := range cols {
			fi := p.fields[k]
			if fi < 0 {
				continue
			}
			v := strings.TrimSpace(rec[fi])
			if v == "" {
				continue // missing, not null: an upsert keeps what was there
			}
			// Parsed in place, into a trait taken back on failure.
			b.Traits = append(b.Traits, sdk.FlatTrait{Name: k})
			if msg := cols[k].parse(&b.Traits[len(b.Traits)-1].Value, v); msg != "" {
				b.Traits = b.Traits[:len(b.Traits)-1]
				b.Problems = append(b.Problems, s.fieldProblem(cr, id, cols[k].trait, fi, msg))
			}
		}
		b.Customers[len(b.Customers)-1].End = len(b.Traits)
		if p.consent >= 0 {
			if cc, prob := s.consentChange(cr, rec, p, id); prob != nil {
				b.Problems = append(b.Problems, *prob)
			} else if cc != nil {
				b.Consents = append(b.Consents, *cc)
			}
		}
	}

	var deletes []string
	if s.baseline != nil {
		for id := range s.baseline {
			if _, ok := seen.byID[id]; !ok {
				deletes = append(deletes, id)
			}
		}
		slices.Sort(deletes)
	}
	// Deletes go in batches of the same size. Those before the last carry
	// the cursor of the last row: resumed from there, the deletes are
	// worked out again (those already committed are sent again, harmlessly).
	for len(deletes) > s.batch {
		b.Deletes = deletes[:s.batch]
		deletes = deletes[s.batch:]
		if err := flush(cr.InputOffset()); err != nil {
			return nil, err
		}
	}
	b.Deletes = deletes
	if s.beforeFinal != nil {
		if err := s.beforeFinal(); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.Cursor = cursor{hash: s.hash, ev: s.ev}.String()
	b.CaughtUp = s.last
	if err := s.emit(b); err != nil {
		return nil, err
	}
	s.stats.add(b)
	return seen.byID, nil
}

func (s *streamer) fieldProblem(cr *csv.Reader, id, field string, fi int, msg string) sdk.Problem {
	line, _ := cr.FieldPos(fi)
	return sdk.Problem{
		CustomerID: id,
		Field:      field,
		Line:       line,
		Column:     fi + 1,
		Message:    fmt.Sprintf("line %d, column %d (%s): %s", line, fi+1, field, msg),
	}
}

// consentChange reads the consent columns of a row: nil, nil when the
// consent cell is empty.
func (s *streamer) consentChange(cr *csv.Reader, rec []string, p *plan, id string) (*sdk.ConsentChange, *sdk.Problem) {
	v := strings.TrimSpace(rec[p.consent])
	if v == "" {
		return nil, nil
	}
	yes, ok := parseBool(v)
	if !ok {
		pr := s.fieldProblem(cr, id, s.sc.consent, p.consent, quoteCell(v)+" is not yes/no, true/false or 1/0")
		return nil, &pr
	}
	t := s.consentTime
	if p.consentTime >= 0 {
		if tv := strings.TrimSpace(rec[p.consentTime]); tv != "" {
			pt, ok := parseDefaultTime(tv)
			if !ok {
				pr := s.fieldProblem(cr, id, s.sc.consentTime, p.consentTime,
					quoteCell(tv)+" is not a time (RFC 3339, 2006-01-02 or 2006-01-02 15:04:05); consent not recorded")
				return nil, &pr
			}
			t = pt
		}
	}
	status := sdk.OptOut
	if yes {
		status = sdk.OptIn
	}
	return &sdk.ConsentChange{CustomerID: id, Kind: "email", Status: status, Time: t, Basis: s.basis}, nil
}
