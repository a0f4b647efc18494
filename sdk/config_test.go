package sdk_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/sdk"
)

type testColumn struct {
	Type string `yaml:"type"`
	Skip bool   `yaml:"skip"`
}

type testConfig struct {
	DSN     string                `yaml:"dsn"`
	Batch   *int                  `yaml:"batch"`
	Ratio   float64               `yaml:"ratio"`
	Poll    time.Duration         `yaml:"poll"`
	Keys    []string              `yaml:"keys"`
	Columns map[string]testColumn `yaml:"columns"`
	Live    bool                  `yaml:"live"`
}

func TestDecodeConfig(t *testing.T) {
	batch := 500
	for _, tc := range []struct {
		name, config string
		want         testConfig
	}{
		{"empty block keeps defaults", "", testConfig{DSN: "default"}},
		{"only a comment", "# nothing here\n", testConfig{DSN: "default"}},
		{"every kind", `
dsn: postgres://u@h/db
batch: 500
ratio: 0.25
poll: 1m30s
keys: [a, "b"]
columns:
  Plan: {type: string}
  Notes:
    skip: yes
live: true
`, testConfig{
			DSN: "postgres://u@h/db", Batch: &batch, Ratio: 0.25, Poll: 90 * time.Second,
			Keys: []string{"a", "b"}, Live: true,
			Columns: map[string]testColumn{"Plan": {Type: "string"}, "Notes": {Skip: true}},
		}},
		{"no ${VAR} expansion", "dsn: ${NOT_EXPANDED}\n", testConfig{DSN: "${NOT_EXPANDED}"}},
		{"null pointer stays nil", "batch:\n", testConfig{DSN: "default"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := testConfig{DSN: "default"}
			if err := sdk.DecodeConfig([]byte(tc.config), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		field, msg   string // the *sdk.Error's Field and Message
		text         string // its Error(), as the daemon logs it
	}{
		{
			"unknown top-level key", "dsn: x\nbacth: 5\n",
			"bacth", `line 2:1: unknown key "bacth" at the top level (known keys: batch, columns, dsn, keys, live, poll, ratio); did you mean "batch"?`,
			`line 2:1: unknown key "bacth" at the top level (known keys: batch, columns, dsn, keys, live, poll, ratio); did you mean "batch"?`,
		},
		{
			"unknown key without a close match", "verbose: true\n",
			"verbose", `line 1:1: unknown key "verbose" at the top level (known keys: batch, columns, dsn, keys, live, poll, ratio)`,
			`line 1:1: unknown key "verbose" at the top level (known keys: batch, columns, dsn, keys, live, poll, ratio)`,
		},
		{
			"unknown nested key", "columns:\n  plan:\n    typ: string\n",
			"columns.plan.typ", `line 3:5: unknown key "typ" in columns.plan (known keys: skip, type); did you mean "type"?`,
			`columns.plan.typ: line 3:5: unknown key "typ" in columns.plan (known keys: skip, type); did you mean "type"?`,
		},
		{
			"duplicate key", "dsn: a\nbatch: 1\ndsn: b\n",
			"dsn", `line 3:1: duplicate key "dsn"`,
			`line 3:1: duplicate key "dsn"`,
		},
		{
			"duplicate nested key", "columns:\n  plan: {type: string, type: list}\n",
			"columns.plan.type", `line 2:24: duplicate key "type"`,
			`columns.plan.type: line 2:24: duplicate key "type"`,
		},
		{
			"not a whole number", "batch: lots\n",
			"batch", `line 1:8: expected a whole number, found "lots"`,
			`batch: line 1:8: expected a whole number, found "lots"`,
		},
		{
			"not a number", "ratio: half\n",
			"ratio", `line 1:8: expected a number, found "half"`,
			`ratio: line 1:8: expected a number, found "half"`,
		},
		{
			"not a bool", "columns:\n  plan: {skip: maybe}\n",
			"columns.plan.skip", `line 2:16: expected true or false, found "maybe"`,
			`columns.plan.skip: line 2:16: expected true or false, found "maybe"`,
		},
		{
			"not a duration", "poll: 30\n",
			"poll", `line 1:7: "30" is not a duration: write a number with a unit, e.g. 30s, 5m, 2h, 7d`,
			`poll: line 1:7: "30" is not a duration: write a number with a unit, e.g. 30s, 5m, 2h, 7d`,
		},
		{
			"list for a string", "dsn: [a, b]\n",
			"dsn", `line 1:6: expected a single value, found a list`,
			`dsn: line 1:6: expected a single value, found a list`,
		},
		{
			"string for a list", "keys: abc\n",
			"keys", `line 1:7: expected a list, found "abc"`,
			`keys: line 1:7: expected a list, found "abc"`,
		},
		{
			"list item", "keys: [a, [b]]\n",
			"keys[1]", `line 1:11: expected a single value, found a list`,
			`keys[1]: line 1:11: expected a single value, found a list`,
		},
		{
			"list for a mapping", "columns: [a]\n",
			"columns", `line 1:10: expected a mapping of keys to values, found a list`,
			`columns: line 1:10: expected a mapping of keys to values, found a list`,
		},
		{
			"block not a mapping", "- a\n",
			"", `line 1:1: expected a mapping of keys to values, found a list`,
			`line 1:1: expected a mapping of keys to values, found a list`,
		},
		{
			"not YAML", "dsn: [\n",
			"", `line 1:1: invalid YAML: did not find expected node content`,
			`line 1:1: invalid YAML: did not find expected node content`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg testConfig
			err := sdk.DecodeConfig([]byte(tc.config), &cfg)
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("DecodeConfig = %v, want an *sdk.Error", err)
			}
			got := [4]string{e.Code.String(), e.Field, e.Message, err.Error()}
			want := [4]string{"INVALID_CONFIG", tc.field, tc.msg, tc.text}
			if got != want {
				t.Errorf("error:\n got: %q\nwant: %q", got, want)
			}
		})
	}
}

func TestDecodeConfigPluginBugs(t *testing.T) {
	var notPointer testConfig
	var unsupported struct {
		C chan int `yaml:"c"`
	}
	for name, out := range map[string]any{
		"not a pointer":    notPointer,
		"nil pointer":      (*testConfig)(nil),
		"unsupported type": &unsupported,
	} {
		t.Run(name, func(t *testing.T) {
			err := sdk.DecodeConfig([]byte("c: 1\n"), out)
			var e *sdk.Error
			if !errors.As(err, &e) || e.Code != sdk.Internal {
				t.Errorf("DecodeConfig = %v, want an Internal *sdk.Error", err)
			}
		})
	}
}

func TestTraitName(t *testing.T) {
	for _, tc := range []struct{ column, want string }{
		{"customerID", "customer_id"},
		{"MonthlyCharges", "monthly_charges"},
		{"Total Charges", "total_charges"},
		{"SeniorCitizen", "senior_citizen"},
		{"tenure", "tenure"},
		{"StreamingTV", "streaming_tv"},
		{"HTTPServer", "http_server"},
		{"ID", "id"},
		{"userID2", "user_id2"},
		{"Address Line 2", "address_line_2"},
		{"e-mail", "e_mail"},
		{"  Last  Seen  ", "last_seen"},
		{"Total Charges ($)", "total_charges"},
		{"first_name", "first_name"},
		{"already__snake", "already_snake"},
		{"_score", "score"},
		{"Prénom", "prénom"},
		{"créé", "créé"},
		{"ÉtatCivil", "état_civil"},
		{"2fa", "2fa"},
		{"$$$", ""},
		{"", ""},
	} {
		if got := sdk.TraitName(tc.column); got != tc.want {
			t.Errorf("TraitName(%q) = %q, want %q", tc.column, got, tc.want)
		}
	}
}
