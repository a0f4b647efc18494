package sqlsource

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/sql/internal/testdb"
	"github.com/cohortd/cohort/sdk"
)

// configCase is a config Configure must reject with code, field and
// message (exact, or a prefix when the rest is the server's wording).
type configCase struct {
	name   string
	config string
	code   sdk.ErrorCode
	field  string
	want   string
	prefix bool
}

func (tc configCase) run(t *testing.T) {
	t.Run(tc.name, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		_, err := newTestSource(t).Configure(ctx, sdk.ConfigureRequest{Instance: "crm", Config: []byte(tc.config)})
		if err == nil {
			t.Fatalf("accepted:\n%s", tc.config)
		}
		var e *sdk.Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v is not an *sdk.Error", err)
		}
		if e.Code != tc.code || e.Field != tc.field {
			t.Errorf("code %v, field %q; want %v, %q (%v)", e.Code, e.Field, tc.code, tc.field, err)
		}
		if got := err.Error(); got != tc.want && !(tc.prefix && strings.HasPrefix(got, tc.want)) {
			t.Errorf("error:\n got: %s\nwant: %s", got, tc.want)
		}
		if strings.Contains(err.Error(), "sekret") {
			t.Errorf("the error shows the password: %s", err)
		}
	})
}

func TestConfigureErrorsPostgres(t *testing.T) {
	db := testdb.Postgres(t)
	createPeople(t, db)
	db.Exec(t, `CREATE TABLE versions (id bigint PRIMARY KEY, version bigint, photo bytea)`)
	db.Exec(t, `CREATE TABLE blobs (id bytea PRIMARY KEY)`)
	dsn := func(s string) string { return fmt.Sprintf("driver: postgres\ndsn: %q\n", s) }
	cfg := func(extra string) string { return config(db, extra) }
	people := "table: people\nid_column: id\n"
	peopleCols := "id, name, email, score, updated_at, deleted_at"
	for _, tc := range []configCase{
		{"unreachable", dsn("postgres://postgres:sekret@127.0.0.1:1/test") + people, sdk.Unavailable, "dsn",
			"dsn: cannot connect to PostgreSQL at 127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused; check that it is running and reachable from the daemon", false},
		{"bad dsn", dsn("postgres://postgres:sekret@127.0.0.1:x/test") + people, sdk.InvalidConfig, "dsn",
			"dsn: not a PostgreSQL connection string (", true},
		{"no database", dsn(strings.Replace(db.DSN, db.Name, "nope_db", 1)) + people, sdk.InvalidConfig, "dsn",
			`dsn: PostgreSQL at 127.0.0.1:5432 has no database "nope_db"; check the database name`, false},
		{"unknown user", dsn(strings.Replace(db.DSN, "postgres@", "nobody_xyz:sekret@", 1)) + people, sdk.Unauthenticated, "dsn",
			`dsn: PostgreSQL at 127.0.0.1:5432, database ` + db.Name + ` refused user "nobody_xyz": `, true},
		{"no table", cfg("table: nope\nid_column: id\n"), sdk.InvalidConfig, "table",
			`table: no table or view "nope" in database "` + db.Name + `"; check the name, the schema and the user's access`, false},
		{"no table, case", cfg("table: People\nid_column: id\n"), sdk.InvalidConfig, "table",
			`table: no table or view "People" in database "` + db.Name + `" (PostgreSQL folds unquoted names to lower case: did you mean people?); check the name, the schema and the user's access`, false},
		{"no schema", cfg("table: crm.people\nid_column: id\n"), sdk.InvalidConfig, "table",
			`table: no table or view "crm.people" in database "` + db.Name + `"; check the name, the schema and the user's access`, false},
		{"no id column", cfg("table: people\nid_column: customer_id\n"), sdk.InvalidConfig, "id_column",
			`id_column: no column "customer_id" in table people; its columns are: ` + peopleCols, false},
		{"no updated_at column", cfg(people + "updated_at_column: modified\n"), sdk.InvalidConfig, "updated_at_column",
			`updated_at_column: no column "modified" in table people; its columns are: ` + peopleCols, false},
		{"unknown column override", cfg(people + "columns:\n  nope: {skip: true}\n"), sdk.InvalidConfig, "columns.nope",
			`columns.nope: no column "nope" in table people; its columns are: ` + peopleCols, false},
		{"unknown contact column", cfg(people + "phone: mobile\n"), sdk.InvalidConfig, "phone",
			`phone: no column "mobile" in table people; its columns are: ` + peopleCols, false},
		{"bad where", cfg(people + "where: actve\n"), sdk.InvalidConfig, "where",
			`where: PostgreSQL rejected it: column "actve" does not exist (42703); check the condition`, false},
		{"bad query", cfg("query: SELECT * FORM people\nid_column: id\n"), sdk.InvalidConfig, "query",
			`query: PostgreSQL rejected it: syntax error at or near "FORM" (42601); check the query`, false},
		{"query names no table", cfg("query: SELECT * FROM nope\nid_column: id\n"), sdk.InvalidConfig, "query",
			`query: PostgreSQL rejected it: relation "nope" does not exist (42P01); check the query`, false},
		{"duplicate columns", cfg("query: SELECT id, name, email AS name FROM people\nid_column: id\n"), sdk.InvalidConfig, "query",
			`query: columns 2 and 3 of the query's result are both named "name"; give them different names (AS ...)`, false},
		{"updated_at not a time", cfg(people + "updated_at_column: name\n"), sdk.InvalidConfig, "updated_at_column",
			`updated_at_column: column "name" is a text column; it must be a date or timestamp column (or a number that grows with every change)`, false},
		{"lag with a number", cfg("table: versions\nid_column: id\nupdated_at_column: version\nlag: 2s\n"), sdk.InvalidConfig, "lag",
			`lag: applies only when updated_at_column is a date or timestamp; "version" is an int8 column, so remove lag`, false},
		{"deleted not a flag", cfg(people + "updated_at_column: updated_at\ndeleted_column: email\n"), sdk.InvalidConfig, "deleted_column",
			`deleted_column: column "email" is a text column; it must be a boolean (true = deleted), a number (non-zero = deleted) or a nullable timestamp (set = deleted)`, false},
		{"binary id", cfg("table: blobs\nid_column: id\n"), sdk.InvalidConfig, "id_column",
			`id_column: column "id" is a bytea column; ids must be text or numbers (in query, select a text form of it, e.g. CAST(... AS CHAR))`, false},
		{"contact typed", cfg(people + "email: email\ncolumns:\n  email: {type: list}\n"), sdk.InvalidConfig, "columns.email.type",
			`columns.email.type: the email column must be a string; remove the type or set it to string`, false},
		{"contact skipped", cfg(people + "email: email\ncolumns:\n  email: {skip: true}\n"), sdk.InvalidConfig, "email",
			`email: column "email" is skipped in columns.email; remove the skip or choose another column`, false},
		{"trait collision", cfg("query: SELECT id, name AS \"FirstName\", email AS first_name FROM people\nid_column: id\n"), sdk.InvalidConfig, "columns.first_name",
			`columns.first_name: columns "FirstName" and "first_name" both become trait "first_name"; set columns.first_name.name to another name, or columns.first_name.skip: true`, false},
		{"bad trait name", cfg("query: SELECT id, score AS \"2fa\" FROM people\nid_column: id\n"), sdk.InvalidConfig, "columns.2fa",
			`columns.2fa: column "2fa" becomes trait name "2fa", which does not start with a letter or _; set columns.2fa.name to a trait name (ASCII letters, digits and _), or columns.2fa.skip: true`, false},
	} {
		tc.run(t)
	}
}

