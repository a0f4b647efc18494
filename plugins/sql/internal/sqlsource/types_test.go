package sqlsource

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/plugins/sql/internal/testdb"
	"github.com/cohortd/cohort/sdk"
)

func TestTypesPostgres(t *testing.T) {
	db := testdb.Postgres(t)
	db.Exec(t, `CREATE TYPE mood AS ENUM ('happy', 'sad')`)
	db.Exec(t, `CREATE TABLE types (
		id uuid PRIMARY KEY,
		small smallint, big bigint, price numeric(10,2), ratio real, dbl double precision,
		active boolean, born date, seen timestamp, seen_tz timestamptz,
		name varchar(50), code char(3), bio text, tags text[], scores int[], attrs jsonb, doc json,
		photo bytea, feeling mood, ip inet, dur interval,
		"FirstName" text, "Total Charges" numeric,
		updated_at timestamptz NOT NULL)`)
	db.Exec(t, `INSERT INTO types VALUES (
		'5b0e4c52-1bd8-4d25-9f43-7f2a3c1e0a01',
		-3, 9007199254740993, 12.50, 0.1, 0.1,
		true, '2020-02-29', '2026-01-02 03:04:05.123456', '2026-01-02 03:04:05+02',
		'Zoë', 'ab', 'line1
line2', '{a,"b c"}', '{1,2}', '{"a": [1]}', '{"b":2}',
		'\x00ff', 'happy', '10.0.0.1', '1 day',
		'Ann', 70.1,
		'2026-01-01 00:00:00Z')`)
	db.Exec(t, `INSERT INTO types (id, updated_at) VALUES ('5b0e4c52-1bd8-4d25-9f43-7f2a3c1e0a02', '2026-01-01 00:00:01Z')`)

	s := newTestSource(t)
	info := configure(t, s, config(db, "table: types\nid_column: id\nupdated_at_column: updated_at\n"))
	wantTraits := []sdk.Trait{
		{Name: "small", Type: sdk.TypeNumber}, {Name: "big", Type: sdk.TypeNumber}, {Name: "price", Type: sdk.TypeNumber},
		{Name: "ratio", Type: sdk.TypeNumber}, {Name: "dbl", Type: sdk.TypeNumber},
		{Name: "active", Type: sdk.TypeBool}, {Name: "born", Type: sdk.TypeTime}, {Name: "seen", Type: sdk.TypeTime}, {Name: "seen_tz", Type: sdk.TypeTime},
		{Name: "name", Type: sdk.TypeString}, {Name: "code", Type: sdk.TypeString}, {Name: "bio", Type: sdk.TypeString},
		{Name: "tags", Type: sdk.TypeStringList}, {Name: "scores", Type: sdk.TypeStringList},
		{Name: "attrs", Type: sdk.TypeString}, {Name: "doc", Type: sdk.TypeString},
		// photo (bytea) is not loaded
		{Name: "feeling", Type: sdk.TypeString}, {Name: "ip", Type: sdk.TypeString}, {Name: "dur", Type: sdk.TypeString},
		{Name: "first_name", Type: sdk.TypeString}, {Name: "total_charges", Type: sdk.TypeNumber},
		{Name: "updated_at", Type: sdk.TypeTime},
	}
	if d := cmp.Diff(wantTraits, info.Traits, cmpNoDescription); d != "" {
		t.Errorf("traits (-want +got):\n%s", d)
	}
	if got := info.Traits[0].Description; got != "column small (int2)" {
		t.Errorf("description = %q", got)
	}

	m := merge(pullCaughtUp(t, s, ""))
	want := map[string]sdk.Value{
		"small": sdk.Number(-3), "big": sdk.Number(9007199254740993), "price": sdk.Number(12.5), "ratio": sdk.Number(0.1), "dbl": sdk.Number(0.1),
		"active": sdk.Bool(true), "born": sdk.Time(time.Date(2020, 2, 29, 0, 0, 0, 0, time.UTC)),
		"seen":    sdk.Time(time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)),
		"seen_tz": sdk.Time(time.Date(2026, 1, 2, 1, 4, 5, 0, time.UTC)),
		"name":    sdk.String("Zoë"), "code": sdk.String("ab "), "bio": sdk.String("line1\nline2"),
		"tags": sdk.List("a", "b c"), "scores": sdk.List("1", "2"), "attrs": sdk.String(`{"a": [1]}`), "doc": sdk.String(`{"b":2}`),
		"feeling": sdk.String("happy"), "ip": sdk.String("10.0.0.1"), "dur": sdk.String("1 day"),
		"first_name": sdk.String("Ann"), "total_charges": sdk.Number(70.1),
		"updated_at": sdk.Time(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
	}
	if d := cmp.Diff(want, m.byID(t, "5b0e4c52-1bd8-4d25-9f43-7f2a3c1e0a01").Traits); d != "" {
		t.Errorf("values (-want +got):\n%s", d)
	}
	// NULLs are missing traits, of every type.
	if d := cmp.Diff(map[string]sdk.Value{"updated_at": sdk.Time(time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC))}, m.byID(t, "5b0e4c52-1bd8-4d25-9f43-7f2a3c1e0a02").Traits); d != "" {
		t.Errorf("NULLs (-want +got):\n%s", d)
	}
	if len(m.problems) > 0 {
		t.Errorf("problems: %v", m.problems)
	}
}

