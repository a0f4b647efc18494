package sqlsource

import "github.com/cohortd/cohort/sdk"

// traitName is the trait name a column gets when columns.<name>.name does
// not set one: sdk.TraitName, snake_case ("customerID" -> "customer_id").
// The result may still be unusable (empty, starting with a digit, not
// ASCII): checkTraitName says so.
func traitName(column string) string { return sdk.TraitName(column) }

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