func TestConfigureErrorsMySQL(t *testing.T) {
	db := testdb.MySQL(t)
	createPeople(t, db)
	dsn := func(s string) string { return fmt.Sprintf("driver: mysql\ndsn: %q\n", s) }
	cfg := func(extra string) string { return config(db, extra) }
	people := "table: people\nid_column: id\n"
	for _, tc := range []configCase{
		{"unreachable", dsn("root:sekret@tcp(127.0.0.1:1)/test") + people, sdk.Unavailable, "dsn",
			"dsn: cannot connect to MySQL at 127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused; check that it is running and reachable from the daemon", false},
		{"url dsn", dsn("mysql://root:sekret@127.0.0.1/test") + people, sdk.InvalidConfig, "dsn",
			"dsn: MySQL connection strings are not URLs; write user:password@tcp(host:3306)/database", false},
		{"bad dsn", dsn("root:sekret@tcp(127.0.0.1:3306)") + people, sdk.InvalidConfig, "dsn",
			"dsn: not a MySQL connection string (invalid DSN: missing the slash separating the database name); write it as user:password@tcp(host:3306)/database", false},
		{"wrong password", dsn("root:sekret@tcp(127.0.0.1:3306)/"+db.Name) + people, sdk.Unauthenticated, "dsn",
			`dsn: MySQL at 127.0.0.1:3306, database ` + db.Name + ` refused user "root": Access denied for user 'root'@`, true},
		{"no database", dsn("root@tcp(127.0.0.1:3306)/nope_db") + people, sdk.InvalidConfig, "dsn",
			`dsn: MySQL at 127.0.0.1:3306 has no database "nope_db"; check the database name`, false},
		{"no table", cfg("table: nope\nid_column: id\n"), sdk.InvalidConfig, "table",
			`table: no table or view "nope" in database "` + db.Name + `"; check the name, the schema and the user's access`, false},
		{"no id column", cfg("table: people\nid_column: customer_id\n"), sdk.InvalidConfig, "id_column",
			`id_column: no column "customer_id" in table people; its columns are: id, name, email, score, updated_at, deleted_at`, false},
		{"bad where", cfg(people + "where: actve = 1\n"), sdk.InvalidConfig, "where",
			"where: MySQL rejected it: Unknown column 'actve' in ", true},
		{"duplicate columns", cfg("query: SELECT id, name, email AS name FROM people\nid_column: id\n"), sdk.InvalidConfig, "query",
			"query: MySQL rejected it: Duplicate column name 'name' (1060); check the query", false},
		{"updated_at not a time", cfg(people + "updated_at_column: name\n"), sdk.InvalidConfig, "updated_at_column",
			`updated_at_column: column "name" is a varchar column; it must be a date or timestamp column (or a number that grows with every change)`, false},
	} {
		tc.run(t)
	}
}

// TestConfigureTimeout: a table locked by a migration makes Configure fail
// promptly with DeadlineExceeded on the key that names it.
func TestConfigureTimeout(t *testing.T) {
	db := testdb.Postgres(t)
	createPeople(t, db)
	tx, err := db.SQL.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(t.Context(), "LOCK TABLE people IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	configCase{"locked table", config(db, "table: people\nid_column: id\ntimeout: 1s\n"), sdk.DeadlineExceeded, "table",
		"table: PostgreSQL did not answer within 1s; raise timeout, or make the table cheaper to read (an index on the key columns)", false}.run(t)
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("Configure took %v with a timeout of 1s", took)
	}
}
