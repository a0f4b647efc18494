package sqlsource

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/plugins/sql/internal/testdb"
	"github.com/cohortd/cohort/sdk"
)

// sharedRows are n rows of people: ids 1-5 at base, 6-25 sharing base+1h
// (across several batch boundaries), 26..n at base+2h, inserted in a
// random order.
func sharedRows(n int) []person {
	ps := make([]person, n)
	for i := range ps {
		id := i + 1
		u := base
		switch {
		case id > 25:
			u = base.Add(2 * time.Hour)
		case id > 5:
			u = base.Add(time.Hour)
		}
		ps[i] = person{id: id, name: "person " + strconv.Itoa(id), updated: u}
	}
	rand.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	return ps
}

func TestKeysetPagination(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		createPeople(t, db)
		insertPeople(t, db, sharedRows(30)...)
		s := newTestSource(t)
		configure(t, s, config(db, peopleConfig+"batch: 7\n"))
		bs := pullCaughtUp(t, s, "")

		// 30 rows in pages of 7: 7, 7, 7, 7, 2 (short: caught up).
		var sizes []int
		for i, b := range bs {
			sizes = append(sizes, len(b.Customers))
			if b.CaughtUp != (i == len(bs)-1) {
				t.Errorf("batch %d: CaughtUp = %v", i+1, b.CaughtUp)
			}
			if len(b.Problems) > 0 {
				t.Errorf("batch %d: problems %v", i+1, b.Problems)
			}
			// The cursor is the batch's last row.
			last := b.Customers[len(b.Customers)-1].ID
			c, reason := decodeCursor(b.Cursor, s.state().fp)
			if reason != "" || c.ID.text != last {
				t.Errorf("batch %d: cursor %+v (%s), want the last row %s", i+1, c, reason, last)
			}
		}
		if d := cmp.Diff([]int{7, 7, 7, 7, 2}, sizes); d != "" {
			t.Errorf("batch sizes (-want +got):\n%s", d)
		}
		// Every row once, in (updated_at, id) order: the 20 rows sharing
		// one updated_at span three batch boundaries.
		if d := cmp.Diff(idRange(1, 30), merge(bs).ids()); d != "" {
			t.Errorf("ids (-want +got):\n%s", d)
		}
	})
}

func TestKeysetPaginationExactPages(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		createPeople(t, db)
		insertPeople(t, db, sharedRows(28)...)
		s := newTestSource(t)
		configure(t, s, config(db, peopleConfig+"batch: 7\n"))
		bs := pullCaughtUp(t, s, "")
		// Four full pages, then an empty page: caught up, same cursor.
		if len(bs) != 5 {
			t.Fatalf("%d batches, want 5", len(bs))
		}
		last := bs[4]
		if len(last.Customers) != 0 || !last.CaughtUp || last.Cursor != bs[3].Cursor {
			t.Errorf("last batch: %d customers, CaughtUp %v, cursor %q (before: %q)", len(last.Customers), last.CaughtUp, last.Cursor, bs[3].Cursor)
		}
		if d := cmp.Diff(idRange(1, 28), merge(bs).ids()); d != "" {
			t.Errorf("ids (-want +got):\n%s", d)
		}
	})
}

func TestResumeAfterRestart(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		createPeople(t, db)
		insertPeople(t, db, sharedRows(30)...)
		cfg := config(db, peopleConfig+"batch: 7\n")

		// The host commits batches 1 and 2, receives batch 3 and dies
		// before committing it.
		s := newTestSource(t)
		configure(t, s, cfg)
		lp := startPull(t, s, "")
		var got []*sdk.Batch
		lp.until(t, "three batches", func(b *sdk.Batch) bool {
			got = append(got, b)
			return len(got) == 3
		})
		lp.stop(t)
		committed := got[1].Cursor

		// A new process resumes from the committed cursor.
		s2 := newTestSource(t)
		configure(t, s2, cfg)
		rest := pullCaughtUp(t, s2, committed)
		ids := append(merge(got[:2]).ids(), merge(rest).ids()...)
		if d := cmp.Diff(idRange(1, 30), ids); d != "" {
			t.Errorf("ids before and after the restart (-want +got):\n%s", d)
		}
		// From the final cursor nothing is sent again.
		again := pullCaughtUp(t, s2, merge(rest).cursor)
		if m := merge(again); len(m.customers) != 0 || m.cursor != merge(rest).cursor {
			t.Errorf("pull from the caught-up cursor sent %v, cursor %q", m.ids(), m.cursor)
		}
	})
}

