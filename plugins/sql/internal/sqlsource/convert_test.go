package sqlsource

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cohortd/cohort/sdk"
)

func TestConvert(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	text := &column{class: classText}
	for _, tc := range []struct {
		name    string
		v       any
		typ     sdk.TraitType
		c       *column
		want    sdk.Value
		problem string
	}{
		{"null", nil, sdk.TypeString, text, sdk.Value{}, ""},
		{"string", "a", sdk.TypeString, text, sdk.String("a"), ""},
		{"bytes", []byte("é"), sdk.TypeString, text, sdk.String("é"), ""},
		{"bad utf8", []byte{0xff}, sdk.TypeString, text, sdk.Value{}, "is not valid UTF-8 text"},
		{"int as string", int64(15551234567), sdk.TypeString, text, sdk.String("15551234567"), ""},
		{"int", int64(3), sdk.TypeNumber, text, sdk.Number(3), ""},
		{"decimal", []byte("3.25"), sdk.TypeNumber, &column{class: classDecimal}, sdk.Number(3.25), ""},
		{"float32", float32(0.1), sdk.TypeNumber, text, sdk.Number(0.1), ""},
		{"NaN", "NaN", sdk.TypeNumber, text, sdk.Value{}, "is not a finite number"},
		{"huge", "1e400", sdk.TypeNumber, text, sdk.Value{}, "is not a finite number"},
		{"not a number", "abc", sdk.TypeNumber, text, sdk.Value{}, "is not a number"},
		{"empty number", " ", sdk.TypeNumber, text, sdk.Value{}, ""},
		{"bit", []byte{1, 0}, sdk.TypeNumber, &column{class: classBit}, sdk.Number(256), ""},
		{"bool", true, sdk.TypeBool, text, sdk.Bool(true), ""},
		{"tinyint bool", int64(0), sdk.TypeBool, text, sdk.Bool(false), ""},
		{"tinyint 2", int64(2), sdk.TypeBool, text, sdk.Value{}, "is a number other than 0 or 1, not a boolean"},
		{"bit(1)", []byte{1}, sdk.TypeBool, &column{class: classBool}, sdk.Bool(true), ""},
		{"yes", "Yes", sdk.TypeBool, text, sdk.Bool(true), ""},
		{"maybe", "maybe", sdk.TypeBool, text, sdk.Value{}, "is not a boolean (true/false, yes/no, 1/0)"},
		{"time", at.In(time.FixedZone("x", 3600)), sdk.TypeTime, text, sdk.Time(at), ""},
		{"zero date", time.Time{}, sdk.TypeTime, text, sdk.Value{}, ""},
		{"time text", "2026-01-02 03:04:05", sdk.TypeTime, text, sdk.Time(at), ""},
		{"time text zone", "2026-01-02 04:04:05+01", sdk.TypeTime, text, sdk.Time(at), ""},
		{"date text", "2026-01-02", sdk.TypeTime, text, sdk.Time(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)), ""},
		{"infinity", "infinity", sdk.TypeTime, text, sdk.Value{}, "is infinity, not a time"},
		{"epoch", int64(1), sdk.TypeTime, text, sdk.Value{}, "is a number, not a time (in query, convert it, e.g. to_timestamp(col) or FROM_UNIXTIME(col))"},
		{"pg array", `{a,"b c",NULL}`, sdk.TypeStringList, &column{class: classArray}, sdk.List("a", "b c"), ""},
		{"pg int array", `{1,2}`, sdk.TypeStringList, &column{class: classArray}, sdk.List("1", "2"), ""},
		{"pg 2d array, flattened", `{{1,2},{3,4}}`, sdk.TypeStringList, &column{class: classArray}, sdk.List("1", "2", "3", "4"), ""},
		{"not an array", `nope`, sdk.TypeStringList, &column{class: classArray}, sdk.Value{}, "is not an array"},
		{"set", []byte("a,c"), sdk.TypeStringList, &column{class: classSet}, sdk.List("a", "c"), ""},
		{"empty set", []byte(""), sdk.TypeStringList, &column{class: classSet}, sdk.List(), ""},
		{"json array", `["x", 2, true, null]`, sdk.TypeStringList, &column{class: classJSON}, sdk.List("x", "2", "true"), ""},
		{"json object", `{"a": 1}`, sdk.TypeStringList, &column{class: classJSON}, sdk.Value{}, "is not a JSON array"},
		{"json nested", `[[1]]`, sdk.TypeStringList, &column{class: classJSON}, sdk.Value{}, "is a JSON array holding arrays or objects; elements must be strings, numbers or booleans"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problem := convert(tc.v, tc.typ, tc.c, pgtype.NewMap())
			if problem != tc.problem {
				t.Errorf("problem = %q, want %q", problem, tc.problem)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("value (-want +got):\n%s", d)
			}
		})
	}
}

func TestIsDeleted(t *testing.T) {
	for _, tc := range []struct {
		v    any
		c    class
		want bool
	}{
		{nil, classTime, false},
		{time.Now(), classTime, true},
		{true, classBool, true},
		{false, classBool, false},
		{int64(0), classInt, false},
		{int64(1), classInt, true},
		{[]byte{1}, classBit, true},
		{[]byte{0}, classBool, false},
	} {
		got, problem := isDeleted(tc.v, &column{class: tc.c})
		if got != tc.want || problem != "" {
			t.Errorf("isDeleted(%#v) = %v, %q; want %v", tc.v, got, problem, tc.want)
		}
	}
}
