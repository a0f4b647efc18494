package csvsource

import (
	"strings"
	"testing"
)

func TestCursorRoundTrip(t *testing.T) {
	h1, h2 := strings.Repeat("ab", 32), strings.Repeat("01", 32)
	for _, c := range []cursor{
		{hash: h1},
		{hash: h1, partial: true, offset: 0},
		{hash: h1, partial: true, offset: 123456},
		{hash: h1, partial: true, offset: 99, prev: h2},
		{hash: h1, ev: evCursor{hash: h2}},
		{hash: h1, ev: evCursor{hash: h2, size: 4096}},
		{hash: h1, ev: evCursor{hash: h2, partial: true, offset: 0}},
		{hash: h1, ev: evCursor{hash: h2, partial: true, offset: 77}},
		{hash: h1, partial: true, offset: 99, prev: h2, ev: evCursor{hash: h1, size: 12}},
	} {
		s := c.String()
		got, ok := parseCursor(s)
		if !ok || got != c {
			t.Errorf("parseCursor(%q) = %+v, %v; want %+v", s, got, ok, c)
		}
	}
	if got := (cursor{hash: h1, partial: true, offset: 7, prev: h2}).String(); got != "csv1 sha256="+h1+" at=7 prev="+h2 {
		t.Errorf("String() = %q", got)
	}
	if got := (cursor{hash: h1, ev: evCursor{hash: h2, size: 10}}).String(); got != "csv1 sha256="+h1+" ev="+h2+" ev_size=10" {
		t.Errorf("String() = %q", got)
	}
	if got := (cursor{hash: h1, ev: evCursor{hash: h2, partial: true, offset: 5}}).String(); got != "csv1 sha256="+h1+" ev="+h2+" ev_at=5" {
		t.Errorf("String() = %q", got)
	}
}

func TestParseCursorRejects(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for _, s := range []string{
		"",
		"csv1",
		"csv2 sha256=" + h,
		"csv1 sha256=" + h[:63],
		"csv1 sha256=" + strings.ToUpper(h),
		"csv1 sha256=" + h + " at=-1",
		"csv1 sha256=" + h + " at=x",
		"csv1 sha256=" + h + " prev=" + h, // prev without at
		"csv1 sha256=" + h + " colour=blue",
		"csv1 at=5",
		"csv1 sha256=" + h + " ev_at=5",                // events offset without events version
		"csv1 sha256=" + h + " ev_size=5",              // events size without events version
		"csv1 sha256=" + h + " ev=" + h + " ev_size=0", // a size is never 0
		"csv1 sha256=" + h + " ev=" + h + " ev_at=1 ev_size=2",
		"csv1 sha256=" + h + " ev=" + h[:10],
		"csv1 ev=" + h,
		"some other plugin's cursor",
	} {
		if c, ok := parseCursor(s); ok {
			t.Errorf("parseCursor(%q) = %+v, want rejected", s, c)
		}
	}
}
