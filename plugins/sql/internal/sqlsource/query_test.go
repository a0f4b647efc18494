package sqlsource

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testPlan is a plan over table crm.customers (id bigint, updated_at
// timestamp) or over a query.
func testPlan(d dialect, incremental bool, where, query string) *plan {
	set := &settings{dialect: d, where: where, query: query, batch: 100, lag: 5 * time.Second}
	if query == "" {
		set.table = []string{"crm", "customers"}
	}
	sc := &schema{
		cols:    []column{{name: "id", class: classInt}, {name: "updated_at", class: classTime}, {name: "email", class: classText}},
		id:      0,
		updated: -1,
		deleted: -1,
	}
	if incremental {
		sc.updated = 1
	}
	return newPlan(set, sc)
}

func TestPageSQL(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	c := cursor{U: keyValue{'t', at.Format(time.RFC3339Nano)}, ID: keyValue{'i', "42"}}
	for _, tc := range []struct {
		name     string
		p        *plan
		cur      cursor
		wantSQL  string
		wantArgs []any
	}{
		{
			"postgres first page", testPlan(postgres{}, true, "active", ""), cursor{},
			`SELECT "id", "updated_at", "email" FROM "crm"."customers" WHERE (active` + "\n" + `) AND "id" IS NOT NULL AND "updated_at" IS NOT NULL AND "updated_at" <= now() - interval '5000000 microseconds' ORDER BY "updated_at", "id" LIMIT 100`,
			nil,
		},
		{
			"postgres after cursor", testPlan(postgres{}, true, "", ""), c,
			`SELECT "id", "updated_at", "email" FROM "crm"."customers" WHERE "id" IS NOT NULL AND "updated_at" IS NOT NULL AND "updated_at" <= now() - interval '5000000 microseconds' AND ("updated_at", "id") > ($1, $2) ORDER BY "updated_at", "id" LIMIT 100`,
			[]any{at, int64(42)},
		},
		{
			"mysql after cursor", testPlan(mysql{}, true, "", ""), c,
			"SELECT `id`, `updated_at`, `email` FROM `crm`.`customers` WHERE `id` IS NOT NULL AND `updated_at` IS NOT NULL AND `updated_at` <= NOW(6) - INTERVAL 5000000 MICROSECOND AND `updated_at` >= ? AND (`updated_at` > ? OR `id` > ?) ORDER BY `updated_at`, `id` LIMIT 100",
			[]any{at, at, int64(42)},
		},
		{
			"mysql query, full reload", testPlan(mysql{}, false, "", "SELECT * FROM c -- all"), cursor{ID: keyValue{'s', "abc"}},
			"SELECT `id`, `updated_at`, `email` FROM (\nSELECT * FROM c -- all\n) AS cohort_src WHERE `id` IS NOT NULL AND `id` > ? ORDER BY `id` LIMIT 100",
			[]any{"abc"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, args, err := tc.p.page(tc.cur, 100)
			if err != nil {
				t.Fatal(err)
			}
			if q != tc.wantSQL {
				t.Errorf("SQL:\n got: %s\nwant: %s", q, tc.wantSQL)
			}
			if d := cmp.Diff(tc.wantArgs, args); d != "" {
				t.Errorf("args (-want +got):\n%s", d)
			}
		})
	}
}

func TestNullIDSQL(t *testing.T) {
	p := testPlan(postgres{}, true, "", "")
	from, to := keyValue{'t', "2026-01-01T00:00:00Z"}, keyValue{'t', "2026-01-02T00:00:00Z"}
	q, args, err := p.nullIDs(from, to, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := `SELECT "updated_at" FROM "crm"."customers" WHERE "id" IS NULL AND "updated_at" IS NOT NULL AND "updated_at" <= now() - interval '5000000 microseconds' AND "updated_at" > $1 AND "updated_at" <= $2 ORDER BY "updated_at" LIMIT 100`
	if q != want || len(args) != 2 {
		t.Errorf("SQL:\n got: %s\nwant: %s\nargs %v", q, want, args)
	}
	if got, want := testPlan(mysql{}, false, "x > 1", "").countNullIDs(), "SELECT COUNT(*) FROM `crm`.`customers` WHERE (x > 1\n) AND `id` IS NULL"; got != want {
		t.Errorf("count SQL:\n got: %s\nwant: %s", got, want)
	}
}

func TestQuote(t *testing.T) {
	if got := (postgres{}).quote(`we"ird`); got != `"we""ird"` {
		t.Errorf("postgres quote = %s", got)
	}
	if got := (mysql{}).quote("we`ird"); got != "`we``ird`" {
		t.Errorf("mysql quote = %s", got)
	}
}
