package sqlsource

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestCursorRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("x", 3600))
	for _, tc := range []struct {
		v    any
		c    class
		want any // the query argument
	}{
		{at, classTime, at.UTC()},
		{int64(-7), classInt, int64(-7)},
		{uint64(math.MaxUint64), classInt, uint64(math.MaxUint64)},
		{[]byte("18446744073709551615"), classInt, uint64(math.MaxUint64)},
		{[]byte("42"), classInt, int64(42)},
		{"3.5", classDecimal, "3.5"},
		{1.25, classFloat, 1.25},
		{float32(0.1), classFloat, 0.1},
		{"héllo, \"world\"", classText, "héllo, \"world\""},
		{[]byte{0xff, 0}, classText, []byte{0xff, 0}},
		{"infinity", classTime, "infinity"},
	} {
		k, err := keyOf(tc.v, tc.c)
		if err != nil {
			t.Fatalf("keyOf(%#v): %v", tc.v, err)
		}
		c := cursor{V: cursorVersion, F: "fp", U: k, ID: k}
		back, reason := decodeCursor(c.encode(), "fp")
		if reason != "" {
			t.Fatalf("decode %#v: %s", tc.v, reason)
		}
		arg, err := back.U.arg()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(tc.want, arg); d != "" {
			t.Errorf("%#v: argument (-want +got):\n%s", tc.v, d)
		}
	}
}

func TestDecodeCursorRejects(t *testing.T) {
	good := cursor{V: cursorVersion, F: "fp", ID: keyValue{'i', "1"}}.encode()
	for name, tc := range map[string]struct{ s, fp, want string }{
		"start":       {"", "fp", ""},
		"good":        {good, "fp", ""},
		"other fp":    {good, "other", "the config changed since the cursor was made (table, query, where, key columns or traits)"},
		"not base64":  {"!!", "fp", "the cursor is not this plugin's (not base64)"},
		"old version": {cursor{V: 0, F: "fp"}.encode(), "fp", "the cursor has format version 0, this plugin writes 1"},
	} {
		c, reason := decodeCursor(tc.s, tc.fp)
		if reason != tc.want {
			t.Errorf("%s: reason %q, want %q", name, reason, tc.want)
		}
		if reason != "" && (!c.ID.IsZero() || c.F != tc.fp) {
			t.Errorf("%s: a rejected cursor should be the start, got %+v", name, c)
		}
	}
}
