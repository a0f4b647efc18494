package tracksource

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cohortd/cohort/sdk"
)

// jsonValue decodes s as the plugin decodes messages.
func jsonValue(t *testing.T, s string) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return v
}

func TestToValue(t *testing.T) {
	for _, tc := range []struct {
		json    string
		typ     sdk.TraitType
		want    sdk.Value
		problem string
	}{
		{`null`, sdk.TypeNumber, sdk.Value{}, ""},
		{`"pro"`, sdk.TypeString, sdk.String("pro"), ""},
		{`""`, sdk.TypeString, sdk.String(""), ""},
		{`2134`, sdk.TypeString, sdk.String("2134"), ""},
		{`true`, sdk.TypeString, sdk.Value{}, "is a boolean, not a string"},
		{`["a"]`, sdk.TypeString, sdk.Value{}, "is a list, not a string"},
		{`12.5`, sdk.TypeNumber, sdk.Number(12.5), ""},
		{`-1e3`, sdk.TypeNumber, sdk.Number(-1000), ""},
		{`" 7 "`, sdk.TypeNumber, sdk.Number(7), ""},
		{`1e400`, sdk.TypeNumber, sdk.Value{}, "is a number out of range"},
		{`"NaN"`, sdk.TypeNumber, sdk.Value{}, "is a string that is not a number"},
		{`"Inf"`, sdk.TypeNumber, sdk.Value{}, "is a string that is not a number"},
		{`"0x10"`, sdk.TypeNumber, sdk.Value{}, "is a string that is not a number"},
		{`""`, sdk.TypeNumber, sdk.Value{}, "is an empty string that is not a number"},
		{`false`, sdk.TypeNumber, sdk.Value{}, "is a boolean, not a number"},
		{`true`, sdk.TypeBool, sdk.Bool(true), ""},
		{`"False"`, sdk.TypeBool, sdk.Bool(false), ""},
		{`"yes"`, sdk.TypeBool, sdk.Bool(true), ""},
		{`1`, sdk.TypeBool, sdk.Value{}, "is a number, not a bool"},
		{`"2024-02-03T04:05:06.789Z"`, sdk.TypeTime, sdk.Time(time.Date(2024, 2, 3, 4, 5, 6, 789e6, time.UTC)), ""},
		{`1706932800`, sdk.TypeTime, sdk.Value{}, "is a number, not a time"},
		{`"soon"`, sdk.TypeTime, sdk.Value{}, "is a string that is not an ISO 8601 time"},
		{`["a",1,2.5]`, sdk.TypeStringList, sdk.List("a", "1", "2.5"), ""},
		{`[]`, sdk.TypeStringList, sdk.List(), ""},
		{`[null]`, sdk.TypeStringList, sdk.Value{}, "is a list holding null; a list trait holds strings"},
		{`"a,b"`, sdk.TypeStringList, sdk.Value{}, "is a string, not a list"},
		{`{"a":1}`, sdk.TypeNumber, sdk.Value{}, "is an object, not a number"},
	} {
		got, problem := toValue(jsonValue(t, tc.json), tc.typ)
		if problem != tc.problem {
			t.Errorf("toValue(%s, %v) problem = %q, want %q", tc.json, tc.typ, problem, tc.problem)
		}
		if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("toValue(%s, %v) (-want +got):\n%s", tc.json, tc.typ, diff)
		}
	}
}

func TestParseTime(t *testing.T) {
	utc := func(y int, mo time.Month, d, h, mi, s, ns int) time.Time {
		return time.Date(y, mo, d, h, mi, s, ns, time.UTC)
	}
	for in, want := range map[string]time.Time{
		"2025-06-01T12:00:00Z":          utc(2025, 6, 1, 12, 0, 0, 0),
		"2025-06-01T12:00:00.123Z":      utc(2025, 6, 1, 12, 0, 0, 123e6),
		"2025-06-01T14:00:00+02:00":     utc(2025, 6, 1, 12, 0, 0, 0),
		"2025-06-01T14:00:00.5+0200":    utc(2025, 6, 1, 12, 0, 0, 5e8),
		"2025-06-01T12:00:00":           utc(2025, 6, 1, 12, 0, 0, 0),
		"2025-06-01 12:00:00":           utc(2025, 6, 1, 12, 0, 0, 0),
		"2025-06-01 14:00:00+02:00":     utc(2025, 6, 1, 12, 0, 0, 0),
		"2025-06-01T12:00Z":             utc(2025, 6, 1, 12, 0, 0, 0),
		"2025-06-01":                    utc(2025, 6, 1, 0, 0, 0, 0),
		" 2025-06-01T12:00:00.000000Z ": utc(2025, 6, 1, 12, 0, 0, 0),
	} {
		got, ok := parseTime(in)
		if !ok || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("parseTime(%q) = %v, %v; want %v in UTC", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "yesterday", "2025-13-01", "1717243200", "06/01/2025", "2025-06-01T25:00:00Z"} {
		if got, ok := parseTime(in); ok {
			t.Errorf("parseTime(%q) = %v, want not a time", in, got)
		}
	}
}

func TestProperties(t *testing.T) {
	in := jsonValue(t, `{"s":"x","n":1.5,"big":1e400,"b":true,"null":null,"tags":["a",1],
		"items":[{"sku":"A"}],"empty":{},"a":{"b":{"c":{"d":{"e":1}}}}}`).(map[string]any)
	want := map[string]sdk.Value{
		"s": sdk.String("x"), "n": sdk.Number(1.5), "big": sdk.String("1e400"), "b": sdk.Bool(true),
		"tags": sdk.List("a", "1"), "items": sdk.String(`[{"sku":"A"}]`),
		"a.b.c.d": sdk.String(`{"e":1}`),
	}
	if diff := cmp.Diff(want, properties(in)); diff != "" {
		t.Errorf("properties (-want +got):\n%s", diff)
	}
}
