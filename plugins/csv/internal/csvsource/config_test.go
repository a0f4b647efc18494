package csvsource

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/sdk"
)

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cust := testdataPath(t, "customers.csv")
	collide := writeFile(t, dir, "collide.csv", "id,Total Charges,TotalCharges\n1,2,3\n")
	digit := writeFile(t, dir, "digit.csv", "id,name,2fa\n1,a,b\n")
	reserved := writeFile(t, dir, "reserved.csv", "id,Not\n1,a\n")
	empty := writeFile(t, dir, "empty.csv", "")
	dupHeader := writeFile(t, dir, "duph.csv", "id,Email,Email\n")
	missing := filepath.Join(dir, "missing.csv")
	header := `"customerID", "Email", "Phone", "Time Zone", "First Name", "Plan", "SignedUpAt", "LastOrderAt", "Orders", "LifetimeValue", "VIP", "Tags", "Zip", "EmailOptIn"`
	const min = "path: x.csv\nid_column: id\n"

	for _, tc := range []struct {
		name, config, field, msg string
	}{
		{"empty config", "", "path",
			"path: required; set it to the CSV file to read (a relative path is relative to the daemon's working directory)"},
		{"no id column", "path: x.csv", "id_column",
			"id_column: required; set it to the header of the column holding the customer id"},
		{"unknown key", min + "pathx: 1", "pathx",
			`line 3:1: unknown key "pathx" at the top level (known keys: batch, columns, consent, delete_missing, delimiter, email, events, id_column, path, phone, timezone, watch); did you mean "path"?`},
		{"unknown column key", min + "columns:\n  Plan: {typ: string}", "columns.Plan.typ",
			`columns.Plan.typ: line 4:10: unknown key "typ" in columns.Plan (known keys: format, name, separator, skip, type); did you mean "type"?`},
		{"unknown consent key", min + "consent: {column: x, when: y}", "consent.when",
			`consent.when: line 3:22: unknown key "when" in consent (known keys: column, time_column)`},
		{"duplicate key", min + "path: y.csv", "path",
			`line 3:1: duplicate key "path"`},
		{"batch not a number", min + "batch: abc", "batch",
			`batch: line 3:8: expected a whole number, found "abc"`},
		{"batch zero", min + "batch: 0", "batch",
			"batch: 0 is out of range; use 1 to 10000 customers per batch (default 1000)"},
		{"batch too large", min + "batch: 20000", "batch",
			"batch: 20000 is out of range; use 1 to 10000 customers per batch (default 1000)"},
		{"watch not a bool", min + "watch: maybe", "watch",
			`watch: line 3:8: expected true or false, found "maybe"`},
		{"delimiter too long", min + "delimiter: ';;'", "delimiter",
			`delimiter: ";;" cannot be the delimiter; use one character other than a quote or a line break, e.g. ",", ";" or "\t"`},
		{"delimiter quote", min + `delimiter: '"'`, "delimiter",
			`delimiter: "\"" cannot be the delimiter; use one character other than a quote or a line break, e.g. ",", ";" or "\t"`},
		{"columns not a mapping", min + "columns: [a, b]", "columns",
			"columns: line 3:10: expected a mapping of keys to values, found a list"},
		{"config not a mapping", "- a\n- b", "",
			"line 1:1: expected a mapping of keys to values, found a list"},
		{"not YAML", "path: [x.csv", "",
			"line 1:1: invalid YAML: did not find expected ',' or ']'"},
		{"unknown type", min + "columns:\n  Plan: {type: int}", "columns.Plan.type",
			`columns.Plan.type: unknown type "int"; use string, number, bool, time or list`},
		{"separator without list", min + "columns:\n  Plan: {separator: ';'}", "columns.Plan.separator",
			"columns.Plan.separator: applies only to type: list; set type: list or remove separator"},
		{"empty separator", min + "columns:\n  Plan: {type: list, separator: ''}", "columns.Plan.separator",
			`columns.Plan.separator: is empty; use e.g. "|" or ";" (default "|")`},
		{"format without time", min + "columns:\n  Plan: {format: '2006'}", "columns.Plan.format",
			"columns.Plan.format: applies only to type: time; set type: time or remove format"},
		{"skip with type", min + "columns:\n  Plan: {skip: true, type: string}", "columns.Plan",
			"columns.Plan: skip: true with other keys; a skipped column is dropped, so remove the other keys or the skip"},
		{"bad name", min + "columns:\n  Plan: {name: 2plan}", "columns.Plan.name",
			`columns.Plan.name: "2plan" does not start with a letter or _; choose another name (letters, digits and _, starting with a letter or _)`},
		{"reserved name", min + "columns:\n  Plan: {name: in}", "columns.Plan.name",
			`columns.Plan.name: "in" is a word of the rule language; choose another name (letters, digits and _, starting with a letter or _)`},
		{"consent without column", min + "consent: {}", "consent.column",
			"consent.column: required when consent is set; name the column holding yes/no consent to email"},

		{"file missing", "path: " + missing + "\nid_column: id", "path",
			"path: cannot read the CSV file: open " + missing + ": no such file or directory (a relative path is relative to the daemon's working directory)"},
		{"file empty", "path: " + empty + "\nid_column: id", "path",
			"path: " + empty + " is empty; it needs a header row naming the columns"},
		{"duplicate header", "path: " + dupHeader + "\nid_column: id", "path",
			"path: " + dupHeader + `: columns 2 and 3 are both named "Email"; header names must be unique`},
		{"id column not in header", "path: " + cust + "\nid_column: id", "id_column",
			`id_column: column "id" is not in the header of ` + cust + "; the header has: " + header},
		{"email column not in header", "path: " + cust + "\nid_column: customerID\nemail: E-mail", "email",
			`email: column "E-mail" is not in the header of ` + cust + "; the header has: " + header},
		{"columns key not in header", "path: " + cust + "\nid_column: customerID\ncolumns:\n  Plans: {type: string}", "columns.Plans",
			`columns.Plans: column "Plans" is not in the header of ` + cust + "; the header has: " + header},
		{"consent column not in header", "path: " + cust + "\nid_column: customerID\nconsent: {column: OptIn}", "consent.column",
			`consent.column: column "OptIn" is not in the header of ` + cust + "; the header has: " + header},
		{"two contacts one column", "path: " + cust + "\nid_column: customerID\nemail: Email\nphone: Email", "phone",
			`phone: email and phone both name column "Email"; each contact field needs its own column`},
		{"contact typed", "path: " + cust + "\nid_column: customerID\nemail: Email\ncolumns:\n  Email: {type: number}", "columns.Email.type",
			`columns.Email.type: column "Email" is the email contact field, which is a string; remove type: number`},
		{"contact skipped", "path: " + cust + "\nid_column: customerID\nemail: Email\ncolumns:\n  Email: {skip: true}", "columns.Email.skip",
			`columns.Email.skip: column "Email" is the email contact field and cannot be skipped; remove skip or unset email`},
		{"id column in columns", "path: " + cust + "\nid_column: customerID\ncolumns:\n  customerID: {type: string}", "columns.customerID",
			`columns.customerID: column "customerID" is the id column, which is not a trait; remove columns.customerID`},
		{"consent column in columns", "path: " + cust + "\nid_column: customerID\nconsent: {column: EmailOptIn}\ncolumns:\n  EmailOptIn: {type: bool}", "columns.EmailOptIn",
			`columns.EmailOptIn: column "EmailOptIn" is the consent column (consent.column), which is not a trait; remove columns.EmailOptIn`},
		{"consent is the id", "path: " + cust + "\nid_column: customerID\nconsent: {column: customerID}", "consent.column",
			`consent.column: "customerID" is the id column; name the column holding consent`},
		{"consent is a contact", "path: " + cust + "\nid_column: customerID\nemail: Email\nconsent: {column: Email}", "consent.column",
			`consent.column: "Email" is the email contact column; name the column holding consent`},
		{"name collides", "path: " + cust + "\nid_column: customerID\ncolumns:\n  Plan: {name: first_name}", "columns.Plan",
			`columns.Plan: columns "First Name" and "Plan" both become trait "first_name"; rename one with columns.<header>.name, or drop one with skip: true`},
		{"headers collide", "path: " + collide + "\nid_column: id", "columns.TotalCharges",
			`columns.TotalCharges: columns "Total Charges" and "TotalCharges" both become trait "total_charges"; rename one with columns.<header>.name, or drop one with skip: true`},
		{"header starts with a digit", "path: " + digit + "\nid_column: id", "columns.2fa",
			`columns.2fa: column 3 ("2fa") does not make a usable trait name ("2fa" does not start with a letter or _); set columns.2fa.name to one, or skip: true`},
		{"header is a keyword", "path: " + reserved + "\nid_column: id", "columns.Not",
			`columns.Not: column 2 ("Not") does not make a usable trait name ("not" is a word of the rule language); set columns.Not.name to one, or skip: true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newTestSource(t).Configure(t.Context(), sdk.ConfigureRequest{Config: []byte(tc.config)})
			if err == nil {
				t.Fatalf("Configure accepted:\n%s", tc.config)
			}
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is a %T, want *sdk.Error", err, err)
			}
			if e.Code != sdk.InvalidConfig || e.Field != tc.field {
				t.Errorf("code, field = %v, %q; want INVALID_CONFIG, %q", e.Code, e.Field, tc.field)
			}
			if err.Error() != tc.msg {
				t.Errorf("message:\n got %s\nwant %s", err, tc.msg)
			}
		})
	}
}

func TestConfigureSchema(t *testing.T) {
	s := newTestSource(t)
	info := configure(t, s, `
path: `+testdataPath(t, "customers.csv")+`
id_column: customerID
email: Email
phone: Phone
timezone: Time Zone
consent: {column: EmailOptIn}
columns:
  Tags: {type: list}
  Zip: {skip: true}
  First Name: {name: given_name}
  Orders: {type: string}
`)
	if info.Name != "csv" || info.Version != Version {
		t.Errorf("name, version = %q, %q", info.Name, info.Version)
	}
	got := map[string]sdk.TraitType{}
	for _, tr := range info.Traits {
		got[tr.Name] = tr.Type
	}
	want := map[string]sdk.TraitType{
		"email":          sdk.TypeString,
		"phone":          sdk.TypeString, // "+1555..." would be a number, but it is a contact
		"time_zone":      sdk.TypeString,
		"given_name":     sdk.TypeString,
		"plan":           sdk.TypeString,
		"signed_up_at":   sdk.TypeTime,
		"last_order_at":  sdk.TypeTime, // one cell has an offset, one is empty
		"orders":         sdk.TypeString,
		"lifetime_value": sdk.TypeNumber, // one cell is empty
		"vip":            sdk.TypeBool,   // true, FALSE, True...
		"tags":           sdk.TypeStringList,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("traits (-want +got):\n%s", diff)
	}
	wantContact := sdk.ContactFields{Email: "email", Phone: "phone", Timezone: "time_zone"}
	if info.Contact != wantContact {
		t.Errorf("contact = %+v, want %+v", info.Contact, wantContact)
	}
	for _, tr := range info.Traits {
		if tr.Name == "tags" && tr.Description != `CSV column "Tags" (configured type)` {
			t.Errorf("tags description = %q", tr.Description)
		}
		if tr.Name == "vip" && tr.Description != `CSV column "VIP" (inferred type)` {
			t.Errorf("vip description = %q", tr.Description)
		}
	}
}

// TestInference covers the inference rules one column at a time.
func TestInference(t *testing.T) {
	path := writeFile(t, t.TempDir(), "infer.csv", strings.Join([]string{
		"id,Amount,Blanks,Active,Answer,Joined,Seen,Zip,Phone,Mixed,Empty,Code,Count",
		"1,10.5,1, true ,Yes,2024-01-02,2024-01-02T10:00:00Z,02134,+15550100001,1,,A1,1",
		"2,-3,, FALSE,No,2024-02-03,2024-02-03 11:00:00,10001,+15550100002,x,,B2,2",
		"3,1e3, ,True,yes,,2024-02-03,94103,,true,,C3,",
		"4,,4,,,2024-03-04,,,+15550100004,2024-01-02,,,4",
		"5,2,five,false,no,2024-03-05,2024-03-05T00:00:00+02:00,12345,+15550100005,,  ,D4,5",
	}, "\n")+"\n")
	info := configure(t, newTestSource(t), "path: "+path+"\nid_column: id\ncolumns:\n  Count: {type: string}\n")
	got := map[string]sdk.TraitType{}
	for _, tr := range info.Traits {
		got[tr.Name] = tr.Type
	}
	want := map[string]sdk.TraitType{
		"amount": sdk.TypeNumber,
		"blanks": sdk.TypeString, // "five"
		"active": sdk.TypeBool,
		"answer": sdk.TypeString, // Yes/No stays a string
		"joined": sdk.TypeTime,
		"seen":   sdk.TypeTime,   // RFC 3339, date, date and time
		"zip":    sdk.TypeString, // 02134: a number would lose the zero
		"phone":  sdk.TypeString, // +1555...: a phone, not an amount
		"mixed":  sdk.TypeString,
		"empty":  sdk.TypeString, // no values at all
		"code":   sdk.TypeString,
		"count":  sdk.TypeString, // configured; would infer number
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("traits (-want +got):\n%s", diff)
	}
}

// TestInferenceTelco checks the public sample: numeric columns with blank
// cells stay numbers, Yes/No columns are strings, SeniorCitizen (0/1) is a
// number.
func TestInferenceTelco(t *testing.T) {
	info := configure(t, newTestSource(t), "path: "+testdataPath(t, "telco-sample.csv")+"\nid_column: customerID\nwatch: false\n")
	var names []string
	got := map[string]sdk.TraitType{}
	for _, tr := range info.Traits {
		names = append(names, tr.Name)
		got[tr.Name] = tr.Type
	}
	wantNames := []string{"gender", "senior_citizen", "partner", "dependents", "tenure", "phone_service",
		"multiple_lines", "internet_service", "online_security", "online_backup", "device_protection",
		"tech_support", "streaming_tv", "streaming_movies", "contract", "paperless_billing",
		"payment_method", "monthly_charges", "total_charges", "churn"}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("trait names in header order (-want +got):\n%s", diff)
	}
	for name, typ := range map[string]sdk.TraitType{
		"total_charges": sdk.TypeNumber, "monthly_charges": sdk.TypeNumber, "tenure": sdk.TypeNumber,
		"senior_citizen": sdk.TypeNumber, "churn": sdk.TypeString, "partner": sdk.TypeString,
	} {
		if got[name] != typ {
			t.Errorf("trait %s is %v, want %v", name, got[name], typ)
		}
	}
	// The blank TotalCharges rows load, without that trait and without a
	// problem.
	m := merge(pullAll(t, newConfigured(t, "path: "+testdataPath(t, "telco-sample.csv")+"\nid_column: customerID\nwatch: false\n"), ""))
	if len(m.customers) != 50 || len(m.problems) != 0 {
		t.Fatalf("pulled %d customers and %d problems, want 50 and 0: %v", len(m.customers), len(m.problems), m.problems)
	}
	for _, c := range m.customers {
		_, has := c.Traits["total_charges"]
		if blank := c.ID == "4472-LVYGI" || c.ID == "3115-CZMZD"; has == blank {
			t.Errorf("customer %s: has total_charges = %v", c.ID, has)
		}
	}
	if v := m.customers[0].Traits["total_charges"]; !cmp.Equal(v, sdk.Number(29.85)) {
		t.Errorf("first customer's total_charges = %+v, want 29.85", v)
	}
}

func newConfigured(t *testing.T, config string) *Source {
	t.Helper()
	s := newTestSource(t)
	configure(t, s, config)
	return s
}

// TestRelativePath: a relative path is relative to the working directory.
func TestRelativePath(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "crm.csv", "id,Plan\n1,pro\n")
	t.Chdir(dir)
	s := newConfigured(t, "path: crm.csv\nid_column: id\nwatch: false\n")
	if err := os.Remove(filepath.Join(dir, "crm.csv")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "crm.csv", "id,Plan\n2,basic\n")
	m := merge(pullAll(t, s, ""))
	if diff := cmp.Diff([]string{"2"}, m.ids()); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
}