func TestLiveUpdates(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		createPeople(t, db)
		insertPeople(t, db, sharedRows(10)...)
		s := newTestSource(t)
		configure(t, s, config(db, peopleConfig+"poll: 100ms\nlag: 0s\n"))
		lp := startPull(t, s, "")
		lp.until(t, "the backlog", caughtUp)

		now := pick(db, "now()", "NOW(6)")
		db.Exec(t, "INSERT INTO people (id, name, updated_at) VALUES (100, 'new', "+now+")")
		db.Exec(t, "UPDATE people SET name = 'renamed', updated_at = "+now+" WHERE id = 1")
		db.Exec(t, "UPDATE people SET deleted_at = "+now+", updated_at = "+now+" WHERE id = 2")

		var m merged
		lp.until(t, "the three changes", func(b *sdk.Batch) bool {
			m.customers = append(m.customers, b.Customers...)
			m.deletes = append(m.deletes, b.Deletes...)
			return len(m.customers) == 2 && len(m.deletes) == 1
		})
		if got := m.byID(t, "100").Traits["name"]; !cmp.Equal(got, sdk.String("new")) {
			t.Errorf("new customer's name = %v", got)
		}
		if got := m.byID(t, "1").Traits["name"]; !cmp.Equal(got, sdk.String("renamed")) {
			t.Errorf("updated customer's name = %v", got)
		}
		if d := cmp.Diff([]string{"2"}, m.deletes); d != "" {
			t.Errorf("deletes (-want +got):\n%s", d)
		}
	})
}

func TestLag(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		const lag = 3 * time.Second
		createPeople(t, db)
		insertPeople(t, db, person{id: 1, name: "old", updated: base})
		written := db.Now(t)
		insertPeople(t, db, person{id: 2, name: "fresh", updated: written})
		s := newTestSource(t)
		configure(t, s, config(db, peopleConfig+"poll: 100ms\nlag: 3s\n"))
		lp := startPull(t, s, "")
		first := lp.until(t, "the backlog", caughtUp)
		if !sent(first, "1") || sent(first, "2") {
			t.Fatalf("backlog sent %v; want 1 but not 2, written %v ago with a lag of %v", merge(first).ids(), time.Since(written), lag)
		}
		lp.until(t, "the row within the lag", func(b *sdk.Batch) bool { return sent([]*sdk.Batch{b}, "2") })
		// The database's clock and this process's are the same machine's.
		if waited := time.Since(written); waited < lag-100*time.Millisecond {
			t.Errorf("row 2 was read %v after it was written, before the lag of %v", waited, lag)
		}
	})
}

