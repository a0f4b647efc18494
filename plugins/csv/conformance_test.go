package main_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cohortd/cohort/plugins/csv/internal/csvsource"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// sourceCase is the conformance case for a config with watch on or off.
func sourceCase(t *testing.T, watch bool) sdktest.SourceCase {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("internal", "csvsource", "testdata", "customers.csv"))
	if err != nil {
		t.Fatal(err)
	}
	return sdktest.SourceCase{
		Config: fmt.Appendf(nil, `
path: %s
id_column: customerID
email: Email
phone: Phone
timezone: Time Zone
consent: {column: EmailOptIn}
batch: 4
watch: %v
columns:
  Tags: {type: list}
`, path, watch),
		BadConfigs: [][]byte{
			nil,
			[]byte("path: " + path),
			fmt.Appendf(nil, "path: %s\nid_column: nope\n", path),
			fmt.Appendf(nil, "path: %s\nid_column: customerID\nbatch: 0\n", path),
			fmt.Appendf(nil, "path: %s\nid_column: customerID\nunknown: 1\n", path),
			[]byte("path: /nonexistent/customers.csv\nid_column: customerID\n"),
		},
	}
}

func TestConformance(t *testing.T) {
	for _, watch := range []bool{false, true} {
		t.Run(fmt.Sprint("watch=", watch), func(t *testing.T) {
			sdktest.RunSource(t, csvsource.New(), sourceCase(t, watch))
		})
	}
}

func TestConformanceBinary(t *testing.T) {
	bin := sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/csv")
	for _, watch := range []bool{false, true} {
		t.Run(fmt.Sprint("watch=", watch), func(t *testing.T) {
			sdktest.RunSourceBinary(t, bin, sourceCase(t, watch))
		})
	}
}
