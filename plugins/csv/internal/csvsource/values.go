package csvsource

import (
	"strconv"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

func parseType(s string) (sdk.TraitType, bool) { return sdk.ParseTraitType(s) }

// parseNumber accepts plain decimal numbers: an optional sign, digits with
// an optional fraction, an optional exponent ("12", "-3.5", ".5", "1e6").
// It rejects what strconv.ParseFloat would also take but a CRM export does
// not mean as a number: NaN, Inf, hex, underscores, out-of-range values —
// and integer parts with a leading zero ("02134", "007"), which are codes
// (zip codes, account numbers) whose zeros a number would lose.
func parseNumber(s string) (float64, bool) {
	i, n := 0, len(s)
	neg := false
	if i < n && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	var mant uint64
	digits := 0 // significant digits accumulated in mant
	start := i
	for i < n && isDigit(s[i]) {
		if digits < 19 {
			mant = mant*10 + uint64(s[i]-'0')
			if mant != 0 {
				digits++
			}
		} else {
			digits = 99
		}
		i++
	}
	intDigits := i - start
	if intDigits > 1 && s[start] == '0' {
		return 0, false
	}
	fracDigits := 0
	if i < n && s[i] == '.' {
		i++
		fs := i
		for i < n && isDigit(s[i]) {
			if digits < 19 {
				mant = mant*10 + uint64(s[i]-'0')
				if mant != 0 {
					digits++
				}
			} else {
				digits = 99
			}
			i++
		}
		fracDigits = i - fs
	}
	if intDigits == 0 && fracDigits == 0 {
		return 0, false
	}
	exp := false
	if i < n && (s[i] == 'e' || s[i] == 'E') {
		exp = true
		i++
		if i < n && (s[i] == '+' || s[i] == '-') {
			i++
		}
		es := i
		for i < n && isDigit(s[i]) {
			i++
		}
		if i == es {
			return 0, false
		}
	}
	if i != n {
		return 0, false
	}
	// Fast path: the mantissa and the power of ten are exact in a float64,
	// so one division is correctly rounded, as ParseFloat's result is.
	if !exp && mant < 1<<53 && fracDigits < len(pow10) {
		f := float64(mant) / pow10[fracDigits]
		if neg {
			f = -f
		}
		return f, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false
	}
	return f, true
}

// pow10 holds the powers of ten that are exact in a float64.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isTrueFalse is the inference test for bool: only true/false, any case.
// Yes/No columns stay strings unless configured as bool.
func isTrueFalse(s string) bool {
	return strings.EqualFold(s, "true") || strings.EqualFold(s, "false")
}

// parseBool accepts true/false, yes/no and 1/0, any case.
func parseBool(s string) (v, ok bool) {
	switch {
	case strings.EqualFold(s, "true"), strings.EqualFold(s, "yes"), s == "1":
		return true, true
	case strings.EqualFold(s, "false"), strings.EqualFold(s, "no"), s == "0":
		return false, true
	}
	return false, false
}

// The default time layouts are RFC 3339, "2006-01-02" and
// "2006-01-02 15:04:05"; a time without a zone is UTC.
const (
	layoutDate     = "2006-01-02"
	layoutDateTime = "2006-01-02 15:04:05"
)

// parseDefaultTime parses s with the default layouts. The common shapes
// (a date; a date and time, with "T" and "Z" or with a space) are parsed
// by hand; other RFC 3339 times (offsets) go to time.Parse.
func parseDefaultTime(s string) (time.Time, bool) {
	if len(s) < 10 || s[4] != '-' || s[7] != '-' {
		return time.Time{}, false
	}
	y, ok1 := digits(s, 0, 4)
	mo, ok2 := digits(s, 5, 2)
	d, ok3 := digits(s, 8, 2)
	if !ok1 || !ok2 || !ok3 || mo < 1 || mo > 12 || d < 1 || d > daysIn(time.Month(mo), y) {
		return time.Time{}, false
	}
	if len(s) == 10 {
		return time.Date(y, time.Month(mo), d, 0, 0, 0, 0, time.UTC), true
	}
	sep := s[10]
	if sep != 'T' && sep != ' ' {
		return time.Time{}, false
	}
	if len(s) < 19 || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	h, ok1 := digits(s, 11, 2)
	mi, ok2 := digits(s, 14, 2)
	sec, ok3 := digits(s, 17, 2)
	if !ok1 || !ok2 || !ok3 || h > 23 || mi > 59 || sec > 59 {
		return time.Time{}, false
	}
	if sep == ' ' {
		if len(s) != 19 {
			return time.Time{}, false
		}
		return time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC), true
	}
	rest := s[19:]
	ns := 0
	if len(rest) > 1 && rest[0] == '.' {
		j := 1
		scale := 100_000_000
		for j < len(rest) && isDigit(rest[j]) {
			if j > 9 {
				return slowRFC3339(s)
			}
			ns += int(rest[j]-'0') * scale
			scale /= 10
			j++
		}
		if j == 1 {
			return time.Time{}, false
		}
		rest = rest[j:]
	}
	if rest == "Z" {
		return time.Date(y, time.Month(mo), d, h, mi, sec, ns, time.UTC), true
	}
	return slowRFC3339(s)
}

func slowRFC3339(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

// digits parses s[at:at+n] as a decimal number of exactly n digits.
func digits(s string, at, n int) (int, bool) {
	v := 0
	for i := at; i < at+n; i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		v = v*10 + int(s[i]-'0')
	}
	return v, true
}

func daysIn(m time.Month, year int) int {
	if m == time.February {
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	}
	return 31 - int((m-1)%7%2)
}

// column is how one CSV column becomes one trait.
type column struct {
	header string
	trait  string
	typ    sdk.TraitType
	sep    string // list separator
	format string // time layout; "" = the defaults
}

// parse parses a non-empty cell into *v. On failure it leaves *v as it
// was and returns the problem's message. (It writes in place: copying
// sdk.Value, 88 bytes, in and out of a return costs more than the parse.)
func (c *column) parse(v *sdk.Value, s string) string {
	switch c.typ {
	case sdk.TypeNumber:
		f, ok := parseNumber(s)
		if !ok {
			return quoteCell(s) + " is not a number"
		}
		*v = sdk.Value{Type: sdk.TypeNumber, Num: f}
	case sdk.TypeBool:
		b, ok := parseBool(s)
		if !ok {
			return quoteCell(s) + " is not a bool (true/false, yes/no or 1/0)"
		}
		*v = sdk.Value{Type: sdk.TypeBool, Bool: b}
	case sdk.TypeTime:
		var t time.Time
		if c.format == "" {
			var ok bool
			if t, ok = parseDefaultTime(s); !ok {
				return quoteCell(s) + " is not a time (RFC 3339, 2006-01-02 or 2006-01-02 15:04:05)"
			}
		} else {
			var err error
			if t, err = time.Parse(c.format, s); err != nil {
				return quoteCell(s) + " is not a time in the layout " + strconv.Quote(c.format)
			}
		}
		*v = sdk.Value{Type: sdk.TypeTime, Time: t}
	case sdk.TypeStringList:
		*v = sdk.Value{Type: sdk.TypeStringList, List: splitList(s, c.sep)}
	default:
		*v = sdk.Value{Type: sdk.TypeString, Str: s}
	}
	return ""
}

// splitList splits a list cell, trimming the items and dropping empty ones.
func splitList(s, sep string) []string {
	parts := strings.Split(s, sep)
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// quoteCell quotes a cell for a message, cut to a readable length.
func quoteCell(s string) string {
	const max = 40
	if len(s) > max {
		cut := max
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