func TestDeletedColumn(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		db.Exec(t, pick(db,
			`CREATE TABLE flags (id text PRIMARY KEY, name text, removed boolean, updated_at timestamp NOT NULL)`,
			`CREATE TABLE flags (id VARCHAR(20) PRIMARY KEY, name TEXT, removed TINYINT(1), updated_at TIMESTAMP(6) NOT NULL)`))
		for i, removed := range []any{nil, true, false, true} {
			db.Exec(t, "INSERT INTO flags VALUES (?, ?, ?, ?)", "c"+strconv.Itoa(i), "n", removed, base.Add(time.Duration(i)*time.Second))
		}
		createPeople(t, db)
		insertPeople(t, db, sharedRows(3)...)
		db.Exec(t, "UPDATE people SET deleted_at = ? WHERE id = 3", base)

		for _, tc := range []struct {
			name, config string
			customers    []string
			deletes      []string
		}{
			{"boolean", "table: flags\nid_column: id\nupdated_at_column: updated_at\ndeleted_column: removed\n", []string{"c0", "c2"}, []string{"c1", "c3"}},
			{"timestamp", peopleConfig, []string{"1", "2"}, []string{"3"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := newTestSource(t)
				info := configure(t, s, config(db, tc.config))
				for _, tr := range info.Traits {
					if tr.Name == "removed" || tr.Name == "deleted_at" {
						t.Errorf("the deleted_column is declared as trait %q", tr.Name)
					}
				}
				m := merge(pullCaughtUp(t, s, ""))
				if d := cmp.Diff(tc.customers, m.ids()); d != "" {
					t.Errorf("customers (-want +got):\n%s", d)
				}
				if d := cmp.Diff(tc.deletes, m.deletes); d != "" {
					t.Errorf("deletes (-want +got):\n%s", d)
				}
			})
		}
	})
}

func TestNulls(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		createPeople(t, db)
		db.Exec(t, "INSERT INTO people (id, name, email, score, updated_at) VALUES (1, NULL, NULL, NULL, ?)", base)
		db.Exec(t, "INSERT INTO people (id, name, email, score, updated_at) VALUES (2, '', 'b@example.com', 0, ?)", base)
		for _, tc := range []struct {
			nulls string
			want  map[string]sdk.Value
		}{
			{"", map[string]sdk.Value{"updated_at": sdk.Time(base)}},
			{"nulls: clear\n", map[string]sdk.Value{"updated_at": sdk.Time(base), "name": {}, "email": {}, "score": {}}},
		} {
			s := newTestSource(t)
			configure(t, s, config(db, peopleConfig+tc.nulls))
			m := merge(pullCaughtUp(t, s, ""))
			if d := cmp.Diff(tc.want, m.byID(t, "1").Traits); d != "" {
				t.Errorf("%q: traits of a row of NULLs (-want +got):\n%s", tc.nulls, d)
			}
			// Empty strings and zeros are values, not NULLs.
			want := map[string]sdk.Value{"updated_at": sdk.Time(base), "name": sdk.String(""), "email": sdk.String("b@example.com"), "score": sdk.Number(0)}
			if d := cmp.Diff(want, m.byID(t, "2").Traits); d != "" {
				t.Errorf("%q: traits of empty values (-want +got):\n%s", tc.nulls, d)
			}
		}
	})
}

func TestConversionProblems(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		db.Exec(t, pick(db,
			`CREATE TABLE crm (id integer PRIMARY KEY, age text, joined text, tags text, plan text, updated_at timestamptz NOT NULL)`,
			`CREATE TABLE crm (id INT PRIMARY KEY, age TEXT, joined TEXT, tags TEXT, plan TEXT, updated_at DATETIME NOT NULL)`))
		db.Exec(t, "INSERT INTO crm VALUES (1, '42', '2025-03-04', '[\"a\",\"b\"]', 'gold', ?)", base)
		db.Exec(t, "INSERT INTO crm VALUES (2, 'old', 'yesterday', 'a,b', 'silver', ?)", base)
		s := newTestSource(t)
		configure(t, s, config(db, `table: crm
id_column: id
updated_at_column: updated_at
columns:
  age: {type: number}
  joined: {type: time}
  tags: {type: list}
  updated_at: {skip: true}
`))
		m := merge(pullCaughtUp(t, s, ""))
		want1 := map[string]sdk.Value{"age": sdk.Number(42), "joined": sdk.Time(time.Date(2025, 3, 4, 0, 0, 0, 0, time.UTC)), "tags": sdk.List("a", "b"), "plan": sdk.String("gold")}
		if d := cmp.Diff(want1, m.byID(t, "1").Traits); d != "" {
			t.Errorf("good row (-want +got):\n%s", d)
		}
		// Only the fields that do not convert are skipped.
		if d := cmp.Diff(map[string]sdk.Value{"plan": sdk.String("silver")}, m.byID(t, "2").Traits); d != "" {
			t.Errorf("bad row (-want +got):\n%s", d)
		}
		text := pick(db, "text", "text")
		want := []sdk.Problem{
			{CustomerID: "2", Field: "age", Message: `column "age" (` + text + `): the value is not a number; the field was skipped`},
			{CustomerID: "2", Field: "joined", Message: `column "joined" (` + text + `): the value is not a time (RFC 3339, or YYYY-MM-DD[ hh:mm:ss]); the field was skipped`},
			{CustomerID: "2", Field: "tags", Message: `column "tags" (` + text + `): the value is not a JSON array; the field was skipped`},
		}
		if d := cmp.Diff(want, m.problems); d != "" {
			t.Errorf("problems (-want +got):\n%s", d)
		}
	})
}

