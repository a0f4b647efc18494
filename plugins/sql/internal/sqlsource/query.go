package sqlsource

import (
	"strconv"
	"strings"
	"time"
)

// maxNullIDReports bounds the rows without an id reported for one page.
const maxNullIDReports = 100

// plan writes the SQL the plugin runs. Every statement reads from the
// configured table (with its where) or from the query as a subquery, so the
// plugin adds its own predicates and ordering on the outside.
type plan struct {
	d      dialect
	from   string // the FROM clause's body
	filter string // the table's where, parenthesized; "" if none
	sel    string // the select list
	id     string // quoted id column
	idCls  class
	u      string // quoted updated_at column; "" for full reloads
	uCls   class
	lag    time.Duration // 0: none
}

func newPlan(set *settings, sc *schema) *plan {
	d := set.dialect
	p := &plan{d: d}
	p.from, p.filter = fromClause(set)
	cols := make([]string, len(sc.cols))
	for i, c := range sc.cols {
		cols[i] = d.quote(c.name)
	}
	p.sel = strings.Join(cols, ", ")
	p.id, p.idCls = d.quote(sc.cols[sc.id].name), sc.cols[sc.id].class
	if sc.updated >= 0 {
		p.u, p.uCls = d.quote(sc.cols[sc.updated].name), sc.cols[sc.updated].class
		if p.uCls == classTime {
			p.lag = set.lag
		}
	}
	return p
}

// incremental reports whether pages are keyed by (updated_at, id).
func (p *plan) incremental() bool { return p.u != "" }

// stmt collects a statement's text and arguments.
type stmt struct {
	d    dialect
	sql  strings.Builder
	args []any
	err  error
}

// arg adds an argument for a column of class c and returns its placeholder.
func (s *stmt) arg(k keyValue, c class) string {
	v, err := k.arg()
	if err != nil && s.err == nil {
		s.err = err
	}
	s.args = append(s.args, v)
	return s.d.param(c, s.d.placeholder(len(s.args)))
}

// where writes the WHERE clause from conditions.
func (s *stmt) where(conds []string) {
	if len(conds) > 0 {
		s.sql.WriteString(" WHERE ")
		s.sql.WriteString(strings.Join(conds, " AND "))
	}
}

func (p *plan) base() []string {
	if p.filter != "" {
		return []string{p.filter}
	}
	return nil
}

// fromClause returns the FROM clause's body (the table, or the query as a
// subquery) and the table's where, parenthesized ("" if none).
func fromClause(set *settings) (from, filter string) {
	if set.table == nil {
		// Line breaks keep a trailing -- comment in the query from
		// swallowing the closing parenthesis.
		return "(\n" + set.query + "\n) AS cohort_src", ""
	}
	quoted := make([]string, len(set.table))
	for i, part := range set.table {
		quoted[i] = set.dialect.quote(part)
	}
	if set.where != "" {
		filter = "(" + set.where + "\n)"
	}
	return strings.Join(quoted, "."), filter
}

// probeSQL returns every column of the source and no rows: Configure
// learns the columns from it.
func probeSQL(set *settings) string {
	from, filter := fromClause(set)
	s := "SELECT * FROM " + from
	if filter != "" {
		s += " WHERE " + filter
	}
	return s + " LIMIT 0"
}

// page returns the statement for the next page after c, at most limit rows.
func (p *plan) page(c cursor, limit int) (string, []any, error) {
	s := &stmt{d: p.d}
	s.sql.WriteString("SELECT " + p.sel + " FROM " + p.from)
	conds := append(p.base(), p.id+" IS NOT NULL")
	if p.incremental() {
		conds = append(conds, p.u+" IS NOT NULL")
		if p.lag > 0 {
			conds = append(conds, p.u+" <= "+p.d.lagBound(p.lag))
		}
		if !c.U.IsZero() {
			conds = append(conds, p.d.after(p.u, p.id,
				func() string { return s.arg(c.U, p.uCls) },
				func() string { return s.arg(c.ID, p.idCls) }))
		}
		s.where(conds)
		s.sql.WriteString(" ORDER BY " + p.u + ", " + p.id)
	} else {
		if !c.ID.IsZero() {
			conds = append(conds, p.id+" > "+s.arg(c.ID, p.idCls))
		}
		s.where(conds)
		s.sql.WriteString(" ORDER BY " + p.id)
	}
	s.sql.WriteString(" LIMIT " + strconv.Itoa(limit))
	return s.sql.String(), s.args, s.err
}

// nullIDs returns the statement listing the updated_at of rows without an
// id whose updated_at is in (from, to]; from zero means no lower bound.
func (p *plan) nullIDs(from, to keyValue, limit int) (string, []any, error) {
	s := &stmt{d: p.d}
	s.sql.WriteString("SELECT " + p.u + " FROM " + p.from)
	conds := append(p.base(), p.id+" IS NULL", p.u+" IS NOT NULL")
	if p.lag > 0 {
		conds = append(conds, p.u+" <= "+p.d.lagBound(p.lag))
	}
	if !from.IsZero() {
		conds = append(conds, p.u+" > "+s.arg(from, p.uCls))
	}
	conds = append(conds, p.u+" <= "+s.arg(to, p.uCls))
	s.where(conds)
	s.sql.WriteString(" ORDER BY " + p.u + " LIMIT " + strconv.Itoa(limit))
	return s.sql.String(), s.args, s.err
}

// countNullIDs returns the statement counting the rows without an id (for
// full reloads, once per pass).
func (p *plan) countNullIDs() string {
	s := &stmt{d: p.d}
	s.sql.WriteString("SELECT COUNT(*) FROM " + p.from)
	s.where(append(p.base(), p.id+" IS NULL"))
	return s.sql.String()
}
