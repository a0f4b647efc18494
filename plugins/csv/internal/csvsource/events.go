package csvsource

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cohortd/cohort/sdk"
)

// eventSchema is what Configure learned about the events file.
type eventSchema struct {
	set *eventSettings
	// names maps each declared event name to itself, so an event's Name is
	// the declared string and not a slice of the row it came from.
	names    map[string]string
	list     []string // SourceInfo.EventNames
	declared bool     // names came from the config, not the file
	rows     int      // data rows scanned at Configure (0 when declared)
	// label starts the events file's problem messages (its base name), as
	// their lines are not the customers file's.
	label       string
	fingerprint []byte
}

// buildEventSchema checks the events file's header against the config and,
// unless the config lists the event names, collects them from the file.
func buildEventSchema(ctx context.Context, set *settings) (*eventSchema, error) {
	ev := set.events
	f, err := os.Open(ev.path)
	if err != nil {
		return nil, configError("events.path", "cannot read the events CSV file: %v (a relative path is relative to the daemon's working directory)", err)
	}
	defer f.Close()
	cr := newCSVReader(bufio.NewReaderSize(f, 64<<10), set.delimiter)
	header, err := readHeader(cr)
	if errors.Is(err, io.EOF) {
		return nil, configError("events.path", "%s is empty; it needs a header row naming the columns", ev.path)
	}
	if err != nil {
		return nil, configError("events.path", "cannot read the header of %s: %v", ev.path, err)
	}
	idx, err := headerIndex(header)
	if err != nil {
		return nil, configError("events.path", "%s: %v", ev.path, err)
	}
	for r, col := range ev.cols {
		if col == "" {
			continue
		}
		if _, ok := idx[col]; !ok {
			return nil, configError("events."+eventRoles[r].key, "column %q is not in the header of %s; the header has: %s", col, ev.path, listHeader(header))
		}
	}
	es := &eventSchema{set: ev, label: filepath.Base(ev.path)}
	if ev.names != nil {
		es.declared = true
		es.list = slices.Clone(ev.names)
	} else {
		if es.list, es.rows, err = scanEventNames(ctx, cr, len(header), idx[ev.cols[evName]], ev.cols[evName], ev.path); err != nil {
			return nil, err
		}
	}
	es.names = make(map[string]string, len(es.list))
	for _, n := range es.list {
		es.names[n] = n
	}
	es.fingerprint = eventFingerprint(set, es)
	return es, nil
}

// scanEventNames reads the rest of the file and returns the distinct
// non-empty names in column col, sorted, and the number of rows read. Rows
// that will be reported when the file is loaded (broken quoting, the wrong
// number of fields) are passed over, as are names that are not UTF-8.
func scanEventNames(ctx context.Context, cr *csv.Reader, nfields, col int, header, path string) ([]string, int, error) {
	seen := map[string]struct{}{}
	rows := 0
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				continue
			}
			return nil, 0, configError("events.path", "cannot read the events CSV file: %v", err)
		}
		rows++
		if rows&8191 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
		}
		if len(rec) != nfields {
			continue
		}
		name := strings.TrimSpace(rec[col])
		if name == "" {
			continue
		}
		if _, ok := seen[name]; ok || !utf8.ValidString(name) {
			continue
		}
		if len(seen) == maxEventNames {
			line, _ := cr.FieldPos(col)
			return nil, 0, configError("events.names", "the event name column %q of %s holds more than %d distinct names (name %d, %s, is on line %d); if it is the right column, list the events to load in events.names",
				header, path, maxEventNames, maxEventNames+1, quoteCell(name), line)
		}
		seen[strings.Clone(name)] = struct{}{}
	}
	names := sortedKeys(seen)
	return names, rows, nil
}

// eventFingerprint encodes what of the config decides the batches sent for
// a given events file.
func eventFingerprint(set *settings, es *eventSchema) []byte {
	ev := set.events
	var b strings.Builder
	fmt.Fprintf(&b, "csv1-events\x00delim=%q\x00layout=%q\x00", set.delimiter, ev.layout)
	for r, col := range ev.cols {
		fmt.Fprintf(&b, "%s=%q\x00", eventRoles[r].key, col)
	}
	names := slices.Clone(es.list)
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "name=%q\x00", n)
	}
	b.WriteString("\n")
	return []byte(b.String())
}

