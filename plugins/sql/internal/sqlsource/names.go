package sqlsource

import (
	"strings"
	"unicode"

	"github.com/cohortd/cohort/sdk"
)

// traitName turns a column name into a rule-friendly identifier in
// snake_case: "customerID" -> "customer_id", "MonthlyCharges" ->
// "monthly_charges", "Total Charges" -> "total_charges", "HTTPServer" ->
// "http_server", "first_name" stays. Anything that is not a letter or digit
// separates words. The result may still be unusable (empty, starting with a
// digit, not ASCII): checkTraitName says so.
func traitName(column string) string {
	rs := []rune(column)
	var b strings.Builder
	b.Grow(len(column) + 4)
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
		case r == '_' && b.Len() == 0:
			b.WriteByte('_') // keep a leading underscore: "_score" stays
		default:
			sep()
		}
	}
	return strings.TrimSuffix(b.String(), "_")
}

// reserved are words of the rule language (expr) that cannot name a trait.
var reserved = map[string]bool{
	"and": true, "or": true, "not": true, "in": true, "matches": true, "contains": true,
	"startsWith": true, "endsWith": true, "let": true, "if": true, "else": true,
	"true": true, "false": true, "nil": true,
}

// checkTraitName returns "" if name can be used in rules, or what is wrong.
func checkTraitName(name string) string {
	if name == "" {
		return "is empty"
	}
	if reserved[name] {
		return "is a word of the rule language"
	}
	if c := name[0]; !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
		return "does not start with a letter or _"
	}
	for _, c := range []byte(name) {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return "is not an identifier"
		}
	}
	return ""
}

// parseTraitType parses a columns.<name>.type value.
func parseTraitType(s string) (sdk.TraitType, bool) { return sdk.ParseTraitType(s) }
