package csvsource

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// traitName turns a column header into a rule-friendly identifier in
// snake_case: "customerID" -> "customer_id", "MonthlyCharges" ->
// "monthly_charges", "Total Charges" -> "total_charges", "StreamingTV" ->
// "streaming_tv", "HTTPServer" -> "http_server". Anything that is not a
// letter or digit separates words. The result may still be unusable (empty,
// or starting with a digit): checkTraitName says so.
func traitName(header string) string {
	rs := []rune(header)
	var b strings.Builder
	b.Grow(len(header) + 4)
	sep := func() {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "_") {
			b.WriteByte('_')
		}
	}
	for i, r := range rs {
		switch {
		case unicode.IsUpper(r):
			if i > 0 {
				prev := rs[i-1]
				nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
				if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
					sep()
				}
			}
			b.WriteRune(unicode.ToLower(r))
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		default:
			sep()
		}
	}
	return strings.TrimSuffix(b.String(), "_")
}

// reserved are words of the rule language (expr) that cannot name a trait.
var reserved = map[string]bool{
	"and": true, "or": true, "not": true, "in": true, "matches": true, "contains": true,
	"let": true, "if": true, "else": true, "true": true, "false": true, "nil": true,
}

// checkTraitName returns "" if name can be used in rules, or what is wrong.
func checkTraitName(name string) string {
	if name == "" {
		return "is empty"
	}
	if reserved[name] {
		return "is a word of the rule language"
	}
	first, _ := utf8.DecodeRuneInString(name)
	if !(first == '_' || unicode.IsLetter(first)) {
		return "does not start with a letter or _"
	}
	for _, r := range name {
		if !(r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return "is not an identifier"
		}
	}
	return ""
}