// eventPlan maps the event columns onto one version of the file's header.
type eventPlan struct {
	nfields int
	at      [numEventRoles]int // record position of each column; value -1 if not configured
}

func makeEventPlan(header []string, es *eventSchema) (*eventPlan, error) {
	idx, err := headerIndex(header)
	if err != nil {
		return nil, es.headerError(err.Error())
	}
	p := &eventPlan{nfields: len(header)}
	for r, col := range es.set.cols {
		p.at[r] = -1
		if col == "" {
			continue
		}
		i, ok := idx[col]
		if !ok {
			return nil, es.headerError(fmt.Sprintf("the %s column %q is not in the header any more", eventRoles[r].what, col))
		}
		p.at[r] = i
	}
	return p, nil
}

func (es *eventSchema) headerError(msg string) *headerError {
	return &headerError{field: "events.path", path: es.set.path, label: es.label + ": ", msg: msg}
}

// parseTime parses an event's time: RFC 3339, or the configured layout.
func (es *eventSchema) parseTime(s string) (time.Time, bool) {
	if es.set.layout != "" {
		t, err := time.Parse(es.set.layout, s)
		return t, err == nil
	}
	// RFC 3339 is the default layouts' "T" form: parseDefaultTime parses
	// the common shapes by hand and hands offsets to time.Parse.
	if len(s) < 20 || s[10] != 'T' {
		return time.Time{}, false
	}
	return parseDefaultTime(s)
}

// eventStreamer turns one version of the events file into batches.
type eventStreamer struct {
	sc        *eventSchema
	delimiter rune
	batch     int
	hash      string // SHA-256 of this version
	size      int64  // its length: only this much of the file is read
	// resume is the offset of the first row to send (0: all); linesBefore
	// is the number of lines before it, for the problems' line numbers.
	resume      int64
	linesBefore int
	// base is the cursor the batches' cursors are made from: its customers
	// part is kept, its events part replaced.
	base cursor
	// fb is the stream's FlatBatch; run resets it after each send.
	fb   *sdk.FlatBatch
	emit func(*sdk.FlatBatch) error
	// beforeFinal runs before the last batch, which carries the cursor of
	// the whole version; an error stops the stream before it is sent.
	beforeFinal func() error

	stats struct{ events, problems int }
}

