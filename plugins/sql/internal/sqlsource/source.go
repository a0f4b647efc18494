package sqlsource

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cohortd/cohort/sdk"
)

// Version is the plugin's version, reported in SourceInfo.
const Version = "0.1.0"

// Source is the sql source. The zero value is not usable; call New.
type Source struct {
	log *slog.Logger

	mu sync.Mutex
	st *state // the last successful Configure; nil before
}

var _ sdk.Source = (*Source)(nil)

// state is one successful Configure: what to read and how.
type state struct {
	set  *settings
	sc   *schema
	plan *plan
	fp   string
	srv  server
	log  *slog.Logger
}

// Option configures a Source.
type Option func(*Source)

// WithLogger makes the source log to l instead of sdk.Logger().
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.log = l } }

// New returns an unconfigured source.
func New(opts ...Option) *Source {
	s := &Source{}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = sdk.Logger()
	}
	return s
}

func (s *Source) state() *state {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Configure parses the config, connects, learns the columns from the query
// with LIMIT 0 and checks that the statements Pull will run are accepted,
// all within the config's timeout.
func (s *Source) Configure(ctx context.Context, req sdk.ConfigureRequest) (sdk.SourceInfo, error) {
	set, err := parseConfig(req.Config)
	if err != nil {
		return sdk.SourceInfo{}, err
	}
	log := s.log // the host adds the instance name to every line
	db, srv, err := set.dialect.open(set.dsn, set.timeout, log)
	if err != nil {
		return sdk.SourceInfo{}, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, set.timeout)
	defer cancel()

	if err := db.PingContext(ctx); err != nil {
		return sdk.SourceInfo{}, connectError(ctx, set, srv, err)
	}
	st := &state{set: set, srv: srv, log: log}
	result, err := probeColumns(ctx, db, probeSQL(set))
	if err != nil {
		return sdk.SourceInfo{}, queryError(ctx, set, srv, err)
	}
	var cat map[string]catalogColumn
	if set.table != nil {
		if cat, err = set.dialect.catalog(ctx, db, set.table); err != nil {
			// Only a refinement (tinyint(1) as bool, NOT NULL ids): go on.
			log.Debug("could not read the table's catalog", "err", srv.scrub(err.Error()))
		}
	}
	if st.sc, err = buildSchema(set, set.dialect, result, cat); err != nil {
		return sdk.SourceInfo{}, err
	}
	st.plan = newPlan(set, st.sc)
	st.fp = fingerprint(set, st.sc)
	if err := st.check(ctx, db); err != nil {
		return sdk.SourceInfo{}, queryError(ctx, set, srv, err)
	}

	s.mu.Lock()
	s.st = st
	s.mu.Unlock()

	mode := "incremental"
	if !st.plan.incremental() {
		mode = "full reload"
		log.Warn("no updated_at_column: every poll reads the whole table again; set updated_at_column to read only what changed", "poll", fmtDuration(set.poll))
	} else if st.plan.uCls != classTime {
		log.Warn("updated_at_column is a number, so lag cannot apply: a row committed after a row with a higher number is missed", "column", st.sc.cols[st.sc.updated].name)
	}
	if len(st.sc.unloaded) > 0 {
		log.Info("binary columns are not loaded; set columns.<name>.type to load one", "columns", strings.Join(st.sc.unloaded, ", "))
	}
	log.Info("configured", "driver", set.dialect.title(), "server", srv.addr, "database", srv.database,
		"source", sourceField(set), "mode", mode, "traits", len(st.sc.traits))
	return sdk.SourceInfo{
		Name:    "sql",
		Version: Version,
		Traits:  st.sc.traits,
		Contact: st.sc.contact,
	}, nil
}

// probeColumns runs the probe and returns its result's columns.
func probeColumns(ctx context.Context, db *sql.DB, probe string) ([]resultColumn, error) {
	rows, err := db.QueryContext(ctx, probe)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, err
	}
	out := make([]resultColumn, len(types))
	for i, ct := range types {
		nullable, known := ct.Nullable()
		out[i] = resultColumn{name: ct.Name(), typeName: ct.DatabaseTypeName(), nullable: nullable || !known}
	}
	for rows.Next() {
	}
	return out, rows.Err()
}

