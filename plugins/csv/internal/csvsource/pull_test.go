package csvsource

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/sdk"
)

var update = flag.Bool("update", false, "rewrite golden files")

// render prints batches as text, one line per item, traits sorted.
func render(bs []*sdk.Batch) string {
	var b strings.Builder
	for i, bt := range bs {
		fmt.Fprintf(&b, "batch %d cursor=%q caught_up=%v\n", i+1, bt.Cursor, bt.CaughtUp)
		for _, c := range bt.Customers {
			fmt.Fprintf(&b, "  customer %s\n", c.ID)
			for _, name := range sortedKeys(c.Traits) {
				fmt.Fprintf(&b, "    %s = %s\n", name, renderValue(c.Traits[name]))
			}
		}
		for _, e := range bt.Events {
			value := "none"
			if e.HasValue {
				value = fmt.Sprint(e.Value)
			}
			fmt.Fprintf(&b, "  event %s customer=%s name=%s time=%s value=%s\n", e.ID, e.CustomerID, e.Name, e.Time.Format(time.RFC3339Nano), value)
		}
		for _, c := range bt.Consents {
			status := map[sdk.ConsentStatus]string{sdk.OptIn: "opt-in", sdk.OptOut: "opt-out"}[c.Status]
			fmt.Fprintf(&b, "  consent %s %s %s time=%s basis=%q\n", c.CustomerID, c.Kind, status, c.Time.Format(time.RFC3339Nano), c.Basis)
		}
		for _, p := range bt.Problems {
			fmt.Fprintf(&b, "  problem customer=%q field=%q line=%d column=%d: %s\n", p.CustomerID, p.Field, p.Line, p.Column, p.Message)
		}
		for _, id := range bt.Deletes {
			fmt.Fprintf(&b, "  delete %s\n", id)
		}
	}
	return b.String()
}

func renderValue(v sdk.Value) string {
	switch v.Type {
	case sdk.TypeString:
		return fmt.Sprintf("string %q", v.Str)
	case sdk.TypeNumber:
		return fmt.Sprintf("number %v", v.Num)
	case sdk.TypeBool:
		return fmt.Sprintf("bool %v", v.Bool)
	case sdk.TypeTime:
		return "time " + v.Time.UTC().Format(time.RFC3339Nano)
	case sdk.TypeStringList:
		return fmt.Sprintf("list %q", v.List)
	}
	return "null"
}

// TestGolden pulls testdata/customers.csv and compares everything sent
// with testdata/customers.golden.
func TestGolden(t *testing.T) {
	data, err := os.ReadFile(testdataPath(t, "customers.csv"))
	if err != nil {
		t.Fatal(err)
	}
	// A copy with a fixed modification time: consent changes carry it.
	path := writeFile(t, t.TempDir(), "customers.csv", string(data))
	mtime := time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	s := newConfigured(t, `
path: `+path+`
id_column: customerID
email: Email
phone: Phone
timezone: Time Zone
consent: {column: EmailOptIn}
batch: 4
watch: false
columns:
  Tags: {type: list}
`)
	got := render(pullAll(t, s, ""))
	golden := testdataPath(t, "customers.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("pull of customers.csv (-golden +got):\n%s", diff)
	}
}

