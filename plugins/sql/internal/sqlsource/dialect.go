package sqlsource

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// dialect is what differs between PostgreSQL and MySQL/MariaDB: connecting,
// quoting, placeholders, the keyset predicate, the clock, type names and
// error codes.
type dialect interface {
	// title is the database's name for messages.
	title() string
	exampleDSN() string
	// open parses dsn and returns a pool (not yet connected) and what
	// messages may say about the server. Parse errors are config errors
	// that never contain the password.
	open(dsn string, timeout time.Duration, log *slog.Logger) (*sql.DB, server, error)
	quote(ident string) string
	placeholder(n int) string
	// after is the keyset predicate "(u, id) > (cursor's u, cursor's
	// id)" on the quoted columns u and id; each call of cu or cid adds the
	// cursor's value as an argument and returns its placeholder.
	after(u, id string, cu, cid func() string) string
	// lagBound is the latest updated_at a page reads: now minus lag, by
	// the database's clock.
	lagBound(lag time.Duration) string
	// param wraps a placeholder for a column of class c where the
	// database would otherwise compare it wrongly.
	param(c class, ph string) string
	// classOf classifies a column from its database type name (as
	// database/sql's ColumnType.DatabaseTypeName gives it) and, for
	// tables, its catalog entry.
	classOf(typeName string, cat catalogColumn) class
	// catalog returns what the system catalog adds to a table's result
	// columns, keyed by column name.
	catalog(ctx context.Context, db *sql.DB, table []string) (map[string]catalogColumn, error)
	// classify sorts a driver error into what the user can do about it.
	classify(err error) dbError
}

// server is what error messages may say about the database: never the
// password, which is kept only to scrub it from driver messages.
type server struct {
	addr     string
	database string
	user     string
	password string
}

// scrub removes the password from a driver message, in case one quotes it.
func (s server) scrub(msg string) string {
	if len(s.password) >= 3 {
		msg = strings.ReplaceAll(msg, s.password, "xxxxx")
	}
	return msg
}

// catalogColumn is what a table's catalog says about one column.
type catalogColumn struct {
	notNull bool
	// columnType is MySQL's COLUMN_TYPE ("tinyint(1)"), lower case.
	columnType string
}

// errKind is what a database error means for the user.
type errKind int

const (
	errOther       errKind = iota
	errUnreachable         // no answer from the server, or the connection broke
	errAuth                // user or password refused
	errNoDatabase
	errNoTable
	errNoColumn
	errQuery      // the server rejected the SQL (syntax, types, functions)
	errPermission // the user may not read it
	errTimeout
)

type dbError struct {
	kind errKind
	// msg is the server's message (without the password), or the
	// driver's for errors that did not come from the server.
	msg string
	// code is the SQLSTATE or MySQL error number, "" if none.
	code string
}

// classifyCommon handles errors that are the same on both drivers.
func classifyCommon(err error) (dbError, bool) {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return dbError{kind: errTimeout, msg: err.Error()}, true
	case errors.Is(err, driver.ErrBadConn), errors.As(err, &ne):
		return dbError{kind: errUnreachable, msg: netMessage(err)}, true
	}
	return dbError{}, false
}

// netMessage is the innermost useful text of a network error: "dial tcp
// 127.0.0.1:1: connect: connection refused".
func netMessage(err error) string {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Error()
	}
	return err.Error()
}

// --- PostgreSQL ---------------------------------------------------------------

type postgres struct{}

func (postgres) title() string { return "PostgreSQL" }
func (postgres) exampleDSN() string {
	return "postgres://cohort:${CRM_PASSWORD}@crm-db:5432/crm"
}

// open reads times in UTC unless the DSN sets timezone: see the comment in
// the body.
func (postgres) open(dsn string, _ time.Duration, _ *slog.Logger) (*sql.DB, server, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx replaces the password in its parse errors.
		return nil, server{}, configError("dsn", "not a PostgreSQL connection string (%v); write it as postgres://user:password@host:5432/database or as key=value pairs (host=... dbname=...)", parseErrorText(err))
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "cohort-sql"
	}
	// pgx reads timestamp (without time zone) values as UTC; a UTC session
	// makes the database compare them with now() the same way.
	hasTZ := false
	for k := range cfg.RuntimeParams {
		hasTZ = hasTZ || strings.EqualFold(k, "timezone")
	}
	if !hasTZ {
		cfg.RuntimeParams["timezone"] = "UTC"
	}
	srv := server{addr: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), database: cfg.Database, user: cfg.User, password: cfg.Password}
	if strings.HasPrefix(cfg.Host, "/") {
		srv.addr = cfg.Host
	}
	return stdlib.OpenDB(*cfg), srv, nil
}

