package csvsource

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/sdk"
)

func TestParseNumber(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"0", 0, true},
		{"12", 12, true},
		{"-3.5", -3.5, true},
		{"+4", 4, true},
		{".5", 0.5, true},
		{"5.", 5, true},
		{"0.25", 0.25, true},
		{"29.85", 29.85, true},
		{"1e6", 1e6, true},
		{"1.5E-3", 1.5e-3, true},
		{"123456789012345678901234567890", 123456789012345678901234567890, true},
		{"0.1000000000000000055511151231257827", 0.1, true},
		{"9007199254740993", 9007199254740993, true}, // 2^53+1: the slow path rounds it
		{"", 0, false},
		{"-", 0, false},
		{".", 0, false},
		{"1e", 0, false},
		{"abc", 0, false},
		{"1,234.50", 0, false},
		{"$12", 0, false},
		{"12 ", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"infinity", 0, false},
		{"0x1p-2", 0, false},
		{"1_000", 0, false},
		{"1e999", 0, false},
		{"02134", 0, false},
		{"007", 0, false},
		{"-01.5", 0, false},
	} {
		got, ok := parseNumber(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseNumber(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestParseNumberMatchesParseFloat checks the fast path against
// strconv.ParseFloat on random decimals.
func TestParseNumberMatchesParseFloat(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200_000 {
		var s string
		switch r.IntN(4) {
		case 0:
			s = strconv.FormatInt(r.Int64N(1<<62)-(1<<61), 10)
		case 1:
			s = fmt.Sprintf("%d.%0*d", r.IntN(1e6), 1+r.IntN(12), r.Int64N(1e12))
		case 2:
			s = strconv.FormatFloat(r.NormFloat64()*math.Pow(10, float64(r.IntN(30)-15)), 'f', -1, 64)
		default:
			s = fmt.Sprintf("-0.%0*d", 1+r.IntN(20), r.Int64N(1e15))
		}
		want, err := strconv.ParseFloat(s, 64)
		got, ok := parseNumber(s)
		if err != nil || !ok || got != want || math.Signbit(got) != math.Signbit(want) {
			t.Fatalf("parseNumber(%q) = %v, %v; strconv.ParseFloat = %v, %v", s, got, ok, want, err)
		}
	}
}

func TestParseDefaultTime(t *testing.T) {
	utc := func(y int, m time.Month, d, h, mi, s, ns int) time.Time {
		return time.Date(y, m, d, h, mi, s, ns, time.UTC)
	}
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2024-01-15", utc(2024, 1, 15, 0, 0, 0, 0), true},
		{"2024-02-29", utc(2024, 2, 29, 0, 0, 0, 0), true},
		{"2025-03-01T10:00:00Z", utc(2025, 3, 1, 10, 0, 0, 0), true},
		{"2025-03-01T10:00:00.123Z", utc(2025, 3, 1, 10, 0, 0, 123_000_000), true},
		{"2025-03-01T10:00:00.123456789Z", utc(2025, 3, 1, 10, 0, 0, 123_456_789), true},
		{"2024-12-24T12:00:00+01:00", utc(2024, 12, 24, 11, 0, 0, 0), true},
		{"2024-06-05 08:30:00", utc(2024, 6, 5, 8, 30, 0, 0), true},
		{"2023-02-29", time.Time{}, false},
		{"2024-04-31", time.Time{}, false},
		{"2024-13-01", time.Time{}, false},
		{"2024-00-10", time.Time{}, false},
		{"2024-1-5", time.Time{}, false},
		{"15/01/2024", time.Time{}, false},
		{"2024-01-15T10:00:00", time.Time{}, false},
		{"2024-01-15T24:00:00Z", time.Time{}, false},
		{"2024-01-15 10:00", time.Time{}, false},
		{"2024-01-15 10:00:00Z", time.Time{}, false},
		{"2024-01-15x", time.Time{}, false},
		{"2024-01-15T10:00:00.Z", time.Time{}, false},
		{"yes", time.Time{}, false},
	} {
		got, ok := parseDefaultTime(tc.in)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("parseDefaultTime(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestParseDefaultTimeMatchesTimeParse checks the hand-written parser
// against time.Parse on random dates and times, valid and not.
func TestParseDefaultTimeMatchesTimeParse(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 100_000 {
		y, mo, d := 1900+r.IntN(200), r.IntN(14), r.IntN(33)
		h, mi, s := r.IntN(26), r.IntN(62), r.IntN(62)
		var in, layout string
		switch r.IntN(3) {
		case 0:
			in, layout = fmt.Sprintf("%04d-%02d-%02d", y, mo, d), layoutDate
		case 1:
			in, layout = fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d", y, mo, d, h, mi, s), layoutDateTime
		default:
			in, layout = fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02d.%dZ", y, mo, d, h, mi, s, r.IntN(1000)), time.RFC3339
		}
		want, err := time.Parse(layout, in)
		got, ok := parseDefaultTime(in)
		if ok != (err == nil) || (ok && !got.Equal(want)) {
			t.Fatalf("parseDefaultTime(%q) = %v, %v; time.Parse = %v, %v", in, got, ok, want, err)
		}
	}
}

func TestParseBool(t *testing.T) {
	for in, want := range map[string]int{ // 1 true, 0 false, -1 not a bool
		"true": 1, "TRUE": 1, "True": 1, "yes": 1, "YES": 1, "1": 1,
		"false": 0, "False": 0, "no": 0, "No": 0, "0": 0,
		"y": -1, "t": -1, "2": -1, "maybe": -1, "": -1,
	} {
		v, ok := parseBool(in)
		got := -1
		if ok {
			got = 0
			if v {
				got = 1
			}
		}
		if got != want {
			t.Errorf("parseBool(%q) = %v, %v; want %d", in, v, ok, want)
		}
	}
}

func TestColumnSet(t *testing.T) {
	for _, tc := range []struct {
		name    string
		col     column
		in      string
		want    sdk.Value
		problem string
	}{
		{"string", column{typ: sdk.TypeString}, "pro", sdk.String("pro"), ""},
		{"number", column{typ: sdk.TypeNumber}, "1520.50", sdk.Number(1520.5), ""},
		{"not a number", column{typ: sdk.TypeNumber}, "abc", sdk.Value{}, `"abc" is not a number`},
		{"bool", column{typ: sdk.TypeBool}, "Yes", sdk.Bool(true), ""},
		{"not a bool", column{typ: sdk.TypeBool}, "maybe", sdk.Value{}, `"maybe" is not a bool (true/false, yes/no or 1/0)`},
		{"time", column{typ: sdk.TypeTime}, "2024-01-15", sdk.Time(time.Date(2024, 1, 15, 0, 0, 0, 0, time.UTC)), ""},
		{"not a time", column{typ: sdk.TypeTime}, "15/01/2024", sdk.Value{}, `"15/01/2024" is not a time (RFC 3339, 2006-01-02 or 2006-01-02 15:04:05)`},
		{"time with format", column{typ: sdk.TypeTime, format: "02/01/2006"}, "15/01/2024", sdk.Time(time.Date(2024, 1, 15, 0, 0, 0, 0, time.UTC)), ""},
		{"not in format", column{typ: sdk.TypeTime, format: "02/01/2006"}, "2024-01-15", sdk.Value{}, `"2024-01-15" is not a time in the layout "02/01/2006"`},
		{"list", column{typ: sdk.TypeStringList, sep: "|"}, "vip| beta||x ", sdk.List("vip", "beta", "x"), ""},
		{"list with other separator", column{typ: sdk.TypeStringList, sep: ";"}, "a;b|c", sdk.List("a", "b|c"), ""},
		{"long value cut", column{typ: sdk.TypeNumber}, "ééééééééééééééééééééééééééééééé", sdk.Value{}, `"éééééééééééééééééééé"... is not a number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.col.trait = "x"
			var got sdk.Value
			problem := tc.col.parse(&got, tc.in)
			if problem != tc.problem {
				t.Errorf("problem = %q, want %q", problem, tc.problem)
			}
			if tc.problem != "" {
				if !got.Null() {
					t.Errorf("value set to %+v despite the problem", got)
				}
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("value (-want +got):\n%s", diff)
			}
		})
	}
}