func TestNullIDs(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		db.Exec(t, pick(db,
			`CREATE TABLE leads (lead_id text, name text, updated_at timestamp NOT NULL)`,
			`CREATE TABLE leads (lead_id VARCHAR(20), name TEXT, updated_at DATETIME(6) NOT NULL)`))
		db.Exec(t, "INSERT INTO leads VALUES ('a', 'x', ?), (NULL, 'y', ?), ('b', 'z', ?), (NULL, 'w', ?)",
			base, base.Add(time.Second), base.Add(2*time.Second), base.Add(time.Hour))
		for _, tc := range []struct {
			name, config string
			problems     []sdk.Problem
		}{
			{"incremental", "query: SELECT * FROM leads\nid_column: lead_id\nupdated_at_column: updated_at\n", []sdk.Problem{
				{Field: "lead_id", Message: `a row updated at 2026-01-01T12:00:01Z has no id (column "lead_id" is NULL); row skipped`},
			}},
			{"full reload", "table: leads\nid_column: lead_id\n", []sdk.Problem{
				{Field: "lead_id", Message: `2 rows have no id (column "lead_id" is NULL); they were skipped`},
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := newTestSource(t)
				configure(t, s, config(db, tc.config))
				m := merge(pullCaughtUp(t, s, ""))
				if d := cmp.Diff([]string{"a", "b"}, m.ids()); d != "" {
					t.Errorf("customers (-want +got):\n%s", d)
				}
				// The row at base+1h sorts after the last row with an id:
				// it is reported once a later row with an id is read.
				if d := cmp.Diff(tc.problems, m.problems); d != "" {
					t.Errorf("problems (-want +got):\n%s", d)
				}
			})
		}
	})
}

func TestDuplicateIDsInAPage(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		createPeople(t, db)
		insertPeople(t, db, person{id: 1, name: "a", updated: base}, person{id: 2, name: "b", updated: base.Add(time.Minute)})
		s := newTestSource(t)
		configure(t, s, config(db, `query: |
  SELECT 7 AS id, name, updated_at FROM people -- every row is customer 7
id_column: id
updated_at_column: updated_at
`))
		m := merge(pullCaughtUp(t, s, ""))
		if len(m.customers) != 1 || !cmp.Equal(m.customers[0].Traits["name"], sdk.String("b")) {
			t.Errorf("customers %+v; want customer 7 once, from the row updated last", m.customers)
		}
		if len(m.problems) != 1 || m.problems[0].CustomerID != "7" {
			t.Errorf("problems %+v", m.problems)
		}
	})
}