// parseErrorText shortens pgx's "cannot parse `...`: reason" to the reason.
func parseErrorText(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "`: "); i >= 0 && strings.HasPrefix(msg, "cannot parse `") {
		msg = msg[i+3:]
	}
	return msg
}

func (postgres) quote(ident string) string {
	return `"` + strings.ReplaceAll(ident, `"`, `""`) + `"`
}

func (postgres) placeholder(n int) string { return "$" + strconv.Itoa(n) }

// after uses a row comparison, which PostgreSQL answers from an index on
// (u, id).
func (postgres) after(u, id string, cu, cid func() string) string {
	return fmt.Sprintf("(%s, %s) > (%s, %s)", u, id, cu(), cid())
}

func (postgres) lagBound(lag time.Duration) string {
	return fmt.Sprintf("now() - interval '%d microseconds'", lag.Microseconds())
}

func (postgres) param(_ class, ph string) string { return ph }

func (postgres) classOf(name string, _ catalogColumn) class {
	if strings.HasPrefix(name, "_") {
		return classArray
	}
	switch name {
	case "INT2", "INT4", "INT8", "OID", "XID", "CID":
		return classInt
	case "FLOAT4", "FLOAT8":
		return classFloat
	case "NUMERIC":
		return classDecimal
	case "BOOL":
		return classBool
	case "DATE", "TIMESTAMP", "TIMESTAMPTZ":
		return classTime
	case "JSON", "JSONB":
		return classJSON
	case "BYTEA":
		return classBinary
	}
	return classText
}

func (d postgres) catalog(ctx context.Context, db *sql.DB, table []string) (map[string]catalogColumn, error) {
	quoted := make([]string, len(table))
	for i, p := range table {
		quoted[i] = d.quote(p)
	}
	rows, err := db.QueryContext(ctx, `SELECT a.attname, a.attnotnull FROM pg_catalog.pg_attribute a
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`, strings.Join(quoted, "."))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cat := map[string]catalogColumn{}
	for rows.Next() {
		var name string
		var c catalogColumn
		if err := rows.Scan(&name, &c.notNull); err != nil {
			return nil, err
		}
		cat[name] = c
	}
	return cat, rows.Err()
}

func (postgres) classify(err error) dbError {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		e := dbError{msg: pe.Message, code: pe.Code}
		switch {
		case pe.Code == "28P01" || pe.Code == "28000":
			e.kind = errAuth
		case pe.Code == "3D000":
			e.kind = errNoDatabase
		case pe.Code == "42P01" || pe.Code == "3F000": // undefined table, schema
			e.kind = errNoTable
		case pe.Code == "42703":
			e.kind = errNoColumn
		case pe.Code == "42501":
			e.kind = errPermission
		case pe.Code == "57014": // canceled: statement_timeout or our context
			e.kind = errTimeout
		case strings.HasPrefix(pe.Code, "42"), strings.HasPrefix(pe.Code, "22"):
			e.kind = errQuery
		case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "53"), strings.HasPrefix(pe.Code, "57P"):
			e.kind = errUnreachable
		}
		return e
	}
	if e, ok := classifyCommon(err); ok {
		return e
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return dbError{kind: errUnreachable, msg: err.Error()}
	}
	return dbError{msg: err.Error()}
}

// --- MySQL and MariaDB --------------------------------------------------------

type mysql struct{}

func (mysql) title() string      { return "MySQL" }
func (mysql) exampleDSN() string { return "cohort:${CRM_PASSWORD}@tcp(crm-db:3306)/crm" }

// open forces parseTime (DATETIME and TIMESTAMP become times) and, unless
// the DSN says otherwise, reads times in UTC: loc=UTC and a session
// time_zone of +00:00, so that TIMESTAMP columns and NOW() agree with the
// times the driver returns.
func (mysql) open(dsn string, timeout time.Duration, log *slog.Logger) (*sql.DB, server, error) {
	if strings.Contains(dsn, "://") {
		return nil, server{}, configError("dsn", "MySQL connection strings are not URLs; write user:password@tcp(host:3306)/database")
	}
	cfg, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		return nil, server{}, configError("dsn", "not a MySQL connection string (%v); write it as user:password@tcp(host:3306)/database", err)
	}
	cfg.ParseTime = true
	if cfg.Loc == nil {
		cfg.Loc = time.UTC
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	if _, ok := cfg.Params["time_zone"]; !ok && cfg.Loc == time.UTC {
		cfg.Params["time_zone"] = "'+00:00'"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = timeout
	}
	cfg.Logger = driverLogger{log}
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return nil, server{}, configError("dsn", "%v", err)
	}
	return sql.OpenDB(conn), server{addr: cfg.Addr, database: cfg.DBName, user: cfg.User, password: cfg.Passwd}, nil
}