func TestTypesMySQL(t *testing.T) {
	db := testdb.MySQL(t)
	db.Exec(t, "CREATE TABLE types (\n"+
		"id BIGINT UNSIGNED PRIMARY KEY,\n"+
		"tiny TINYINT, flag TINYINT(1), bitflag BIT(1), bits BIT(10), small SMALLINT, big BIGINT UNSIGNED, price DECIMAL(10,2), ratio FLOAT, dbl DOUBLE, yr YEAR,\n"+
		"born DATE, seen DATETIME(6), stamp TIMESTAMP(6) NULL, tod TIME,\n"+
		"name VARCHAR(50), code CHAR(3), bio TEXT, feeling ENUM('happy','sad'), perms SET('read','write','admin'), attrs JSON,\n"+
		"photo BLOB, bin VARBINARY(16),\n"+
		"FirstName VARCHAR(20), `Total Charges` DECIMAL(10,2),\n"+
		"updated_at DATETIME(6) NOT NULL)")
	db.Exec(t, "INSERT INTO types VALUES (\n"+
		"18446744073709551615,\n"+
		"-3, 1, b'1', b'1000000001', 7, 18446744073709551615, 12.50, 0.1, 0.1, 2024,\n"+
		"'2020-02-29', '2026-01-02 03:04:05.123456', '2026-01-02 03:04:05.5', '12:34:56',\n"+
		"'Zoë', 'ab', 'line1\\nline2', 'happy', 'read,admin', '{\"a\": [1]}',\n"+
		"x'00ff', x'01',\n"+
		"'Ann', 70.10,\n"+
		"'2026-01-01 00:00:00')")
	db.Exec(t, "INSERT INTO types (id, updated_at) VALUES (2, '2026-01-01 00:00:01')")

	s := newTestSource(t)
	info := configure(t, s, config(db, "table: types\nid_column: id\nupdated_at_column: updated_at\n"))
	wantTraits := []sdk.Trait{
		{Name: "tiny", Type: sdk.TypeNumber}, {Name: "flag", Type: sdk.TypeBool}, {Name: "bitflag", Type: sdk.TypeBool}, {Name: "bits", Type: sdk.TypeNumber},
		{Name: "small", Type: sdk.TypeNumber}, {Name: "big", Type: sdk.TypeNumber}, {Name: "price", Type: sdk.TypeNumber},
		{Name: "ratio", Type: sdk.TypeNumber}, {Name: "dbl", Type: sdk.TypeNumber}, {Name: "yr", Type: sdk.TypeNumber},
		{Name: "born", Type: sdk.TypeTime}, {Name: "seen", Type: sdk.TypeTime}, {Name: "stamp", Type: sdk.TypeTime}, {Name: "tod", Type: sdk.TypeString},
		{Name: "name", Type: sdk.TypeString}, {Name: "code", Type: sdk.TypeString}, {Name: "bio", Type: sdk.TypeString},
		{Name: "feeling", Type: sdk.TypeString}, {Name: "perms", Type: sdk.TypeStringList}, {Name: "attrs", Type: sdk.TypeString},
		// photo and bin (binary) are not loaded
		{Name: "first_name", Type: sdk.TypeString}, {Name: "total_charges", Type: sdk.TypeNumber},
		{Name: "updated_at", Type: sdk.TypeTime},
	}
	if d := cmp.Diff(wantTraits, info.Traits, cmpNoDescription); d != "" {
		t.Errorf("traits (-want +got):\n%s", d)
	}

	m := merge(pullCaughtUp(t, s, ""))
	want := map[string]sdk.Value{
		"tiny": sdk.Number(-3), "flag": sdk.Bool(true), "bitflag": sdk.Bool(true), "bits": sdk.Number(513),
		"small": sdk.Number(7), "big": sdk.Number(18446744073709551615), "price": sdk.Number(12.5),
		"ratio": sdk.Number(0.1), "dbl": sdk.Number(0.1), "yr": sdk.Number(2024),
		"born":  sdk.Time(time.Date(2020, 2, 29, 0, 0, 0, 0, time.UTC)),
		"seen":  sdk.Time(time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)),
		"stamp": sdk.Time(time.Date(2026, 1, 2, 3, 4, 5, 500000000, time.UTC)),
		"tod":   sdk.String("12:34:56"),
		"name":  sdk.String("Zoë"), "code": sdk.String("ab"), "bio": sdk.String("line1\nline2"),
		"feeling": sdk.String("happy"), "perms": sdk.List("read", "admin"), "attrs": sdk.String(`{"a": [1]}`),
		"first_name": sdk.String("Ann"), "total_charges": sdk.Number(70.1),
		"updated_at": sdk.Time(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
	}
	if d := cmp.Diff(want, m.byID(t, "18446744073709551615").Traits); d != "" {
		t.Errorf("values (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]sdk.Value{"updated_at": sdk.Time(time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC))}, m.byID(t, "2").Traits); d != "" {
		t.Errorf("NULLs (-want +got):\n%s", d)
	}
	if len(m.problems) > 0 {
		t.Errorf("problems: %v", m.problems)
	}

	// From a query, MySQL does not say that a TINYINT(1) is a boolean:
	// it is a number unless the config says bool.
	s2 := newTestSource(t)
	info = configure(t, s2, config(db, "query: SELECT id, flag, tiny FROM types\nid_column: id\ncolumns:\n  tiny: {type: bool}\n"))
	if d := cmp.Diff([]sdk.Trait{{Name: "flag", Type: sdk.TypeNumber}, {Name: "tiny", Type: sdk.TypeBool}}, info.Traits, cmpNoDescription); d != "" {
		t.Errorf("query traits (-want +got):\n%s", d)
	}
	m = merge(pullCaughtUp(t, s2, ""))
	if len(m.problems) != 1 || m.problems[0].Field != "tiny" || m.problems[0].CustomerID != "18446744073709551615" {
		t.Errorf("a TINYINT of -3 read as bool: problems %v", m.problems)
	}
}

// TestUnsignedIDsResume checks that ids beyond int64 page correctly: MySQL
// returns them as text, and the cursor must compare them as numbers.
func TestUnsignedIDsResume(t *testing.T) {
	db := testdb.MySQL(t)
	db.Exec(t, "CREATE TABLE big (id BIGINT UNSIGNED PRIMARY KEY, updated_at DATETIME NOT NULL)")
	ids := []string{"18446744073709551613", "18446744073709551614", "18446744073709551615", "9", "10"}
	for _, id := range ids {
		db.Exec(t, "INSERT INTO big VALUES (?, ?)", id, base)
	}
	s := newTestSource(t)
	configure(t, s, config(db, "table: big\nid_column: id\nupdated_at_column: updated_at\nbatch: 2\n"))
	got := merge(pullCaughtUp(t, s, "")).ids()
	if d := cmp.Diff([]string{"9", "10", "18446744073709551613", "18446744073709551614", "18446744073709551615"}, got); d != "" {
		t.Errorf("ids (-want +got):\n%s", d)
	}
}