func TestFullReload(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		createPeople(t, db)
		insertPeople(t, db, sharedRows(10)...)
		s := newTestSource(t)
		configure(t, s, config(db, "table: people\nid_column: id\nbatch: 4\npoll: 200ms\n"))
		lp := startPull(t, s, "")
		first := lp.until(t, "the first pass", caughtUp)
		ids := merge(first).ids()
		if len(first) != 3 || !slices.Equal(ids, []string{"1", "10", "2", "3", "4", "5", "6", "7", "8", "9"}) && !slices.Equal(ids, idRange(1, 10)) {
			t.Errorf("first pass: %d batches, ids %v", len(first), ids)
		}
		done := first[len(first)-1].Cursor
		if c, _ := decodeCursor(done, s.state().fp); !c.Done {
			t.Errorf("the pass's last cursor %+v is not Done", c)
		}

		// The next pass, after poll, reads every row again, new ones too.
		insertPeople(t, db, person{id: 11, name: "new", updated: base})
		second := lp.until(t, "the second pass", caughtUp)
		if got := len(merge(second).customers); got != 11 {
			t.Errorf("second pass sent %d customers, want 11", got)
		}
		lp.stop(t)

		// After a restart between passes: caught up at once, no rows.
		s2 := newTestSource(t)
		configure(t, s2, config(db, "table: people\nid_column: id\nbatch: 4\npoll: 1h\n"))
		again := pullCaughtUp(t, s2, done)
		if len(again) != 1 || len(again[0].Customers) != 0 || again[0].Cursor != done {
			t.Errorf("resuming between passes: %d batches, first %+v", len(again), again[0])
		}
	})
}

func TestConfigChangeRereads(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		createPeople(t, db)
		insertPeople(t, db, sharedRows(6)...)
		s := newTestSource(t)
		configure(t, s, config(db, peopleConfig))
		cursor := merge(pullCaughtUp(t, s, "")).cursor

		// Same config: nothing new.
		if m := merge(pullCaughtUp(t, s, cursor)); len(m.customers) != 0 {
			t.Errorf("same config sent %v again", m.ids())
		}
		// A where changes which rows are read: the cursor does not apply.
		configure(t, s, config(db, peopleConfig+"where: id <= 3\n"))
		if d := cmp.Diff(idRange(1, 3), merge(pullCaughtUp(t, s, cursor)).ids()); d != "" {
			t.Errorf("after the where changed (-want +got):\n%s", d)
		}
	})
}

func TestQueryMode(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		createPeople(t, db)
		db.Exec(t, "CREATE TABLE orders (person_id bigint, total integer)")
		insertPeople(t, db, sharedRows(3)...)
		db.Exec(t, "INSERT INTO orders VALUES (1, 5), (1, 7), (3, 1)")
		s := newTestSource(t)
		info := configure(t, s, config(db, `query: |
  -- customers with their order count
  SELECT p.id AS "CustomerID", p.email AS "EmailAddress", p.updated_at,
         (SELECT COUNT(*) FROM orders o WHERE o.person_id = p.id) AS "OrderCount"
  FROM people p;
id_column: CustomerID
updated_at_column: updated_at
email: EmailAddress
columns:
  updated_at: {skip: true}
`))
		want := []sdk.Trait{{Name: "email_address", Type: sdk.TypeString}, {Name: "order_count", Type: sdk.TypeNumber}}
		if d := cmp.Diff(want, info.Traits, cmpNoDescription); d != "" {
			t.Errorf("traits (-want +got):\n%s", d)
		}
		if info.Contact.Email != "email_address" {
			t.Errorf("contact %+v", info.Contact)
		}
		m := merge(pullCaughtUp(t, s, ""))
		if got := m.byID(t, "1").Traits["order_count"]; !cmp.Equal(got, sdk.Number(2)) {
			t.Errorf("order_count of 1 = %v", got)
		}
	})
}