// driverLogger sends go-sql-driver's messages to the plugin's logger
// rather than to stderr as plain text.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) { l.log.Warn("mysql driver: " + fmt.Sprint(v...)) }

func (mysql) quote(ident string) string {
	return "`" + strings.ReplaceAll(ident, "`", "``") + "`"
}

func (mysql) placeholder(int) string { return "?" }

// after spells the row comparison out: MySQL and MariaDB do not always use
// an index for (u, id) > (?, ?), but do for this form.
func (mysql) after(u, id string, cu, cid func() string) string {
	return fmt.Sprintf("%s >= %s AND (%s > %s OR %s > %s)", u, cu(), u, cu(), id, cid())
}

func (mysql) lagBound(lag time.Duration) string {
	return fmt.Sprintf("NOW(6) - INTERVAL %d MICROSECOND", lag.Microseconds())
}

// param makes MySQL compare a DECIMAL column with a decimal: given a
// string it would compare both as floating-point numbers.
func (mysql) param(c class, ph string) string {
	if c == classDecimal {
		return "CAST(" + ph + " AS DECIMAL(65,30))"
	}
	return ph
}

func (mysql) classOf(name string, cat catalogColumn) class {
	switch cat.columnType {
	case "tinyint(1)", "bit(1)":
		return classBool
	}
	switch strings.TrimPrefix(name, "UNSIGNED ") {
	case "TINYINT", "SMALLINT", "MEDIUMINT", "INT", "BIGINT", "YEAR":
		return classInt
	case "FLOAT", "DOUBLE":
		return classFloat
	case "DECIMAL":
		return classDecimal
	case "BIT":
		return classBit
	case "DATE", "DATETIME", "TIMESTAMP":
		return classTime
	case "JSON":
		return classJSON
	case "SET":
		return classSet
	case "BLOB", "TINYBLOB", "MEDIUMBLOB", "LONGBLOB", "BINARY", "VARBINARY", "GEOMETRY", "VECTOR":
		return classBinary
	}
	return classText
}

func (mysql) catalog(ctx context.Context, db *sql.DB, table []string) (map[string]catalogColumn, error) {
	var schema any // NULL: the connection's database
	name := table[len(table)-1]
	if len(table) == 2 {
		schema = table[0]
	}
	rows, err := db.QueryContext(ctx, `SELECT COLUMN_NAME, LOWER(COLUMN_TYPE), IS_NULLABLE FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?`, schema, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cat := map[string]catalogColumn{}
	for rows.Next() {
		var col, nullable string
		var c catalogColumn
		if err := rows.Scan(&col, &c.columnType, &nullable); err != nil {
			return nil, err
		}
		c.notNull = nullable == "NO"
		cat[col] = c
	}
	return cat, rows.Err()
}

func (mysql) classify(err error) dbError {
	var me *mysqldrv.MySQLError
	if errors.As(err, &me) {
		e := dbError{msg: me.Message, code: strconv.Itoa(int(me.Number)), kind: errQuery}
		switch me.Number {
		case 1045, 1698: // access denied (password, unix_socket)
			e.kind = errAuth
		case 1049:
			e.kind = errNoDatabase
		case 1146:
			e.kind = errNoTable
		case 1054:
			e.kind = errNoColumn
		case 1044, 1142, 1143, 1227:
			e.kind = errPermission
		case 1317, 1969, 3024: // interrupted, MariaDB max_statement_time, MySQL max_execution_time
			e.kind = errTimeout
		case 1040, 1053, 1203, 1205, 1213, 2002, 2003, 2006, 2013:
			e.kind = errUnreachable
		}
		return e
	}
	if e, ok := classifyCommon(err); ok {
		return e
	}
	if errors.Is(err, mysqldrv.ErrInvalidConn) {
		return dbError{kind: errUnreachable, msg: err.Error()}
	}
	return dbError{msg: err.Error()}
}
