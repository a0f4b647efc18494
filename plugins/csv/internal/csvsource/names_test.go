package csvsource

import "testing"

func TestTraitName(t *testing.T) {
	for header, want := range map[string]string{
		"customerID":        "customer_id",
		"MonthlyCharges":    "monthly_charges",
		"Total Charges":     "total_charges",
		"SeniorCitizen":     "senior_citizen",
		"tenure":            "tenure",
		"StreamingTV":       "streaming_tv",
		"HTTPServer":        "http_server",
		"ID":                "id",
		"userID2":           "user_id2",
		"Address Line 2":    "address_line_2",
		"e-mail":            "e_mail",
		"  Last  Seen  ":    "last_seen",
		"Total Charges ($)": "total_charges",
		"first_name":        "first_name",
		"Prénom":            "prénom",
		"already__snake":    "already_snake",
		"2fa":               "2fa",
		"$$$":               "",
		"":                  "",
	} {
		if got := traitName(header); got != want {
			t.Errorf("traitName(%q) = %q, want %q", header, got, want)
		}
	}
}

func TestCheckTraitName(t *testing.T) {
	for name, want := range map[string]string{
		"total_charges": "",
		"_private":      "",
		"prénom":        "",
		"x2":            "",
		"":              "is empty",
		"2fa":           "does not start with a letter or _",
		"not":           "is a word of the rule language",
		"in":            "is a word of the rule language",
		"nil":           "is a word of the rule language",
		"a-b":           "is not an identifier",
		"a b":           "is not an identifier",
	} {
		if got := checkTraitName(name); got != want {
			t.Errorf("checkTraitName(%q) = %q, want %q", name, got, want)
		}
	}
}