// TestProblems checks what is reported, and what still loads, for bad
// rows and cells.
func TestProblems(t *testing.T) {
	const config = `
id_column: id
watch: false
consent: {column: OptIn, time_column: OptInAt}
columns:
  Since: {type: time}
  Active: {type: bool}
  Seen: {type: time, format: "02/01/2006"}
`
	type problem struct {
		CustomerID, Field string
		Line, Column      int
		Message           string
	}
	for _, tc := range []struct {
		name     string
		rows     []string // after the header
		wantIDs  []string
		problems []problem
	}{
		{
			name:    "clean",
			rows:    []string{"1,10,2024-01-02,true,01/02/2024,yes,", "2,,,,,,"},
			wantIDs: []string{"1", "2"},
		},
		{
			name:    "not a number",
			rows:    []string{"1,10,,,,,", "2,abc,2024-01-02,,,,", "3,12.5,,,,,"},
			wantIDs: []string{"1", "2", "3"},
			problems: []problem{{"2", "total", 3, 2,
				`line 3, column 2 (total): "abc" is not a number`}},
		},
		{
			name:    "not a time, bool, or time in a layout",
			rows:    []string{"1,1,2024-13-01,maybe,2024-02-01,,"},
			wantIDs: []string{"1"},
			problems: []problem{
				{"1", "since", 2, 3, `line 2, column 3 (since): "2024-13-01" is not a time (RFC 3339, 2006-01-02 or 2006-01-02 15:04:05)`},
				{"1", "active", 2, 4, `line 2, column 4 (active): "maybe" is not a bool (true/false, yes/no or 1/0)`},
				{"1", "seen", 2, 5, `line 2, column 5 (seen): "2024-02-01" is not a time in the layout "02/01/2006"`},
			},
		},
		{
			name:     "no id",
			rows:     []string{"1,1,,,,,", ",2,,,,,", "  ,3,,,,,", "4,4,,,,,"},
			wantIDs:  []string{"1", "4"},
			problems: []problem{{"", "id", 3, 1, "line 3, column 1 (id): no customer id; row skipped"}, {"", "id", 4, 1, "line 4, column 1 (id): no customer id; row skipped"}},
		},
		{
			name:    "duplicate id: the first row wins",
			rows:    []string{"1,1,,,,,", "2,2,,,,,", "1,3,,,,,"},
			wantIDs: []string{"1", "2"},
			problems: []problem{{"1", "id", 4, 1,
				`line 4, column 1 (id): customer id "1" is already on line 2; row skipped (the first row wins)`}},
		},
		{
			name:    "wrong number of fields",
			rows:    []string{"1,1,,,,,", "2,2,,,", "3,3,,,,,,,", "4,4,,,,,"},
			wantIDs: []string{"1", "4"},
			problems: []problem{
				{"", "", 3, 0, "line 3: 5 fields where the header has 7; row skipped"},
				{"", "", 4, 0, "line 4: 9 fields where the header has 7; row skipped"},
			},
		},
		{
			name:     "bare quote",
			rows:     []string{"1,1,,,,,", `2,2"x,,,,,`, "3,3,,,,,"},
			wantIDs:  []string{"1", "3"},
			problems: []problem{{"", "", 3, 0, `line 3: bare " in non-quoted-field; row skipped`}},
		},
		{
			name:    "quoted field over two lines shifts the lines after it",
			rows:    []string{"\"1\n\",1,,,,,", "2,x,,,,,"},
			wantIDs: []string{"1", "2"},
			problems: []problem{{"2", "total", 4, 2,
				`line 4, column 2 (total): "x" is not a number`}},
		},
		{
			name:    "consent values",
			rows:    []string{"1,,,,,yes,", "2,,,,,maybe,", "3,,,,,no,2024-05-01T10:00:00Z", "4,,,,,1,never"},
			wantIDs: []string{"1", "2", "3", "4"},
			problems: []problem{
				{"2", "OptIn", 3, 6, `line 3, column 6 (OptIn): "maybe" is not yes/no, true/false or 1/0`},
				{"4", "OptInAt", 5, 7, `line 5, column 7 (OptInAt): "never" is not a time (RFC 3339, 2006-01-02 or 2006-01-02 15:04:05); consent not recorded`},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			content := "id,Total,Since,Active,Seen,OptIn,OptInAt\n" + strings.Join(tc.rows, "\n") + "\n"
			path := writeFile(t, t.TempDir(), "crm.csv", content)
			s := newTestSource(t)
			_, err := s.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte("path: " + path + config + "  Total: {type: number}\n")})
			if err != nil {
				t.Fatal(err)
			}
			m := merge(pullAll(t, s, ""))
			if diff := cmp.Diff(tc.wantIDs, m.ids()); diff != "" {
				t.Errorf("customers loaded (-want +got):\n%s", diff)
			}
			var got []problem
			for _, p := range m.problems {
				got = append(got, problem{p.CustomerID, p.Field, p.Line, p.Column, p.Message})
			}
			if diff := cmp.Diff(tc.problems, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			// A field with a problem is left out; the rest of the row loads.
			for _, c := range m.customers {
				for _, p := range m.problems {
					if p.CustomerID == c.ID {
						if _, has := c.Traits[p.Field]; has {
							t.Errorf("customer %s has trait %s despite the problem", c.ID, p.Field)
						}
					}
				}
			}
		})
	}
}

