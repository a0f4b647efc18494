package sqlsource

import (
	"errors"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
)

const minimal = "driver: postgres\ndsn: postgres://u@h/db\ntable: customers\nid_column: id\n"

func TestParseConfigDefaults(t *testing.T) {
	s, err := parseConfig([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if s.batch != 1000 || s.poll != 30*time.Second || s.timeout != 60*time.Second || s.lag != 5*time.Second || s.nulls != nullsKeep {
		t.Errorf("defaults: batch %d, poll %v, timeout %v, lag %v, nulls %v", s.batch, s.poll, s.timeout, s.lag, s.nulls)
	}
	if len(s.table) != 1 || s.table[0] != "customers" {
		t.Errorf("table = %q", s.table)
	}
}

func TestParseConfigFull(t *testing.T) {
	s, err := parseConfig([]byte(`
driver: mysql
dsn: cohort:secret@tcp(db:3306)/crm
query: |
  -- active customers
  SELECT * FROM customers WHERE active = 1;
id_column: id
updated_at_column: updated_at
deleted_column: deleted_at
columns:
  Notes: {skip: true}
  Tags: {type: list, name: labels}
email: email
phone: phone
timezone: tz
batch: 500
poll: 1m30s
timeout: 10s
lag: 0s
nulls: clear
`))
	if err != nil {
		t.Fatal(err)
	}
	if s.query != "-- active customers\nSELECT * FROM customers WHERE active = 1" {
		t.Errorf("query = %q", s.query)
	}
	if s.batch != 500 || s.poll != 90*time.Second || s.timeout != 10*time.Second || s.lag != 0 || !s.lagSet || s.nulls != nullsClear {
		t.Errorf("batch %d, poll %v, timeout %v, lag %v (set %v), nulls %v", s.batch, s.poll, s.timeout, s.lag, s.lagSet, s.nulls)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, config, field, want string
	}{
		{"empty", "", "driver", "driver: required; set it to postgres or mysql"},
		{"bad driver", "driver: mariadb\n", "driver", `driver: "mariadb" is not supported; use postgres or mysql (mysql also covers MariaDB)`},
		{"no dsn", "driver: mysql\n", "dsn", "dsn: required; set it to the connection string, e.g. cohort:${CRM_PASSWORD}@tcp(crm-db:3306)/crm, with the password from an environment variable"},
		{"no table", "driver: postgres\ndsn: x\nid_column: id\n", "table", "table: required; set table to the table (or view) holding the customers, or query to a SELECT"},
		{"table and query", "driver: postgres\ndsn: x\ntable: t\nquery: SELECT 1\n", "table", "table: set either table or query, not both"},
		{"bad table", "driver: postgres\ndsn: x\ntable: a..b\n", "table", `table: "a..b" is not a table name; write name or schema.name, unquoted (for anything else use query)`},
		{"where with query", "driver: postgres\ndsn: x\nquery: SELECT 1\nwhere: a = 1\n", "where", "where: applies only with table; put the condition in query instead"},
		{"query not select", "driver: postgres\ndsn: x\nquery: /* hi */ DELETE FROM customers\n", "query", "query: must be a SELECT (or WITH ... SELECT) statement, not DELETE; the plugin only reads"},
		{"no id", "driver: postgres\ndsn: x\ntable: t\n", "id_column", "id_column: required; name the column that holds the customer id"},
		{"batch 0", minimal + "batch: 0\n", "batch", "batch: 0 is out of range; use 1 to 10000 rows per batch (default 1000)"},
		{"batch text", minimal + "batch: lots\n", "batch", `batch: line 5:8: expected a whole number, found "lots"`},
		{"poll no unit", minimal + "poll: 30\n", "poll", `poll: "30" has no unit; write e.g. 30s (units: ms, s, m, h)`},
		{"poll short", minimal + "poll: 10ms\n", "poll", "poll: 10ms is out of range; use 100ms to 24h (default 30s)"},
		{"timeout bad", minimal + "timeout: soon\n", "timeout", `timeout: "soon" is not a duration; write e.g. 1m (units: ms, s, m, h)`},
		{"lag negative", minimal + "updated_at_column: u\nlag: -1s\n", "lag", "lag: -1s is out of range; use 0s to 1h (default 5s)"},
		{"lag without updated_at", minimal + "lag: 1s\n", "lag", "lag: applies only with updated_at_column; set updated_at_column or remove lag"},
		{"nulls", minimal + "nulls: drop\n", "nulls", `nulls: "drop" is not keep or clear; keep (the default) leaves a trait as it was when its column is NULL, clear removes it`},
		{"unknown key", minimal + "upated_at_column: u\n", "upated_at_column", `line 5:1: unknown key "upated_at_column" at the top level (known keys: batch, columns, deleted_column, driver, dsn, email, id_column, lag, nulls, phone, poll, query, table, timeout, timezone, updated_at_column, where); did you mean "updated_at_column"?`},
		{"duplicate key", minimal + "table: other\n", "table", `line 5:1: duplicate key "table"`},
		{"column type", minimal + "columns:\n  tags: {type: array}\n", "columns.tags.type", `columns.tags.type: unknown type "array"; use string, number, bool, time or list`},
		{"column key", minimal + "columns:\n  tags: {typ: list}\n", "columns.tags.typ", `columns.tags.typ: line 6:10: unknown key "typ" in columns.tags (known keys: name, skip, type); did you mean "type"?`},
		{"column skip and type", minimal + "columns:\n  tags: {skip: true, type: list}\n", "columns.tags", "columns.tags: skip: true with other keys; a skipped column is not read, so remove the other keys or the skip"},
		{"column name", minimal + "columns:\n  tags: {name: 2tags}\n", "columns.tags.name", `columns.tags.name: "2tags" does not start with a letter or _; choose another name (ASCII letters, digits and _, starting with a letter or _)`},
		{"columns not a mapping", minimal + "columns: [a]\n", "columns", "columns: line 5:10: expected a mapping of keys to values, found a list"},
		{"skip not bool", minimal + "columns:\n  tags: {skip: maybe}\n", "columns.tags.skip", `columns.tags.skip: line 6:16: expected true or false, found "maybe"`},
		{"same contact column", minimal + "email: contact\nphone: contact\n", "phone", `phone: column "contact" is already the email column; each contact field needs its own column`},
		{"not yaml", "driver: [", "", "line 1:1: invalid YAML: did not find expected node content"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.config))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.config)
			}
			var e *sdk.Error
			if !errors.As(err, &e) || e.Code != sdk.InvalidConfig {
				t.Fatalf("error %v is not an InvalidConfig *sdk.Error", err)
			}
			if e.Field != tc.field {
				t.Errorf("field = %q, want %q", e.Field, tc.field)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got: %s\nwant: %s", err, tc.want)
			}
		})
	}
}

func TestCheckQuery(t *testing.T) {
	for in, want := range map[string]string{
		"SELECT 1":                             "SELECT 1",
		"  select * from t ;; ":                "select * from t",
		"with x as (select 1) select * from x": "with x as (select 1) select * from x",
		"-- c\n/* d */ SELECT 2;":              "-- c\n/* d */ SELECT 2",
	} {
		got, err := checkQuery(in)
		if err != nil || got != want {
			t.Errorf("checkQuery(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := checkQuery(";"); err == nil || err.Error() != "query: must be a SELECT statement; it is empty" {
		t.Errorf("checkQuery(;) = %v", err)
	}
}