// run streams the file, which must hold at least size bytes. The rows
// before resume are not read: the header is read, and then the rows from
// resume on.
func (s *eventStreamer) run(ctx context.Context, f io.ReaderAt) error {
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, s.size), 64<<10)
	cr := newCSVReader(br, s.delimiter)
	header, err := readHeader(cr)
	if errors.Is(err, io.EOF) {
		return s.sc.headerError("the file is empty: it needs a header row naming the columns")
	}
	if err != nil {
		return s.sc.headerError(fmt.Sprintf("cannot read the header: %v", err))
	}
	p, err := makeEventPlan(header, s.sc)
	if err != nil {
		return err
	}
	var start int64 // offset in the file of what cr reads
	lineBase := 0   // lines before what cr reads
	if s.resume > cr.InputOffset() {
		br.Reset(io.NewSectionReader(f, s.resume, max(s.size-s.resume, 0)))
		cr = newCSVReader(br, s.delimiter)
		start, lineBase = s.resume, s.linesBefore
	}

	cur := s.base
	cur.ev = evCursor{hash: s.hash, partial: true}
	b := s.fb
	b.Reset()
	flush := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		cur.ev.offset = start + cr.InputOffset()
		b.Cursor = cur.String()
		if err := s.emit(b); err != nil {
			return err
		}
		s.stats.events += len(b.Events)
		s.stats.problems += len(b.Problems)
		b.Reset()
		return nil
	}
	at := &p.at
	names := s.sc.names
	// clean is false when the last row read was broken: then a later
	// version that appends to this one cannot be sent from its end (the
	// appended bytes may complete that row).
	clean := true
	for n := 1; ; n++ {
		if len(b.Events) >= s.batch || len(b.Problems) >= s.batch {
			if err := flush(); err != nil {
				return err
			}
		}
		if n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return fmt.Errorf("csv: reading %s: %w", s.sc.set.path, err)
			}
			clean = false
			line := lineBase + pe.StartLine
			msg := fmt.Sprintf("%s: line %d: %v; row skipped", s.sc.label, line, pe.Err)
			if pe.Line != pe.StartLine {
				msg = fmt.Sprintf("%s: line %d: %v at line %d; row skipped", s.sc.label, line, pe.Err, lineBase+pe.Line)
			}
			b.Problems = append(b.Problems, sdk.Problem{Line: line, Message: msg})
			continue
		}
		clean = true
		if len(rec) != p.nfields {
			line, _ := cr.FieldPos(0)
			line += lineBase
			b.Problems = append(b.Problems, sdk.Problem{Line: line, Message: fmt.Sprintf(
				"%s: line %d: %d fields where the header has %d; row skipped", s.sc.label, line, len(rec), p.nfields)})
			continue
		}
		id := strings.TrimSpace(rec[at[evID]])
		customer := strings.TrimSpace(rec[at[evCustomer]])
		name := strings.TrimSpace(rec[at[evName]])
		tv := strings.TrimSpace(rec[at[evTime]])
		canon, known := names[name]
		t, timeOK := s.sc.parseTime(tv)
		var value float64
		hasValue, valueOK := false, true
		if at[evValue] >= 0 {
			if vv := strings.TrimSpace(rec[at[evValue]]); vv != "" {
				value, valueOK = parseNumber(vv)
				hasValue = true
			}
		}
		if id != "" && customer != "" && known && timeOK && valueOK && utf8.ValidString(id) && utf8.ValidString(customer) {
			b.Events = append(b.Events, sdk.Event{ID: id, CustomerID: customer, Name: canon, Time: t, Value: value, HasValue: hasValue})
			continue
		}
		b.Problems = append(b.Problems, s.rowProblem(cr, lineBase, rec, at, id, customer, name, tv))
	}

	if s.beforeFinal != nil {
		if err := s.beforeFinal(); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cur.ev = evCursor{hash: s.hash}
	if clean {
		cur.ev.size = s.size
	}
	b.Cursor = cur.String()
	b.CaughtUp = true
	if err := s.emit(b); err != nil {
		return err
	}
	s.stats.events += len(b.Events)
	s.stats.problems += len(b.Problems)
	return nil
}

// rowProblem reports the first thing wrong with a row that is not an
// event, in the order of the columns' roles.
func (s *eventStreamer) rowProblem(cr *csv.Reader, lineBase int, rec []string, at *[numEventRoles]int, id, customer, name, tv string) sdk.Problem {
	role, msg := evValue, ""
	switch {
	case id == "":
		role, msg = evID, "no event id"
	case !utf8.ValidString(id):
		role, msg = evID, quoteCell(id)+" is not UTF-8 text (save the file as UTF-8)"
	case customer == "":
		role, msg = evCustomer, "no customer id"
	case !utf8.ValidString(customer):
		role, msg = evCustomer, quoteCell(customer)+" is not UTF-8 text (save the file as UTF-8)"
	case name == "":
		role, msg = evName, "no event name"
	case s.sc.names[name] == "":
		role = evName
		if s.sc.declared {
			msg = "event name " + quoteCell(name) + " is not in events.names"
		} else {
			msg = "event name " + quoteCell(name) + " was not in the file when the source started; restart the source to load it"
		}
	case tv == "":
		role, msg = evTime, "no time"
	default:
		if _, ok := s.sc.parseTime(tv); !ok {
			role = evTime
			if l := s.sc.set.layout; l != "" {
				msg = quoteCell(tv) + " is not a time in the layout " + strconv.Quote(l)
			} else {
				msg = quoteCell(tv) + " is not an RFC 3339 time (e.g. 2025-11-21T09:30:00Z)"
			}
		} else {
			msg = quoteCell(strings.TrimSpace(rec[at[evValue]])) + " is not a number"
		}
	}
	fi := at[role]
	line, _ := cr.FieldPos(fi)
	line += lineBase
	field := s.sc.set.cols[role]
	if !utf8.ValidString(customer) {
		customer = ""
	}
	return sdk.Problem{
		CustomerID: customer,
		Field:      field,
		Line:       line,
		Column:     fi + 1,
		Message:    fmt.Sprintf("%s: line %d, column %d (%s): %s; row skipped", s.sc.label, line, fi+1, field, msg),
	}
}
