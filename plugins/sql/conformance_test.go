package main_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/sql/internal/sqlsource"
	"github.com/cohortd/cohort/plugins/sql/internal/testdb"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// sourceCase creates a customers table in db and returns the conformance
// case reading it, incrementally or by full reloads.
func sourceCase(t *testing.T, db *testdb.DB, incremental bool) sdktest.SourceCase {
	t.Helper()
	if db.Driver == "postgres" {
		db.Exec(t, `CREATE TABLE customers (id bigint PRIMARY KEY, email text, name text, plan text,
			spend numeric(10,2), vip boolean, tags text[], signed_up_at date,
			updated_at timestamptz NOT NULL, deleted_at timestamptz)`)
	} else {
		db.Exec(t, `CREATE TABLE customers (id BIGINT PRIMARY KEY, email VARCHAR(100), name VARCHAR(100), plan VARCHAR(20),
			spend DECIMAL(10,2), vip TINYINT(1), tags JSON, signed_up_at DATE,
			updated_at DATETIME(6) NOT NULL, deleted_at DATETIME(6) NULL)`)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tags := map[string]string{"postgres": "{a,b}", "mysql": `["a","b"]`}[db.Driver]
	for i := 1; i <= 23; i++ {
		var deleted any
		if i%7 == 0 {
			deleted = at
		}
		var plan any = "gold"
		if i%3 == 0 {
			plan = nil
		}
		db.Exec(t, "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			i, fmt.Sprintf("c%d@example.com", i), "Customer "+strconv.Itoa(i), plan, float64(i)*1.5, i%2 == 0, tags,
			at.AddDate(0, 0, -i), at.Add(time.Duration(i/5)*time.Minute), deleted)
	}
	keys := "id_column: id\nupdated_at_column: updated_at\ndeleted_column: deleted_at\n"
	if !incremental {
		keys = "id_column: id\n"
	}
	cfg := fmt.Sprintf("driver: %s\ndsn: %s\n", db.Driver, strconv.Quote(db.DSN))
	return sdktest.SourceCase{
		Config: []byte(cfg + "table: customers\n" + keys + "email: email\nbatch: 5\npoll: 1s\ncolumns:\n  tags: {type: list}\n"),
		BadConfigs: [][]byte{
			nil,
			[]byte(cfg + "table: customers\n"),
			[]byte(cfg + "table: customers\nid_column: nope\n"),
			[]byte(cfg + "table: nope\nid_column: id\n"),
			[]byte(cfg + "table: customers\nid_column: id\nbatch: 0\n"),
			[]byte(cfg + "table: customers\nid_column: id\nunknown: 1\n"),
			[]byte(cfg + "query: DELETE FROM customers\nid_column: id\n"),
			[]byte(cfg + "table: customers\nid_column: id\nupdated_at_column: name\n"),
			[]byte("driver: " + db.Driver + "\ndsn: " + map[string]string{"postgres": "postgres://u:sekret@127.0.0.1:1/x", "mysql": "u:sekret@tcp(127.0.0.1:1)/x"}[db.Driver] + "\ntable: customers\nid_column: id\n"),
		},
	}
}

func TestConformance(t *testing.T) {
	for _, incremental := range []bool{true, false} {
		t.Run(fmt.Sprint("postgres/incremental=", incremental), func(t *testing.T) {
			sdktest.RunSource(t, sqlsource.New(), sourceCase(t, testdb.Postgres(t), incremental))
		})
	}
	t.Run("mysql/incremental=true", func(t *testing.T) {
		sdktest.RunSource(t, sqlsource.New(), sourceCase(t, testdb.MySQL(t), true))
	})
}

func TestConformanceBinary(t *testing.T) {
	db := testdb.Postgres(t)
	c := sourceCase(t, db, true)
	sdktest.RunSourceBinary(t, sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/sql"), c)
}
