// Command sql is Cohort's SQL source plugin: it reads customers from a
// table or query of an existing PostgreSQL or MySQL/MariaDB database,
// incrementally by an updated-at column. The daemon starts it; see
// README.md for the config.
package main

import (
	"github.com/cohortd/cohort/plugins/sql/internal/sqlsource"
	"github.com/cohortd/cohort/sdk"
)

func main() { sdk.Serve(sdk.WithSource(sqlsource.New())) }
