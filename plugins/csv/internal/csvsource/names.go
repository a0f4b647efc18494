package csvsource

import (
	"unicode"
	"unicode/utf8"

	"github.com/cohortd/cohort/sdk"
)

// traitName is the trait name a header gets when columns.<header>.name
// does not set one: sdk.TraitName, snake_case ("customerID" ->
// "customer_id"). The result may still be unusable (empty, or starting with
// a digit): checkTraitName says so.
func traitName(header string) string { return sdk.TraitName(header) }

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
