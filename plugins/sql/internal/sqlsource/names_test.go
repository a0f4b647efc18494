package sqlsource

import "testing"

func TestTraitName(t *testing.T) {
	for in, want := range map[string]string{
		"customerID":     "customer_id",
		"MonthlyCharges": "monthly_charges",
		"Total Charges":  "total_charges",
		"HTTPServer":     "http_server",
		"first_name":     "first_name",
		"_score":         "_score",
		"e-mail":         "e_mail",
		"2fa":            "2fa",
		"créé":           "créé",
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
