// Package sqlsource is the sql source plugin: it reads customers from a
// table, view or query of a PostgreSQL or MySQL/MariaDB database (through
// database/sql with pgx and go-sql-driver/mysql), incrementally by an
// updated-at column. plugins/sql/README.md documents the config.
//
// Reading: pages in (updated_at, id) order, each after the last row of the
// previous one (keyset pagination), so rows sharing an updated_at are
// neither lost nor repeated across pages. Each page is one batch whose
// cursor is its last row's key; the first short page is CaughtUp; then the
// source polls. Only rows at least lag old by the database's clock are
// read, so a transaction that commits late is not overtaken by the cursor.
// Without an updated-at column every poll is a full pass, keyed by id.
//
// Values: types come from the database's column types (see schema.go and
// the dialects); NULL is a missing trait (left out, or a null with nulls:
// clear); a value that does not convert is an sdk.Problem naming the
// customer and trait, and only that trait is skipped.
//
// Files: config.go (strict YAML), dialect.go (what differs between the
// databases), schema.go (columns to traits), query.go (the SQL), cursor.go,
// convert.go (values), source.go (Configure and Pull).
package sqlsource
