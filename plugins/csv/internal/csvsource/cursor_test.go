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
		"some other plugin's cursor",
	} {
		if c, ok := parseCursor(s); ok {
			t.Errorf("parseCursor(%q) = %+v, want rejected", s, c)
		}
	}
}
