package message

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// printFunc formats a number, time or list trait printed directly
// ({{.orders}}): Compile rewrites such actions to call it, so a number
// reads "1250000" (not "1.25e+06"), a time "2026-03-01" and a list
// "a, b, c". The leading underscore keeps it out of the documented set.
const printFunc = "_value"

// funcSpec is one template function: its documentation and, for the
// per-message ones, nil static (the function is bound per renderer).
type funcSpec struct {
	name string
	doc  string
	// static is the implementation of a function that needs no message.
	static any
}

// funcTable is the function set, one row each.
var funcTable = []funcSpec{
	{name: "unsubscribe_url", doc: "the recipient's one-click unsubscribe link"},
	{name: "postal_address", doc: "the sender's postal address (CAN-SPAM)"},
	{name: "customer_id", doc: "the recipient's customer id"},
	{name: "campaign", doc: "the campaign's name"},
	{name: "variant", doc: "the variant's name"},
	{name: "trait", doc: `trait "name" fallback: the trait's value, or fallback when the customer lacks it`},
	{name: "default", doc: `default fallback value: value, or fallback when value is empty ("", 0, false, an empty list)`, static: fnDefault},
	{name: "upper", doc: "upper case", static: func(v any) string { return strings.ToUpper(format(v)) }},
	{name: "lower", doc: "lower case", static: func(v any) string { return strings.ToLower(format(v)) }},
	{name: "title", doc: "the first letter of each word in upper case", static: func(v any) string { return title(format(v)) }},
	{name: "trim", doc: "leading and trailing white space removed", static: func(v any) string { return strings.TrimSpace(format(v)) }},
	{name: "date", doc: `date "2006-01-02" t: a time in Go's layout`, static: fnDate},
	{name: "number", doc: "number 2 x: x with 2 decimals", static: fnNumber},
	{name: "join", doc: `join ", " list: a list's items joined`, static: fnJoin},
	{name: printFunc, doc: "internal: prints a trait as text", static: format},
}

// funcNames lists the template function names, sorted.
func funcNames() []string {
	var names []string
	for _, f := range funcTable {
		if f.name != printFunc {
			names = append(names, f.name)
		}
	}
	sort.Strings(names)
	return names
}

// funcMap returns the function map of one renderer: per-message functions
// read the message the renderer is executing.
func (r *renderer) funcMap() map[string]any {
	m := make(map[string]any, len(funcTable))
	for _, f := range funcTable {
		if f.static != nil {
			m[f.name] = f.static
		}
	}
	m["unsubscribe_url"] = func() string { return r.cur.UnsubscribeURL }
	m["postal_address"] = func() string { return r.cur.PostalAddress }
	m["customer_id"] = func() string { return r.cur.CustomerID }
	m["campaign"] = func() string { return r.cur.Campaign }
	m["variant"] = func() string { return r.cur.Variant }
	m["trait"] = func(name string, fallback any) any {
		if v, ok := r.cur.Traits[name]; ok && v != nil {
			return v
		}
		return fallback
	}
	return m
}

// parseFuncs is the function map templates are parsed with: the names
// and signatures are what matter; no parsed template is ever executed with
// it (executions use a renderer's funcMap).
func parseFuncs() map[string]any {
	r := &renderer{cur: &Data{}}
	return r.funcMap()
}

// format is how a trait value reads in a message.
func format(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.Format(time.DateOnly)
	case []string:
		return strings.Join(x, ", ")
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

func fnDefault(fallback, v any) any {
	if empty(v) {
		return fallback
	}
	return v
}

func empty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case float64:
		return x == 0
	case int:
		return x == 0
	case bool:
		return !x
	case time.Time:
		return x.IsZero()
	case []string:
		return len(x) == 0
	}
	return false
}

// title upper-cases the first letter of each word (after white space, a
// hyphen or an apostrophe at a word start) and leaves the rest as is.
func title(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	start := true
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		if start && unicode.IsLetter(r) {
			b.WriteRune(unicode.ToTitle(r))
		} else {
			b.WriteRune(r)
		}
		start = unicode.IsSpace(r) || r == '-'
	}
	return b.String()
}

// Errors from functions say the type, never the value (no PII in errors).

func fnDate(layout string, v any) (string, error) {
	switch t := v.(type) {
	case time.Time:
		return t.Format(layout), nil
	case *time.Time:
		if t != nil {
			return t.Format(layout), nil
		}
	}
	return "", fmt.Errorf("date: expected a time trait, got %s", typeName(v))
}

func fnNumber(decimals int, v any) (string, error) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case float32:
		f = float64(x)
	case int:
		f = float64(x)
	case int64:
		f = float64(x)
	default:
		return "", fmt.Errorf("number: expected a number trait, got %s", typeName(v))
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", fmt.Errorf("number: the value is not a finite number")
	}
	if decimals < 0 || decimals > 20 {
		return strconv.FormatFloat(f, 'f', -1, 64), nil
	}
	return strconv.FormatFloat(f, 'f', decimals, 64), nil
}

func fnJoin(sep string, v any) (string, error) {
	switch x := v.(type) {
	case []string:
		return strings.Join(x, sep), nil
	case []any:
		parts := make([]string, len(x))
		for i, p := range x {
			parts[i] = format(p)
		}
		return strings.Join(parts, sep), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("join: expected a list trait, got %s", typeName(v))
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case string:
		return "a string"
	case float64, float32, int, int64:
		return "a number"
	case bool:
		return "a bool"
	case time.Time:
		return "a time"
	case []string:
		return "a list"
	}
	return fmt.Sprintf("%T", v)
}
