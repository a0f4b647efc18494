// Command csv is Cohort's CSV source plugin: it loads customers from a CRM
// export, and optionally events from an events export, and with watch on
// reloads them when a file changes. The daemon starts it; see
// internal/csvsource and README.md for the config.
package main

import (
	"github.com/cohortd/cohort/plugins/csv/internal/csvsource"
	"github.com/cohortd/cohort/sdk"
)

func main() { sdk.Serve(sdk.WithSource(csvsource.New())) }