// TestEmptyCellIsMissing: an empty cell is left out of the traits, never
// sent as a null (which would remove what the customer has).
func TestEmptyCellIsMissing(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", "id,Plan,Spend\n1,,\n2, ,  \n3,pro,5\n")
	m := merge(pullAll(t, newConfigured(t, "path: "+path+"\nid_column: id\nwatch: false\n"), ""))
	want := []sdk.Customer{
		{ID: "1", Traits: map[string]sdk.Value{}},
		{ID: "2", Traits: map[string]sdk.Value{}},
		{ID: "3", Traits: map[string]sdk.Value{"plan": sdk.String("pro"), "spend": sdk.Number(5)}},
	}
	if diff := cmp.Diff(want, m.customers); diff != "" {
		t.Errorf("customers (-want +got):\n%s", diff)
	}
}

// TestConsent: opt-in and opt-out with the file's time or the time column,
// and the basis naming the file.
func TestConsent(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", "id,OptIn,OptInAt\n1,Yes,\n2,false,2024-05-01T10:00:00Z\n3,,\n")
	mtime := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	m := merge(pullAll(t, newConfigured(t, "path: "+path+"\nid_column: id\nwatch: false\nconsent: {column: OptIn, time_column: OptInAt}\n"), ""))
	want := []sdk.ConsentChange{
		{CustomerID: "1", Kind: "email", Status: sdk.OptIn, Time: mtime, Basis: "csv import crm.csv"},
		{CustomerID: "2", Kind: "email", Status: sdk.OptOut, Time: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), Basis: "csv import crm.csv"},
	}
	if diff := cmp.Diff(want, m.consents); diff != "" {
		t.Errorf("consents (-want +got):\n%s", diff)
	}
	for _, c := range m.customers {
		if len(c.Traits) != 0 {
			t.Errorf("customer %s has traits %v; the consent columns are not traits", c.ID, c.Traits)
		}
	}
}

// TestIDAsEmail: the id column may also be the email contact; then it is a
// trait too.
func TestIDAsEmail(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", "Email,Plan\nada@example.com,pro\n")
	s := newTestSource(t)
	info := configure(t, s, "path: "+path+"\nid_column: Email\nemail: Email\nwatch: false\n")
	if info.Contact.Email != "email" {
		t.Errorf("contact email = %q", info.Contact.Email)
	}
	m := merge(pullAll(t, s, ""))
	want := []sdk.Customer{{ID: "ada@example.com", Traits: map[string]sdk.Value{"email": sdk.String("ada@example.com"), "plan": sdk.String("pro")}}}
	if diff := cmp.Diff(want, m.customers); diff != "" {
		t.Errorf("customers (-want +got):\n%s", diff)
	}
}

// TestDelimiterAndBOM: a semicolon file saved by a spreadsheet, with a
// byte order mark.
func TestDelimiterAndBOM(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", "\uFEFFid;Amount\n1;2.5\n")
	m := merge(pullAll(t, newConfigured(t, "path: "+path+"\nid_column: id\ndelimiter: ';'\nwatch: false\n"), ""))
	want := []sdk.Customer{{ID: "1", Traits: map[string]sdk.Value{"amount": sdk.Number(2.5)}}}
	if diff := cmp.Diff(want, m.customers); diff != "" {
		t.Errorf("customers (-want +got):\n%s", diff)
	}
}

func csvRows(n int, plan string) string {
	var b strings.Builder
	b.WriteString("id,Plan,Spend\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "C%03d,%s,%d\n", i, plan, i)
	}
	return b.String()
}

// TestCursorUpToDate: pulling with the cursor of the last batch sends one
// empty CaughtUp batch, carrying that cursor (the daemon stores the cursor
// of every CaughtUp batch: an empty one would make it start over).
func TestCursorUpToDate(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", csvRows(5, "pro"))
	s := newConfigured(t, "path: "+path+"\nid_column: id\nbatch: 2\nwatch: false\n")
	first := pullAll(t, s, "")
	if len(first) != 3 {
		t.Fatalf("got %d batches, want 3 (2+2+1 customers)", len(first))
	}
	for i, b := range first[:2] {
		if c, ok := parseCursor(b.Cursor); !ok || !c.partial {
			t.Errorf("batch %d cursor %q is not a partial cursor", i+1, b.Cursor)
		}
	}
	last := first[len(first)-1].Cursor
	if c, ok := parseCursor(last); !ok || c.partial {
		t.Fatalf("last cursor %q is not a complete cursor", last)
	}
	again := pullAll(t, s, last)
	if diff := cmp.Diff([]*sdk.Batch{{CaughtUp: true, Cursor: last}}, again); diff != "" {
		t.Errorf("pull from the last cursor (-want +got):\n%s", diff)
	}
	// Touching the file does not change its content: still nothing to send.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if got := pullAll(t, s, last); len(got) != 1 || len(got[0].Customers) != 0 {
		t.Errorf("pull of a touched file sent %d batches: %s", len(got), render(got))
	}
	// A changed file is sent again in full.
	replaceFile(t, path, csvRows(5, "basic"))
	if m := merge(pullAll(t, s, last)); len(m.customers) != 5 || m.customers[0].Traits["plan"].Str != "basic" {
		t.Errorf("pull of a changed file: %d customers, first %+v", len(m.customers), m.customers)
	}
}

