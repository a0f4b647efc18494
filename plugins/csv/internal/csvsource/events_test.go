package csvsource

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/sdk"
)

// eventsBlock is an events config block for a file with the columns of
// testdata/events.csv.
func eventsBlock(path string, extra ...string) string {
	b := "events:\n  path: " + path + "\n  id_column: event_id\n  customer_column: customer_id\n  name_column: event\n  time_column: time\n  value_column: value\n"
	for _, e := range extra {
		b += "  " + e + "\n"
	}
	return b
}

const eventsHeader = "event_id,customer_id,event,time,value\n"

// customersAndEvents writes a customers file of n rows and an events file
// with the given rows (after eventsHeader) to a new directory, and returns
// their paths.
func customersAndEvents(t *testing.T, n int, events ...string) (cust, ev string) {
	t.Helper()
	dir := t.TempDir()
	cust = writeFile(t, dir, "crm.csv", csvRows(n, "pro"))
	ev = writeFile(t, dir, "events.csv", eventsHeader+strings.Join(events, ""))
	return cust, ev
}

// eventRows returns rows E<from>..E<to> of an events file: purchases of
// customer C<i mod 3 + 1> with value i, a minute apart.
func eventRows(from, to int) []string {
	var rows []string
	for i := from; i <= to; i++ {
		rows = append(rows, fmt.Sprintf("E%03d,C%03d,purchase,2025-11-21T10:%02d:00Z,%d\n", i, i%3+1, i%60, i))
	}
	return rows
}

func TestEventsConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cust := testdataPath(t, "customers.csv")
	events := testdataPath(t, "events.csv")
	empty := writeFile(t, dir, "empty.csv", "")
	dupHeader := writeFile(t, dir, "duph.csv", "event_id,event,event\n")
	missing := filepath.Join(dir, "missing.csv")
	var many strings.Builder
	many.WriteString(eventsHeader)
	for i := range 1001 {
		fmt.Fprintf(&many, "E%d,C1,name_%04d,2025-11-21T10:00:00Z,\n", i, i)
	}
	manyNames := writeFile(t, dir, "many.csv", many.String())
	min := "path: x.csv\nid_column: id\n"
	good := "path: " + cust + "\nid_column: customerID\n"
	header := `"event_id", "customer_id", "event", "time", "value", "channel"`

	for _, tc := range []struct {
		name, config, field, msg string
	}{
		{"empty block", min + "events:\n", "events.path",
			"line 3:1: events is empty; set events.path and the columns, or remove events"},
		{"unknown key", min + "events: {path: e.csv, idcolumn: x}", "events.idcolumn",
			`events.idcolumn: line 3:23: unknown key "idcolumn" in events (known keys: customer_column, id_column, name_column, names, path, time_column, time_format, value_column); did you mean "id_column"?`},
		{"not a mapping", min + "events: e.csv", "events",
			`events: line 3:9: expected a mapping of keys to values, found "e.csv"`},
		{"no path", min + "events: {id_column: a}", "events.path",
			"events.path: required when events is set; set it to the events CSV file (a relative path is relative to the daemon's working directory)"},
		{"no id column", min + "events: {path: e.csv}", "events.id_column",
			"events.id_column: required when events is set; set it to the header of the column holding each event's stable id (the daemon deduplicates events by it)"},
		{"no customer column", min + "events: {path: e.csv, id_column: a}", "events.customer_column",
			"events.customer_column: required when events is set; set it to the header of the column holding the customer id"},
		{"no name column", min + "events: {path: e.csv, id_column: a, customer_column: b}", "events.name_column",
			"events.name_column: required when events is set; set it to the header of the column holding the event name"},
		{"no time column", min + "events: {path: e.csv, id_column: a, customer_column: b, name_column: c}", "events.time_column",
			"events.time_column: required when events is set; set it to the header of the column holding the event time"},
		{"a column twice", min + "events: {path: e.csv, id_column: a, customer_column: b, name_column: c, time_column: d, value_column: b}", "events.value_column",
			`events.value_column: "b" is also events.customer_column; each needs its own column`},
		{"time format without a date", min + eventsBlock("e.csv", "time_format: '15:04'"), "events.time_format",
			`events.time_format: "15:04" is not a Go time layout with a date; write the reference time 2006-01-02 15:04:05 as your file does, e.g. "2006-01-02 15:04:05" or "02/01/2006 15:04" (default: RFC 3339)`},
		{"names not a list", min + eventsBlock("e.csv", "names: purchase"), "events.names",
			`events.names: line 10:10: expected a list, found "purchase"`},
		{"names empty", min + eventsBlock("e.csv", "names: []"), "events.names",
			"events.names: is empty; list the event names to load, or remove names to take them from the file"},
		{"name empty", min + eventsBlock("e.csv", "names: [a, '']"), "events.names",
			"events.names: name 2 is empty"},
		{"name with a space", min + eventsBlock("e.csv", "names: ['a ']"), "events.names",
			`events.names: "a " starts or ends with a space; remove it`},
		{"name twice", min + eventsBlock("e.csv", "names: [a, b, a]"), "events.names",
			`events.names: "a" is listed twice (names 1 and 3); keep one`},

		{"file missing", good + eventsBlock(missing), "events.path",
			"events.path: cannot read the events CSV file: open " + missing + ": no such file or directory (a relative path is relative to the daemon's working directory)"},
		{"file empty", good + eventsBlock(empty), "events.path",
			"events.path: " + empty + " is empty; it needs a header row naming the columns"},
		{"duplicate header", good + eventsBlock(dupHeader), "events.path",
			"events.path: " + dupHeader + `: columns 2 and 3 are both named "event"; header names must be unique`},
		{"column not in header", good + strings.Replace(eventsBlock(events), "value_column: value", "value_column: amount", 1), "events.value_column",
			`events.value_column: column "amount" is not in the header of ` + events + "; the header has: " + header},
		{"too many names", good + eventsBlock(manyNames), "events.names",
			`events.names: the event name column "event" of ` + manyNames + ` holds more than 1000 distinct names (name 1001, "name_1000", is on line 1002); if it is the right column, list the events to load in events.names`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newTestSource(t).Configure(t.Context(), sdk.ConfigureRequest{Config: []byte(tc.config)})
			if err == nil {
				t.Fatalf("Configure accepted:\n%s", tc.config)
			}
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is a %T, want *sdk.Error", err, err)
			}
			if e.Code != sdk.InvalidConfig || e.Field != tc.field {
				t.Errorf("code, field = %v, %q; want INVALID_CONFIG, %q", e.Code, e.Field, tc.field)
			}
			if err.Error() != tc.msg {
				t.Errorf("message:\n got %s\nwant %s", err, tc.msg)
			}
		})
	}
	// 1000 names declared are fine; so are 1000 in the file.
	configure(t, newTestSource(t), good+eventsBlock(manyNames, "names: [a]"))
	if err := os.WriteFile(manyNames, []byte(strings.Join(strings.SplitAfter(many.String(), "\n")[:1001], "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if info := configure(t, newTestSource(t), good+eventsBlock(manyNames)); len(info.EventNames) != 1000 {
		t.Errorf("%d event names from a file with 1000, want 1000", len(info.EventNames))
	}
}

// TestEventNames: declared names are SourceInfo.EventNames in config order;
// without them, the distinct names of the file, sorted, not counting
// empty cells and rows that will be reported.
func TestEventNames(t *testing.T) {
	cust := "path: " + testdataPath(t, "customers.csv") + "\nid_column: customerID\n"
	info := configure(t, newTestSource(t), cust+eventsBlock(testdataPath(t, "events.csv"), "names: [purchase, signup]"))
	if diff := cmp.Diff([]string{"purchase", "signup"}, info.EventNames); diff != "" {
		t.Errorf("declared names (-want +got):\n%s", diff)
	}
	path := writeFile(t, t.TempDir(), "events.csv", eventsHeader+
		"E1,C1,  page_view ,2025-11-21T10:00:00Z,\n"+
		"E2,C1,,2025-11-21T10:00:00Z,\n"+
		"E3,C1,app_open,2025-11-21T10:00:00Z\n"+ // wrong number of fields
		"E4,C1,\"purchase\",2025-11-21T10:00:00Z,5\n"+
		"E5,C1,page_view,2025-11-21T10:00:00Z,\n")
	info = configure(t, newTestSource(t), cust+eventsBlock(path))
	if diff := cmp.Diff([]string{"page_view", "purchase"}, info.EventNames); diff != "" {
		t.Errorf("names from the file (-want +got):\n%s", diff)
	}
	info = configure(t, newTestSource(t), cust)
	if info.EventNames != nil {
		t.Errorf("without events, EventNames = %q", info.EventNames)
	}
}

// TestEventsLoaded pulls testdata's customers and events: the customers
// first, then the events, in batches of the batch size, with exact values.
func TestEventsLoaded(t *testing.T) {
	s := newTestSource(t)
	info := configure(t, s, "path: "+testdataPath(t, "customers.csv")+"\nid_column: customerID\nbatch: 4\nwatch: false\n"+eventsBlock(testdataPath(t, "events.csv")))
	if diff := cmp.Diff([]string{"app_open", "page_view", "purchase"}, info.EventNames); diff != "" {
		t.Errorf("event names (-want +got):\n%s", diff)
	}
	bs := pullAll(t, s, "")
	var shape []string
	for _, b := range bs {
		shape = append(shape, fmt.Sprintf("%dc%de", len(b.Customers), len(b.Events)))
	}
	if diff := cmp.Diff([]string{"4c0e", "2c0e", "0c4e", "0c3e"}, shape); diff != "" {
		t.Errorf("customers and events per batch (-want +got):\n%s", diff)
	}
	utc := func(s string) time.Time {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			panic(err)
		}
		return t
	}
	want := []sdk.Event{
		{ID: "E001", CustomerID: "C001", Name: "purchase", Time: utc("2025-03-01T10:00:00Z"), Value: 120.5, HasValue: true},
		{ID: "E002", CustomerID: "C001", Name: "app_open", Time: utc("2025-03-01T10:05:00Z")},
		{ID: "E003", CustomerID: "C002", Name: "page_view", Time: utc("2025-02-11T08:30:00Z")},
		{ID: "E004", CustomerID: "C005", Name: "purchase", Time: utc("2025-03-01T15:00:00Z"), Value: 12000.75, HasValue: true},
		{ID: "E005", CustomerID: "C004", Name: "app_open", Time: utc("2025-01-30T17:45:10.25Z")},
		{ID: "E006", CustomerID: "C007", Name: "page_view", Time: utc("2025-03-03T12:00:00Z")},
		{ID: "E007", CustomerID: "C003", Name: "purchase", Time: utc("2025-03-04T09:15:00Z"), Value: 0, HasValue: true},
	}
	m := merge(bs)
	if diff := cmp.Diff(want, m.events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if len(m.problems) != 0 {
		t.Errorf("problems: %+v", m.problems)
	}
	// The customers' last batch says the customers file is done; the
	// events batches carry it on.
	c2, ok := parseCursor(bs[1].Cursor)
	if !ok || c2.partial || c2.ev.hash != "" {
		t.Errorf("cursor of the customers' last batch = %q, want the whole customers version and no events", bs[1].Cursor)
	}
	c3, ok := parseCursor(bs[2].Cursor)
	if !ok || c3.hash != c2.hash || c3.partial || !c3.ev.partial {
		t.Errorf("cursor of the first events batch = %q, want the customers version and an events offset", bs[2].Cursor)
	}
	size, err := os.Stat(testdataPath(t, "events.csv"))
	if err != nil {
		t.Fatal(err)
	}
	last, ok := parseCursor(bs[3].Cursor)
	if !ok || last.hash != c2.hash || last.ev.partial || last.ev.size != size.Size() {
		t.Errorf("last cursor = %q, want the customers version and the whole events version (size %d)", bs[3].Cursor, size.Size())
	}
	if got := merge(pullAll(t, s, bs[3].Cursor)); len(got.customers)+len(got.events) != 0 || got.cursor != bs[3].Cursor {
		t.Errorf("pull from the last cursor sent %d customers, %d events, cursor %q", len(got.customers), len(got.events), got.cursor)
	}
}

// TestEventsProblems checks what is reported, and what still loads, for
// bad event rows.
func TestEventsProblems(t *testing.T) {
	type problem struct {
		CustomerID, Field string
		Line, Column      int
		Message           string
	}
	for _, tc := range []struct {
		name     string
		extra    []string // config keys in the events block
		rows     []string // after the header
		wantIDs  []string
		problems []problem
	}{
		{
			name:    "clean",
			rows:    []string{"E1,C1,purchase,2025-11-21T10:00:00Z,9.5", " E2 , C2 , app_open , 2025-11-21T10:00:00.5+02:00 ,  "},
			wantIDs: []string{"E1", "E2"},
		},
		{
			name:     "no event id",
			rows:     []string{"E1,C1,purchase,2025-11-21T10:00:00Z,", " ,C2,purchase,2025-11-21T10:00:00Z,", "E3,C3,purchase,2025-11-21T10:00:00Z,"},
			wantIDs:  []string{"E1", "E3"},
			problems: []problem{{"C2", "event_id", 3, 1, "events.csv: line 3, column 1 (event_id): no event id; row skipped"}},
		},
		{
			name:     "no customer id",
			rows:     []string{"E1,,purchase,2025-11-21T10:00:00Z,"},
			problems: []problem{{"", "customer_id", 2, 2, "events.csv: line 2, column 2 (customer_id): no customer id; row skipped"}},
		},
		{
			name:     "no event name",
			rows:     []string{"E1,C1,,2025-11-21T10:00:00Z,"},
			problems: []problem{{"C1", "event", 2, 3, "events.csv: line 2, column 3 (event): no event name; row skipped"}},
		},
		{
			name:     "name not declared",
			rows:     []string{"E1,C1,signup,2025-11-21T10:00:00Z,", "E2,C1,Purchase,2025-11-21T10:00:00Z,"},
			problems: []problem{{"C1", "event", 2, 3, `events.csv: line 2, column 3 (event): event name "signup" is not in events.names; row skipped`}, {"C1", "event", 3, 3, `events.csv: line 3, column 3 (event): event name "Purchase" is not in events.names; row skipped`}},
		},
		{
			name:    "no time, or not RFC 3339",
			rows:    []string{"E1,C1,purchase,,", "E2,C1,purchase,2025-11-21,", "E3,C1,purchase,2025-11-21 10:00:00,", "E4,C1,purchase,2025-02-30T10:00:00Z,", "E5,C1,purchase,2025-11-21T10:00:00+0200,", "E6,C1,purchase,2025-11-21T10:00:00,"},
			wantIDs: nil,
			problems: []problem{
				{"C1", "time", 2, 4, "events.csv: line 2, column 4 (time): no time; row skipped"},
				{"C1", "time", 3, 4, `events.csv: line 3, column 4 (time): "2025-11-21" is not an RFC 3339 time (e.g. 2025-11-21T09:30:00Z); row skipped`},
				{"C1", "time", 4, 4, `events.csv: line 4, column 4 (time): "2025-11-21 10:00:00" is not an RFC 3339 time (e.g. 2025-11-21T09:30:00Z); row skipped`},
				{"C1", "time", 5, 4, `events.csv: line 5, column 4 (time): "2025-02-30T10:00:00Z" is not an RFC 3339 time (e.g. 2025-11-21T09:30:00Z); row skipped`},
				{"C1", "time", 6, 4, `events.csv: line 6, column 4 (time): "2025-11-21T10:00:00+0200" is not an RFC 3339 time (e.g. 2025-11-21T09:30:00Z); row skipped`},
				{"C1", "time", 7, 4, `events.csv: line 7, column 4 (time): "2025-11-21T10:00:00" is not an RFC 3339 time (e.g. 2025-11-21T09:30:00Z); row skipped`},
			},
		},
		{
			name:     "time in a layout",
			extra:    []string{"time_format: '02/01/2006 15:04'"},
			rows:     []string{"E1,C1,purchase,21/11/2025 10:30,", "E2,C1,purchase,2025-11-21T10:00:00Z,"},
			wantIDs:  []string{"E1"},
			problems: []problem{{"C1", "time", 3, 4, `events.csv: line 3, column 4 (time): "2025-11-21T10:00:00Z" is not a time in the layout "02/01/2006 15:04"; row skipped`}},
		},
		{
			name:    "not a number",
			rows:    []string{"E1,C1,purchase,2025-11-21T10:00:00Z,12.5", "E2,C1,purchase,2025-11-21T10:00:00Z,abc", "E3,C1,purchase,2025-11-21T10:00:00Z,\"1,000\"", "E4,C1,purchase,2025-11-21T10:00:00Z,-3"},
			wantIDs: []string{"E1", "E4"},
			problems: []problem{
				{"C1", "value", 3, 5, `events.csv: line 3, column 5 (value): "abc" is not a number; row skipped`},
				{"C1", "value", 4, 5, `events.csv: line 4, column 5 (value): "1,000" is not a number; row skipped`},
			},
		},
		{
			name:    "the first problem of a row is reported",
			rows:    []string{",,nope,never,x"},
			wantIDs: nil,
			problems: []problem{
				{"", "event_id", 2, 1, "events.csv: line 2, column 1 (event_id): no event id; row skipped"},
			},
		},
		{
			name:    "wrong number of fields",
			rows:    []string{"E1,C1,purchase,2025-11-21T10:00:00Z", "E2,C1,purchase,2025-11-21T10:00:00Z,,", "E3,C1,purchase,2025-11-21T10:00:00Z,"},
			wantIDs: []string{"E3"},
			problems: []problem{
				{"", "", 2, 0, "events.csv: line 2: 4 fields where the header has 5; row skipped"},
				{"", "", 3, 0, "events.csv: line 3: 6 fields where the header has 5; row skipped"},
			},
		},
		{
			name:     "bare quote",
			rows:     []string{`E1,C"1,purchase,2025-11-21T10:00:00Z,`, "E2,C1,purchase,2025-11-21T10:00:00Z,"},
			wantIDs:  []string{"E2"},
			problems: []problem{{"", "", 2, 0, `events.csv: line 2: bare " in non-quoted-field; row skipped`}},
		},
		{
			name:     "quoted field over two lines shifts the lines after it",
			rows:     []string{"\"E\n1\",C1,purchase,2025-11-21T10:00:00Z,", "E2,C1,purchase,2025-11-21T10:00:00Z,x"},
			wantIDs:  []string{"E\n1"},
			problems: []problem{{"C1", "value", 4, 5, `events.csv: line 4, column 5 (value): "x" is not a number; row skipped`}},
		},
		{
			name:     "not UTF-8",
			rows:     []string{"E\xff1,C1,purchase,2025-11-21T10:00:00Z,", "E2,C\xfe,purchase,2025-11-21T10:00:00Z,"},
			problems: []problem{{"C1", "event_id", 2, 1, `events.csv: line 2, column 1 (event_id): "E\xff1" is not UTF-8 text (save the file as UTF-8); row skipped`}, {"", "customer_id", 3, 2, `events.csv: line 3, column 2 (customer_id): "C\xfe" is not UTF-8 text (save the file as UTF-8); row skipped`}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cust, ev := customersAndEvents(t, 1, strings.Join(tc.rows, "\n")+"\n")
			extra := append([]string{"names: [purchase, app_open]"}, tc.extra...)
			s := newConfigured(t, "path: "+cust+"\nid_column: id\nwatch: false\n"+eventsBlock(ev, extra...))
			m := merge(pullAll(t, s, ""))
			if len(m.customers) != 1 {
				t.Errorf("%d customers loaded, want 1", len(m.customers))
			}
			var ids []string
			for _, e := range m.events {
				ids = append(ids, e.ID)
			}
			if diff := cmp.Diff(tc.wantIDs, ids); diff != "" {
				t.Errorf("events loaded (-want +got):\n%s", diff)
			}
			var got []problem
			for _, p := range m.problems {
				got = append(got, problem{p.CustomerID, p.Field, p.Line, p.Column, p.Message})
			}
			if diff := cmp.Diff(tc.problems, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEventsNewNameAfterStart: with the names taken from the file, a name
// first seen in a later version is reported until the source restarts;
// after the restart the whole file is sent again, so the skipped rows
// load.
func TestEventsNewNameAfterStart(t *testing.T) {
	cust, ev := customersAndEvents(t, 1, eventRows(1, 2)...)
	config := "path: " + cust + "\nid_column: id\nwatch: false\n" + eventsBlock(ev)
	s := newConfigured(t, config)
	cur := merge(pullAll(t, s, "")).cursor
	replaceFile(t, ev, eventsHeader+strings.Join(eventRows(1, 2), "")+"E003,C001,signup,2025-11-21T11:00:00Z,\n")
	m := merge(pullAll(t, s, cur))
	want := []sdk.Problem{{CustomerID: "C001", Field: "event", Line: 4, Column: 3,
		Message: `events.csv: line 4, column 3 (event): event name "signup" was not in the file when the source started; restart the source to load it; row skipped`}}
	if diff := cmp.Diff(want, m.problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	m = merge(pullAll(t, newConfigured(t, config), m.cursor))
	if diff := cmp.Diff([]string{"E001", "E002", "E003"}, m.eventIDs()); diff != "" {
		t.Errorf("events after a restart (-want +got):\n%s", diff)
	}
	if len(m.customers) != 0 {
		t.Errorf("after a restart, %d customers sent again", len(m.customers))
	}
}

// TestEventsResume: a Pull stopped after its first events batch resumes
// from that batch's cursor with the rest of the events (no customers),
// nothing twice, and the problems after the resumption point on their
// right lines; one stopped in the customers resumes with the rest of them,
// then all events.
func TestEventsResume(t *testing.T) {
	rows := append(eventRows(1, 5), "E006,C001,purchase,later,\n", "E007,C002,purchase,2025-11-21T12:00:00Z,7\n")
	cust, ev := customersAndEvents(t, 3, rows...)
	s := newConfigured(t, "path: "+cust+"\nid_column: id\nbatch: 2\nwatch: false\n"+eventsBlock(ev))
	stop := errors.New("host stopped")
	pullUntil := func(cursor string, stopAt func(*sdk.Batch) bool) []*sdk.Batch {
		t.Helper()
		var got []*sdk.Batch
		err := s.Pull(t.Context(), cursor, func(b *sdk.Batch) error {
			got = append(got, b)
			if stopAt(b) {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			t.Fatalf("Pull returned %v, want the send error", err)
		}
		return got
	}

	first := pullUntil("", func(b *sdk.Batch) bool { return len(b.Events) > 0 })
	before := merge(first)
	if diff := cmp.Diff([]string{"C001", "C002", "C003"}, before.ids()); diff != "" {
		t.Errorf("customers before the stop (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"E001", "E002"}, before.eventIDs()); diff != "" {
		t.Errorf("events before the stop (-want +got):\n%s", diff)
	}
	if c, ok := parseCursor(before.cursor); !ok || c.partial || !c.ev.partial {
		t.Fatalf("cursor at the stop = %q, want a whole customers version and an events offset", before.cursor)
	}
	rest := merge(pullAll(t, s, before.cursor))
	if len(rest.customers) != 0 {
		t.Errorf("resumed pull sent %d customers again", len(rest.customers))
	}
	if diff := cmp.Diff([]string{"E003", "E004", "E005", "E007"}, rest.eventIDs()); diff != "" {
		t.Errorf("resumed events (-want +got):\n%s", diff)
	}
	wantProblems := []sdk.Problem{{CustomerID: "C001", Field: "time", Line: 7, Column: 4,
		Message: `events.csv: line 7, column 4 (time): "later" is not an RFC 3339 time (e.g. 2025-11-21T09:30:00Z); row skipped`}}
	if diff := cmp.Diff(wantProblems, rest.problems); diff != "" {
		t.Errorf("problems after resuming (-want +got):\n%s", diff)
	}
	// A second stop, deeper in: still the right rest and lines.
	second := pullUntil(before.cursor, func(b *sdk.Batch) bool { return len(b.Events) > 0 })
	third := merge(pullAll(t, s, merge(second).cursor))
	if diff := cmp.Diff([]string{"E005", "E007"}, third.eventIDs()); diff != "" {
		t.Errorf("events after the second resumption (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantProblems, third.problems); diff != "" {
		t.Errorf("problems after the second resumption (-want +got):\n%s", diff)
	}

	// Stopped in the customers: the rest of them, then every event.
	mid := pullUntil("", func(b *sdk.Batch) bool { return len(b.Customers) > 0 })
	after := merge(pullAll(t, s, merge(mid).cursor))
	if diff := cmp.Diff([]string{"C003"}, after.ids()); diff != "" {
		t.Errorf("customers after a stop in the customers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"E001", "E002", "E003", "E004", "E005", "E007"}, after.eventIDs()); diff != "" {
		t.Errorf("events after a stop in the customers (-want +got):\n%s", diff)
	}
}

// TestEventsCursor: each file is sent again only when it changed; an
// events file that only grew sends its new rows.
func TestEventsCursor(t *testing.T) {
	cust, ev := customersAndEvents(t, 3, eventRows(1, 3)...)
	config := "path: " + cust + "\nid_column: id\nbatch: 2\nwatch: false\n" + eventsBlock(ev)
	s := newConfigured(t, config)
	cur := merge(pullAll(t, s, "")).cursor

	// Nothing changed: one CaughtUp batch with the same cursor.
	if diff := cmp.Diff([]*sdk.Batch{{CaughtUp: true, Cursor: cur}}, pullAll(t, s, cur)); diff != "" {
		t.Errorf("pull from the last cursor (-want +got):\n%s", diff)
	}

	// The customers changed: only they are sent.
	replaceFile(t, cust, csvRows(3, "basic"))
	bs := pullAll(t, s, cur)
	m := merge(bs)
	if len(m.customers) != 3 || len(m.events) != 0 {
		t.Errorf("after a customers change: %d customers, %d events; want 3, 0", len(m.customers), len(m.events))
	}
	cur = m.cursor

	// Rows appended to the events file: only they are sent, and their
	// problems are on their lines.
	appendFile(t, ev, "E004,C001,purchase,2025-11-21T11:00:00Z,4\nE005,C001,purchase,2025-11-21T11:01:00Z,x\n")
	m = merge(pullAll(t, s, cur))
	if len(m.customers) != 0 {
		t.Errorf("after an append: %d customers sent", len(m.customers))
	}
	if diff := cmp.Diff([]string{"E004"}, m.eventIDs()); diff != "" {
		t.Errorf("events after an append (-want +got):\n%s", diff)
	}
	if len(m.problems) != 1 || m.problems[0].Line != 6 {
		t.Errorf("problems after an append = %+v, want one on line 6", m.problems)
	}
	cur = m.cursor

	// A rewrite that changes an old row: the whole file is sent (the
	// daemon counts the events it has once).
	replaceFile(t, ev, eventsHeader+strings.Join(eventRows(1, 4), ""))
	m = merge(pullAll(t, s, cur))
	if diff := cmp.Diff([]string{"E001", "E002", "E003", "E004"}, m.eventIDs()); diff != "" {
		t.Errorf("events after a rewrite (-want +got):\n%s", diff)
	}
	if len(m.customers) != 0 {
		t.Errorf("after a rewrite of the events: %d customers sent", len(m.customers))
	}
	cur = m.cursor

	// A file without a final newline cannot be continued from its end: the
	// appended bytes may finish its last row.
	replaceFile(t, ev, strings.TrimSuffix(eventsHeader+strings.Join(eventRows(1, 4), ""), "\n"))
	cur = merge(pullAll(t, s, cur)).cursor
	appendFile(t, ev, "5\n")
	m = merge(pullAll(t, s, cur))
	if diff := cmp.Diff([]string{"E001", "E002", "E003", "E004"}, m.eventIDs()); diff != "" {
		t.Errorf("events after finishing the last row (-want +got):\n%s", diff)
	}
	if v := m.events[3]; v.Value != 45 {
		t.Errorf("E004's value = %v, want 45", v.Value)
	}
	cur = m.cursor

	// A cursor from before the events block: the events are sent, not the
	// customers.
	old := merge(pullAll(t, newConfigured(t, "path: "+cust+"\nid_column: id\nwatch: false\n"), "")).cursor
	m = merge(pullAll(t, s, old))
	if len(m.customers) != 0 || len(m.events) != 4 {
		t.Errorf("from a cursor without events: %d customers, %d events; want 0, 4", len(m.customers), len(m.events))
	}

	// A config change that changes the events (no value column): they are
	// sent again; the customers are not.
	s2 := newConfigured(t, strings.Replace(config, "  value_column: value\n", "", 1))
	m = merge(pullAll(t, s2, cur))
	if len(m.customers) != 0 || len(m.events) != 4 || m.events[0].HasValue {
		t.Errorf("after dropping value_column: %d customers, %d events (first %+v); want 0, 4 without values", len(m.customers), len(m.events), m.events)
	}
	// One that does not (the batch size): nothing.
	if m := merge(pullAll(t, newConfigured(t, strings.Replace(config, "batch: 2", "batch: 3", 1)), cur)); len(m.customers)+len(m.events) != 0 {
		t.Errorf("after a batch size change: %d customers, %d events sent", len(m.customers), len(m.events))
	}
}

// TestEventsFileAtPull: a missing events file is NotFound; a header that
// lost a column is a config error naming events.path.
func TestEventsFileAtPull(t *testing.T) {
	cust, ev := customersAndEvents(t, 1, eventRows(1, 1)...)
	s := newConfigured(t, "path: "+cust+"\nid_column: id\nwatch: false\n"+eventsBlock(ev))
	if err := os.Remove(ev); err != nil {
		t.Fatal(err)
	}
	err := s.Pull(t.Context(), "", func(*sdk.Batch) error { return nil })
	var e *sdk.Error
	if !errors.As(err, &e) || e.Code != sdk.NotFound || e.Field != "events.path" {
		t.Errorf("Pull without the events file = %v, want a NotFound *sdk.Error on events.path", err)
	}
	writeFile(t, filepath.Dir(ev), "events.csv", "event_id,customer_id,event,when,value\n")
	err = s.Pull(t.Context(), "", func(*sdk.Batch) error { return nil })
	want := "events.path: " + ev + `: the time column "time" is not in the header any more; fix the file or the config`
	if !errors.As(err, &e) || e.Code != sdk.InvalidConfig || e.Field != "events.path" || err.Error() != want {
		t.Errorf("Pull of an events file without the time column = %v, want %s", err, want)
	}
}

// TestWatchEvents: with watch on, rows appended to the events file are
// sent (only they), whether written in place or renamed into place; a
// version that lost a column is reported and the stream goes on; a change
// to the customers file sends only the customers.
func TestWatchEvents(t *testing.T) {
	cust, ev := customersAndEvents(t, 2, eventRows(1, 3)...)
	s := newConfigured(t, watchConfig(cust, eventsBlock(ev)))
	lp := startPull(t, s, "")
	first := merge(lp.until(t, "the first CaughtUp", caughtUp))
	if diff := cmp.Diff([]string{"E001", "E002", "E003"}, first.eventIDs()); diff != "" {
		t.Fatalf("first events (-want +got):\n%s", diff)
	}

	appendFile(t, ev, strings.Join(eventRows(4, 5), ""))
	got := merge(lp.until(t, "the appended events", caughtUp))
	if diff := cmp.Diff([]string{"E004", "E005"}, got.eventIDs()); diff != "" {
		t.Errorf("events after an append in place (-want +got):\n%s", diff)
	}
	want := []sdk.Event{{ID: "E004", CustomerID: "C002", Name: "purchase", Time: time.Date(2025, 11, 21, 10, 4, 0, 0, time.UTC), Value: 4, HasValue: true}}
	if diff := cmp.Diff(want, got.events[:1]); diff != "" {
		t.Errorf("appended event (-want +got):\n%s", diff)
	}
	if len(got.customers) != 0 {
		t.Errorf("%d customers sent after an events append", len(got.customers))
	}

	replaceFile(t, ev, eventsHeader+strings.Join(eventRows(1, 7), ""))
	got = merge(lp.until(t, "the renamed, longer events file", caughtUp))
	if diff := cmp.Diff([]string{"E006", "E007"}, got.eventIDs()); diff != "" {
		t.Errorf("events after a longer version was renamed into place (-want +got):\n%s", diff)
	}

	replaceFile(t, ev, "event_id,customer_id,event,value\n")
	bad := lp.until(t, "a problem", func(b *sdk.Batch) bool { return len(b.Problems) > 0 })
	wantProblem := []sdk.Problem{{Line: 1, Message: `events.csv: line 1: the time column "time" is not in the header any more; file not loaded`}}
	if diff := cmp.Diff(wantProblem, bad[len(bad)-1].Problems); diff != "" {
		t.Errorf("problem (-want +got):\n%s", diff)
	}

	replaceFile(t, ev, eventsHeader+strings.Join(eventRows(8, 8), ""))
	got = merge(lp.until(t, "the fixed events file", caughtUp))
	if diff := cmp.Diff([]string{"E008"}, got.eventIDs()); diff != "" {
		t.Errorf("events of the fixed file (-want +got):\n%s", diff)
	}

	replaceFile(t, cust, csvRows(2, "basic"))
	got = merge(lp.until(t, "the changed customers", caughtUp))
	if len(got.customers) != 2 || len(got.events) != 0 {
		t.Errorf("after a customers change: %d customers, %d events; want 2, 0", len(got.customers), len(got.events))
	}
}

// appendFile appends content to the file at path, in place.
func appendFile(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
