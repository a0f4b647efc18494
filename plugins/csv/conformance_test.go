package main_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cohortd/cohort/plugins/csv/internal/csvsource"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// sourceCase is the conformance case for a config with watch on or off,
// with or without an events file.
func sourceCase(t *testing.T, watch, events bool) sdktest.SourceCase {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("internal", "csvsource", "testdata", "customers.csv"))
	if err != nil {
		t.Fatal(err)
	}
	eventsPath := filepath.Join(filepath.Dir(path), "events.csv")
	config := fmt.Appendf(nil, `
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
`, path, watch)
	if events {
		config = fmt.Appendf(config, `events:
  path: %s
  id_column: event_id
  customer_column: customer_id
  name_column: event
  time_column: time
  value_column: value
`, eventsPath)
	}
	return sdktest.SourceCase{
		Config: config,
		BadConfigs: [][]byte{
			nil,
			[]byte("path: " + path),
			fmt.Appendf(nil, "path: %s\nid_column: nope\n", path),
			fmt.Appendf(nil, "path: %s\nid_column: customerID\nbatch: 0\n", path),
			fmt.Appendf(nil, "path: %s\nid_column: customerID\nunknown: 1\n", path),
			[]byte("path: /nonexistent/customers.csv\nid_column: customerID\n"),
			fmt.Appendf(nil, "path: %s\nid_column: customerID\nevents: {path: %s}\n", path, eventsPath),
			fmt.Appendf(nil, "path: %s\nid_column: customerID\nevents: {path: %s, id_column: event_id, customer_column: customer_id, name_column: event, time_column: when}\n", path, eventsPath),
		},
	}
}

func TestConformance(t *testing.T) {
	for _, events := range []bool{false, true} {
		for _, watch := range []bool{false, true} {
			t.Run(fmt.Sprintf("events=%v/watch=%v", events, watch), func(t *testing.T) {
				sdktest.RunSource(t, csvsource.New(), sourceCase(t, watch, events))
			})
		}
	}
}

func TestConformanceBinary(t *testing.T) {
	bin := sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/csv")
	for _, events := range []bool{false, true} {
		for _, watch := range []bool{false, true} {
			t.Run(fmt.Sprintf("events=%v/watch=%v", events, watch), func(t *testing.T) {
				sdktest.RunSourceBinary(t, bin, sourceCase(t, watch, events))
			})
		}
	}
}
