package sqlsource

import "testing"

// TestTraitName checks the names columns get here; sdk.TraitName's own
// tests cover the conversion. A name TraitName makes may still be refused
// by checkTraitName (ASCII only here), which schema.go reports.
func TestTraitName(t *testing.T) {
	for in, want := range map[string]string{
		"customerID":    "customer_id",
		"Total Charges": "total_charges",
		"_score":        "score",
		"2fa":           "2fa",
		"créé":          "créé",
	} {
		if got := traitName(in); got != want {
			t.Errorf("traitName(%q) = %q, want %q", in, got, want)
		}
	}
	for name, want := range map[string]string{
		"first_name": "",
		"2fa":        "does not start with a letter or _",
		"créé":       "is not an identifier",
		"in":         "is a word of the rule language",
		"":           "is empty",
	} {
		if got := checkTraitName(name); got != want {
			t.Errorf("checkTraitName(%q) = %q, want %q", name, got, want)
		}
	}
}