// TestCursorResume: a Pull stopped after its first batch resumes from that
// batch's cursor with the rest, nothing twice.
func TestCursorResume(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", csvRows(7, "pro")+"C002,dup,0\n")
	s := newConfigured(t, "path: "+path+"\nid_column: id\nbatch: 3\nwatch: false\n")
	stop := errors.New("host stopped")
	var first []*sdk.Batch
	err := s.Pull(t.Context(), "", func(b *sdk.Batch) error {
		first = append(first, b)
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Pull returned %v, want the send error", err)
	}
	if len(first) != 1 || len(first[0].Customers) != 3 {
		t.Fatalf("first pull sent %s", render(first))
	}
	rest := merge(pullAll(t, s, first[0].Cursor))
	if diff := cmp.Diff([]string{"C004", "C005", "C006", "C007"}, rest.ids()); diff != "" {
		t.Errorf("resumed ids (-want +got):\n%s", diff)
	}
	// The duplicate of a row sent before the restart is still found.
	if len(rest.problems) != 1 || rest.problems[0].Line != 9 || !strings.Contains(rest.problems[0].Message, `"C002" is already on line 3`) {
		t.Errorf("problems after resume = %+v", rest.problems)
	}
	// A cursor from another version of the file starts over.
	replaceFile(t, path, csvRows(4, "basic"))
	if m := merge(pullAll(t, s, first[0].Cursor)); len(m.customers) != 4 {
		t.Errorf("pull of a new version from an old cursor sent %d customers, want 4", len(m.customers))
	}
	// So does a cursor this plugin did not write.
	if m := merge(pullAll(t, s, "not a cursor")); len(m.customers) != 4 {
		t.Errorf("pull from a foreign cursor sent %d customers, want 4", len(m.customers))
	}
}

// TestDeleteMissing: ids gone from a new version are deleted only with
// delete_missing; a restarted plugin still knows the committed version's
// ids when the file has not changed since.
func TestDeleteMissing(t *testing.T) {
	dir := t.TempDir()
	for _, deleteMissing := range []bool{false, true} {
		t.Run(fmt.Sprint("delete_missing=", deleteMissing), func(t *testing.T) {
			path := writeFile(t, dir, fmt.Sprintf("crm-%v.csv", deleteMissing), csvRows(5, "pro"))
			config := fmt.Sprintf("path: %s\nid_column: id\nbatch: 2\nwatch: false\ndelete_missing: %v\n", path, deleteMissing)
			s := newConfigured(t, config)
			cur := merge(pullAll(t, s, "")).cursor

			replaceFile(t, path, "id,Plan,Spend\nC001,pro,1\nC003,pro,3\nC004,pro,4\nC009,pro,9\n")
			bs := pullAll(t, s, cur)
			m := merge(bs)
			var want []string
			if deleteMissing {
				want = []string{"C002", "C005"}
			}
			if diff := cmp.Diff(want, m.deletes); diff != "" {
				t.Errorf("deletes (-want +got):\n%s", diff)
			}
			for i, b := range bs {
				if len(b.Deletes) > 0 && b.Cursor == "" {
					t.Errorf("batch %d has deletes but no cursor", i+1)
				}
			}

			// A new plugin process: Pull from the committed cursor reads the
			// ids of the unchanged file, so the next change deletes right.
			s2 := newConfigured(t, config)
			up := pullAll(t, s2, m.cursor)
			if len(up) != 1 || len(up[0].Customers)+len(up[0].Deletes) != 0 {
				t.Errorf("pull of the committed version sent %s", render(up))
			}
			replaceFile(t, path, "id,Plan,Spend\nC003,pro,3\n")
			want = nil
			if deleteMissing {
				want = []string{"C001", "C004", "C009"}
			}
			if diff := cmp.Diff(want, merge(pullAll(t, s2, m.cursor)).deletes); diff != "" {
				t.Errorf("deletes after a restart (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDeletesInBatches: more deletes than a batch holds are split.
func TestDeletesInBatches(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", csvRows(7, "pro"))
	s := newConfigured(t, "path: "+path+"\nid_column: id\nbatch: 3\nwatch: false\ndelete_missing: true\n")
	cur := merge(pullAll(t, s, "")).cursor
	replaceFile(t, path, "id,Plan,Spend\n")
	bs := pullAll(t, s, cur)
	var sizes []int
	var all []string
	for _, b := range bs {
		sizes = append(sizes, len(b.Deletes))
		all = append(all, b.Deletes...)
	}
	if diff := cmp.Diff([]int{3, 3, 1}, sizes); diff != "" {
		t.Errorf("deletes per batch (-want +got):\n%s", diff)
	}
	if !slices.IsSorted(all) || len(all) != 7 {
		t.Errorf("deletes = %v", all)
	}
}

// TestPullBeforeConfigure is an error, not a panic.
func TestPullBeforeConfigure(t *testing.T) {
	err := newTestSource(t).Pull(t.Context(), "", func(*sdk.Batch) error { return nil })
	var e *sdk.Error
	if !errors.As(err, &e) || e.Code != sdk.InvalidArgument {
		t.Errorf("Pull before Configure = %v, want an InvalidArgument *sdk.Error", err)
	}
}

// TestFileGoneAtPull: finite mode reports a missing file as NotFound; a
// header that lost the id column is a config error naming it.
func TestFileGoneAtPull(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "crm.csv", csvRows(2, "pro"))
	s := newConfigured(t, "path: "+path+"\nid_column: id\nwatch: false\n")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	err := s.Pull(t.Context(), "", func(*sdk.Batch) error { return nil })
	var e *sdk.Error
	if !errors.As(err, &e) || e.Code != sdk.NotFound || e.Field != "path" {
		t.Errorf("Pull of a missing file = %v, want a NotFound *sdk.Error on path", err)
	}
	writeFile(t, dir, "crm.csv", "customer,Plan\n1,pro\n")
	err = s.Pull(t.Context(), "", func(*sdk.Batch) error { return nil })
	want := "path: " + filepath.Join(dir, "crm.csv") + `: the id column "id" is not in the header any more; fix the file or the config`
	if !errors.As(err, &e) || e.Code != sdk.InvalidConfig || err.Error() != want {
		t.Errorf("Pull of a file without the id column = %v, want %s", err, want)
	}
}

// TestColumnsMoved: a new version may reorder columns, drop one (its trait
// is left alone) or add one (ignored until the source is reconfigured).
func TestColumnsMoved(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", "id,Plan,Spend\n1,pro,5\n")
	s := newConfigured(t, "path: "+path+"\nid_column: id\nwatch: false\n")
	cur := merge(pullAll(t, s, "")).cursor
	replaceFile(t, path, "Extra,Spend,id\nx,7,1\n")
	m := merge(pullAll(t, s, cur))
	want := []sdk.Customer{{ID: "1", Traits: map[string]sdk.Value{"spend": sdk.Number(7)}}}
	if diff := cmp.Diff(want, m.customers); diff != "" {
		t.Errorf("customers (-want +got):\n%s", diff)
	}
}

// TestCursorConfigChange: the cursor of a file stops matching when the
// config changes what is sent for it (here: a trait renamed), so the file
// is sent again; a change that does not (the batch size) keeps it.
func TestCursorConfigChange(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", csvRows(3, "pro"))
	base := "path: " + path + "\nid_column: id\nwatch: false\n"
	cur := merge(pullAll(t, newConfigured(t, base), "")).cursor

	if got := merge(pullAll(t, newConfigured(t, base+"batch: 2\n"), cur)); len(got.customers) != 0 {
		t.Errorf("after a batch size change, sent %d customers, want 0", len(got.customers))
	}
	got := merge(pullAll(t, newConfigured(t, base+"columns:\n  Plan: {name: tier}\n"), cur))
	if len(got.customers) != 3 || got.customers[0].Traits["tier"].Str != "pro" {
		t.Errorf("after a rename, sent %+v, want the 3 customers with trait tier", got.customers)
	}
}