// check runs, with LIMIT 0, every statement Pull runs, so that a column of
// a type the database cannot compare fails now rather than at the first
// poll. Key arguments are NULL: their type comes from the columns, and a
// sample value might not parse as, say, a uuid.
func (st *state) check(ctx context.Context, db *sql.DB) error {
	sample := cursor{V: cursorVersion, F: st.fp, ID: keyValue{'s', ""}}
	if st.plan.incremental() {
		sample.U = keyValue{'s', ""}
	}
	stmts := []func() (string, []any, error){
		func() (string, []any, error) { return st.plan.page(cursor{}, 0) },
		func() (string, []any, error) { return st.plan.page(sample, 0) },
	}
	if st.plan.incremental() && st.sc.cols[st.sc.id].nullable {
		stmts = append(stmts, func() (string, []any, error) { return st.plan.nullIDs(sample.U, sample.U, 0) })
	}
	for _, f := range stmts {
		q, args, err := f()
		if err != nil {
			return err
		}
		clear(args)
		rows, err := db.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// connectError explains why the server could not be reached or refused us.
func connectError(ctx context.Context, set *settings, srv server, err error) error {
	db := set.dialect.title()
	where := srv.addr
	if srv.database != "" {
		where += ", database " + srv.database
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	e := set.dialect.classify(err)
	switch {
	case ctx.Err() != nil || e.kind == errTimeout:
		return fieldError(sdk.Unavailable, "dsn", "%s at %s did not answer within %s; check that it is running and reachable from the daemon", db, where, fmtDuration(set.timeout))
	case e.kind == errAuth:
		return fieldError(sdk.Unauthenticated, "dsn", "%s at %s refused user %q: %s; check the user and password", db, where, srv.user, srv.scrub(e.msg))
	case e.kind == errNoDatabase:
		return configError("dsn", "%s at %s has no database %q; check the database name", db, srv.addr, srv.database)
	case e.kind == errPermission:
		return fieldError(sdk.PermissionDenied, "dsn", "%s at %s: user %q may not use database %q: %s", db, srv.addr, srv.user, srv.database, srv.scrub(e.msg))
	}
	return fieldError(sdk.Unavailable, "dsn", "cannot connect to %s at %s: %s; check that it is running and reachable from the daemon", db, srv.addr, srv.scrub(e.msg))
}

// queryError explains why the source's SQL failed at Configure, naming the
// key to change.
func queryError(ctx context.Context, set *settings, srv server, err error) error {
	db := set.dialect.title()
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	field := sourceField(set)
	e := set.dialect.classify(err)
	msg := srv.scrub(e.msg)
	switch {
	case ctx.Err() != nil || e.kind == errTimeout:
		return fieldError(sdk.DeadlineExceeded, field, "%s did not answer within %s; raise timeout, or make the %s cheaper to read (an index on the key columns)", db, fmtDuration(set.timeout), field)
	case e.kind == errUnreachable:
		return fieldError(sdk.Unavailable, "dsn", "lost the connection to %s at %s: %s", db, srv.addr, msg)
	case e.kind == errAuth:
		return fieldError(sdk.Unauthenticated, "dsn", "%s refused user %q: %s", db, srv.user, msg)
	case e.kind == errPermission:
		return fieldError(sdk.PermissionDenied, field, "user %q may not read it: %s; grant SELECT or use another user", srv.user, msg)
	case e.kind == errNoTable && set.table != nil:
		hint := ""
		if lower := strings.ToLower(strings.Join(set.table, ".")); set.dialect.title() == "PostgreSQL" && lower != strings.Join(set.table, ".") {
			hint = fmt.Sprintf(" (PostgreSQL folds unquoted names to lower case: did you mean %s?)", lower)
		}
		return configError("table", "no table or view %q in database %q%s; check the name, the schema and the user's access", strings.Join(set.table, "."), srv.database, hint)
	case set.table != nil && set.where != "" && (e.kind == errNoColumn || e.kind == errQuery):
		return configError("where", "%s rejected it: %s; check the condition", db, withCode(msg, e.code))
	}
	if e.kind == errOther {
		return fieldError(sdk.Unavailable, field, "%s failed: %s", db, withCode(msg, e.code))
	}
	return configError(field, "%s rejected it: %s; check the %s", db, withCode(msg, e.code), field)
}

func withCode(msg, code string) string {
	if code == "" {
		return msg
	}
	return msg + " (" + code + ")"
}

// pullError is what Pull returns when a statement fails: the context's
// error once it is done, else a typed error the host retries on.
func (st *state) pullError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	e := st.set.dialect.classify(err)
	if deadline, ok := ctx.Deadline(); ok && e.kind == errTimeout && time.Until(deadline) < st.set.timeout {
		// The caller's deadline, not ours, bounded the query: drivers
		// can report it a moment before ctx says so.
		return context.DeadlineExceeded
	}
	msg := st.srv.scrub(e.msg)
	db := st.set.dialect.title()
	switch e.kind {
	case errTimeout:
		return sdk.Errorf(sdk.DeadlineExceeded, "timeout", "timeout: a page of %d rows took longer than %s; raise timeout or lower batch", st.set.batch, fmtDuration(st.set.timeout))
	case errAuth:
		return sdk.Errorf(sdk.Unauthenticated, "dsn", "dsn: %s refused user %q: %s", db, st.srv.user, msg)
	case errPermission:
		return sdk.Errorf(sdk.PermissionDenied, sourceField(st.set), "%s: user %q may not read it: %s", sourceField(st.set), st.srv.user, msg)
	case errNoTable, errNoColumn, errQuery:
		return sdk.Errorf(sdk.InvalidConfig, sourceField(st.set), "%s: %s rejected a page's query, accepted at Configure: %s; check the %s and the table's columns", sourceField(st.set), db, withCode(msg, e.code), sourceField(st.set))
	}
	return sdk.Errorf(sdk.Unavailable, "dsn", "%s at %s: %s", db, st.srv.addr, withCode(msg, e.code))
}

// Pull reads the rows after cursor in pages of batch rows, sends each page
// as a batch carrying the cursor of its last row, marks the first short
// page CaughtUp, then polls every poll for rows changed since and sends
// them the same way, until ctx is done.
func (s *Source) Pull(ctx context.Context, cursorText string, send func(*sdk.Batch) error) error {
	st := s.state()
	if st == nil {
		return sdk.Errorf(sdk.InvalidArgument, "", "pull before a successful Configure")
	}
	cur, reason := decodeCursor(cursorText, st.fp)
	if reason != "" {
		st.log.Warn("not resuming from the stored cursor: reading every row again", "reason", reason)
	}
	db, _, err := st.set.dialect.open(st.set.dsn, st.set.timeout, st.log)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(30 * time.Minute)
	p := &puller{st: st, db: db, log: st.log, send: send}
	if _, ok := st.set.dialect.(postgres); ok {
		p.pg = pgtype.NewMap() // parses array columns
	}
	return p.run(ctx, cur)
}

// puller is one Pull's loop.
type puller struct {
	st   *state
	db   *sql.DB
	log  *slog.Logger
	send func(*sdk.Batch) error
	pg   *pgtype.Map // PostgreSQL only

	caughtUp bool // a CaughtUp batch was sent
	rows     int  // rows read before the first CaughtUp batch
}

func (p *puller) run(ctx context.Context, cur cursor) error {
	set := p.st.set
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if cur.Done { // between two full-reload passes
			if !p.caughtUp {
				if err := p.emit(&sdk.Batch{Cursor: cur.encode(), CaughtUp: true}); err != nil {
					return err
				}
			}
			if err := wait(ctx, set.poll); err != nil {
				return err
			}
			cur = cursor{V: cursorVersion, F: p.st.fp}
			continue
		}
		b, next, n, err := p.page(ctx, cur)
		if err != nil {
			return err
		}
		short := n < set.batch
		if short && !p.st.plan.incremental() {
			next = cursor{V: cursorVersion, F: p.st.fp, Done: true}
		}
		b.Cursor = next.encode()
		b.CaughtUp = short
		p.rows += n
		if n > 0 || len(b.Problems) > 0 || (short && !p.caughtUp) || (short && !p.st.plan.incremental()) {
			if err := p.emit(b); err != nil {
				return err
			}
		}
		cur = next
		if short {
			p.caughtUp = true
			if cur.Done {
				continue
			}
			if err := wait(ctx, set.poll); err != nil {
				return err
			}
		}
	}
}

func (p *puller) emit(b *sdk.Batch) error {
	if b.CaughtUp && !p.caughtUp {
		p.log.Info("caught up", "rows", p.rows)
	}
	return p.send(b)
}

// wait waits d or until ctx is done.
func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// entry is one customer's action in a batch.
type entry struct {
	id      string
	deleted bool
	traits  map[string]sdk.Value
}

// page reads the page after cur and returns it as a batch, the cursor
// after it, and how many rows it read.
func (p *puller) page(ctx context.Context, cur cursor) (*sdk.Batch, cursor, int, error) {
	st := p.st
	sc := st.sc
	q, args, err := st.plan.page(cur, st.set.batch)
	if err != nil {
		return nil, cur, 0, sdk.Errorf(sdk.InvalidArgument, "cursor", "cursor: %v", err)
	}
	qctx, cancel := context.WithTimeout(ctx, st.set.timeout)
	defer cancel()
	rows, err := p.db.QueryContext(qctx, q, args...)
	if err != nil {
		return nil, cur, 0, st.pullError(ctx, err)
	}
	defer rows.Close()

	b := &sdk.Batch{}
	next := cur
	vals := make([]any, len(sc.cols))
	ptrs := make([]any, len(sc.cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var entries []entry
	at := map[string]int{} // id -> index in entries
	n := 0
	for rows.Next() {
		clear(vals)
		if err := rows.Scan(ptrs...); err != nil {
			return nil, cur, 0, st.pullError(ctx, err)
		}
		n++
		idCol := &sc.cols[sc.id]
		if next.ID, err = keyOf(vals[sc.id], idCol.class); err != nil {
			return nil, cur, 0, sdk.Errorf(sdk.Internal, "id_column", "id_column: %v", err)
		}
		if sc.updated >= 0 {
			if next.U, err = keyOf(vals[sc.updated], sc.cols[sc.updated].class); err != nil {
				return nil, cur, 0, sdk.Errorf(sdk.Internal, "updated_at_column", "updated_at_column: %v", err)
			}
		}
		id, problem := idString(vals[sc.id], idCol)
		if problem != "" {
			b.Problems = append(b.Problems, sdk.Problem{Field: idCol.name, Message: fmt.Sprintf("the id (column %q) %s; row skipped", idCol.name, problem)})
			continue
		}
		e := entry{id: id}
		if sc.deleted >= 0 {
			del, problem := isDeleted(vals[sc.deleted], &sc.cols[sc.deleted])
			if problem != "" {
				b.Problems = append(b.Problems, sdk.Problem{CustomerID: id, Field: sc.cols[sc.deleted].name, Message: fmt.Sprintf("deleted_column %q %s; row skipped", sc.cols[sc.deleted].name, problem)})
				continue
			}
			e.deleted = del
		}
		if !e.deleted {
			e.traits = p.traits(id, vals, b)
		}
		if i, dup := at[id]; dup {
			b.Problems = append(b.Problems, sdk.Problem{CustomerID: id, Field: idCol.name, Message: fmt.Sprintf("id (column %q) is on more than one row of this page; the row that sorts last (latest updated_at) was kept", idCol.name)})
			entries[i] = e
			continue
		}
		at[id] = len(entries)
		entries = append(entries, e)
	}
	if err := rows.Err(); err != nil {
		return nil, cur, 0, st.pullError(ctx, err)
	}
	rows.Close() // frees the connection for nullIDProblems
	for _, e := range entries {
		if e.deleted {
			b.Deletes = append(b.Deletes, e.id)
		} else {
			b.Customers = append(b.Customers, sdk.Customer{ID: e.id, Traits: e.traits})
		}
	}
	if sc.cols[sc.id].nullable {
		probs, err := p.nullIDProblems(ctx, cur, next, n)
		if err != nil {
			return nil, cur, 0, err
		}
		b.Problems = append(b.Problems, probs...)
	}
	return b, next, n, nil
}

// traits converts one row's trait columns, adding a problem for each value
// that does not convert.
func (p *puller) traits(id string, vals []any, b *sdk.Batch) map[string]sdk.Value {
	sc := p.st.sc
	traits := make(map[string]sdk.Value, len(sc.traits))
	for i := range sc.cols {
		c := &sc.cols[i]
		if c.trait == "" {
			continue
		}
		v, problem := convert(vals[i], c.typ, c, p.pg)
		switch {
		case problem != "":
			b.Problems = append(b.Problems, sdk.Problem{CustomerID: id, Field: c.trait, Message: fmt.Sprintf("column %q (%s): the value %s; the field was skipped", c.name, strings.ToLower(c.typeName), problem)})
		case !v.Null():
			traits[c.trait] = v
		case p.st.set.nulls == nullsClear:
			traits[c.trait] = sdk.Value{}
		}
	}
	return traits
}

// nullIDProblems reports rows without an id: for incremental loading,
// those whose updated_at falls in the page's range (after the previous
// cursor, up to this page's last row); for full reloads, a count at the
// start of each pass.
func (p *puller) nullIDProblems(ctx context.Context, cur, next cursor, n int) ([]sdk.Problem, error) {
	st := p.st
	idName := st.sc.cols[st.sc.id].name
	qctx, cancel := context.WithTimeout(ctx, st.set.timeout)
	defer cancel()
	if !st.plan.incremental() {
		if !cur.ID.IsZero() {
			return nil, nil
		}
		var count int64
		if err := p.db.QueryRowContext(qctx, st.plan.countNullIDs()).Scan(&count); err != nil {
			return nil, st.pullError(ctx, err)
		}
		if count == 0 {
			return nil, nil
		}
		return []sdk.Problem{{Field: idName, Message: fmt.Sprintf("%d rows have no id (column %q is NULL); they were skipped", count, idName)}}, nil
	}
	if n == 0 || next.U == cur.U {
		return nil, nil
	}
	q, args, err := st.plan.nullIDs(cur.U, next.U, maxNullIDReports)
	if err != nil {
		return nil, sdk.Errorf(sdk.InvalidArgument, "cursor", "cursor: %v", err)
	}
	rows, err := p.db.QueryContext(qctx, q, args...)
	if err != nil {
		return nil, st.pullError(ctx, err)
	}
	defer rows.Close()
	var probs []sdk.Problem
	for rows.Next() {
		var u any
		if err := rows.Scan(&u); err != nil {
			return nil, st.pullError(ctx, err)
		}
		k, _ := keyOf(u, st.plan.uCls)
		msg := fmt.Sprintf("a row updated at %s has no id (column %q is NULL); row skipped", k.text, idName)
		if len(probs) == maxNullIDReports-1 {
			msg += "; further such rows up to this page's last row are not reported"
		}
		probs = append(probs, sdk.Problem{Field: idName, Message: msg})
	}
	if err := rows.Err(); err != nil {
		return nil, st.pullError(ctx, err)
	}
	return probs, nil
}