// TestLagZonelessTimestamps: a timestamp without time zone holds UTC (as
// pgx reads it), so the lag must hold even when the database's default
// time zone is far from UTC.
func TestLagZonelessTimestamps(t *testing.T) {
	db := testdb.Postgres(t)
	db.Exec(t, "ALTER DATABASE "+db.Name+" SET timezone = 'Asia/Tokyo'")
	db.Exec(t, "CREATE TABLE t (id int PRIMARY KEY, updated_at timestamp NOT NULL)")
	written := db.Now(t)
	db.Exec(t, "INSERT INTO t VALUES (1, ?)", written.UTC().Format("2006-01-02 15:04:05.999999"))
	s := newTestSource(t)
	configure(t, s, config(db, "table: t\nid_column: id\nupdated_at_column: updated_at\npoll: 100ms\nlag: 2s\n"))
	lp := startPull(t, s, "")
	if first := lp.until(t, "the backlog", caughtUp); sent(first, "1") {
		t.Fatalf("row 1 was read %v after it was written, within the lag of 2s", time.Since(written))
	}
	b := lp.until(t, "row 1", func(b *sdk.Batch) bool { return sent([]*sdk.Batch{b}, "1") })
	if waited := time.Since(written); waited < 2*time.Second-100*time.Millisecond {
		t.Errorf("row 1 was read %v after it was written, within the lag of 2s", waited)
	}
	got := merge(b).byID(t, "1").Traits["updated_at"].Time
	if d := got.Sub(written); d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("updated_at read as %v, written %v", got, written.UTC())
	}
}

// TestSimpleProtocol: behind PgBouncer in transaction mode the DSN asks pgx
// for the simple protocol, which sends arguments as text.
func TestSimpleProtocol(t *testing.T) {
	db := testdb.Postgres(t)
	createPeople(t, db)
	insertPeople(t, db, sharedRows(30)...)
	db.Exec(t, "CREATE TABLE zoneless (id text PRIMARY KEY, updated_at timestamp NOT NULL)")
	for _, p := range sharedRows(30) {
		db.Exec(t, "INSERT INTO zoneless VALUES (?, ?)", strconv.Itoa(p.id), p.updated.Add(123456*time.Microsecond))
	}
	// Text ids sort as text within one updated_at.
	textOrder := slices.Concat(idRange(1, 5), idRange(6, 25), idRange(26, 30))
	slices.Sort(textOrder[5:25])

	sep := "?"
	if strings.Contains(db.DSN, "?") {
		sep = "&"
	}
	dsn := db.DSN + sep + "default_query_exec_mode=simple_protocol"
	for table, want := range map[string][]string{"people": idRange(1, 30), "zoneless": textOrder} {
		s := newTestSource(t)
		configure(t, s, fmt.Sprintf("driver: postgres\ndsn: %q\ntable: %s\nid_column: id\nupdated_at_column: updated_at\nbatch: 7\n", dsn, table))
		if d := cmp.Diff(want, merge(pullCaughtUp(t, s, "")).ids()); d != "" {
			t.Errorf("%s: ids (-want +got):\n%s", table, d)
		}
	}
}

// TestSurvivesKilledConnection: a connection the server drops between
// polls (restart, idle timeout, an admin) is replaced, and nothing is lost.
func TestSurvivesKilledConnection(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testdb.DB) {
		createPeople(t, db)
		insertPeople(t, db, sharedRows(3)...)
		s := newTestSource(t)
		configure(t, s, config(db, peopleConfig+"poll: 200ms\nlag: 0s\n"))
		lp := startPull(t, s, "")
		lp.until(t, "the backlog", caughtUp)
		if db.Driver == "postgres" {
			db.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cohort-sql'")
		} else {
			rows, err := db.SQL.QueryContext(t.Context(), "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()", db.Name)
			if err != nil {
				t.Fatal(err)
			}
			var ids []int64
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			rows.Close()
			for _, id := range ids {
				db.Exec(t, fmt.Sprintf("KILL %d", id))
			}
		}
		db.Exec(t, "INSERT INTO people (id, name, updated_at) VALUES (100, 'new', "+pick(db, "now()", "NOW(6)")+")")
		lp.until(t, "the row written after the kill", func(b *sdk.Batch) bool { return sent([]*sdk.Batch{b}, "100") })
	})
}
