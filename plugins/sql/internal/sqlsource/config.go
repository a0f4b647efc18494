package sqlsource

import (
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Defaults and limits of the config keys.
const (
	defaultBatch   = 1000
	maxBatch       = 10000
	defaultPoll    = 30 * time.Second
	minPoll        = 100 * time.Millisecond
	maxPoll        = 24 * time.Hour
	defaultTimeout = 60 * time.Second
	minTimeout     = time.Second
	maxTimeout     = time.Hour
	defaultLag     = 5 * time.Second
	maxLag         = time.Hour
)

// fileConfig is the instance's config block as written in config.yaml.
// Durations are strings ("30s"), checked by parseDuration, so that the error
// for a bare number or a value out of range names the key's own limits.
type fileConfig struct {
	Driver          string                  `yaml:"driver"`
	DSN             string                  `yaml:"dsn"`
	Table           string                  `yaml:"table"`
	Where           string                  `yaml:"where"`
	Query           string                  `yaml:"query"`
	IDColumn        string                  `yaml:"id_column"`
	UpdatedAtColumn string                  `yaml:"updated_at_column"`
	DeletedColumn   string                  `yaml:"deleted_column"`
	Columns         map[string]columnConfig `yaml:"columns"`
	Email           string                  `yaml:"email"`
	Phone           string                  `yaml:"phone"`
	Timezone        string                  `yaml:"timezone"`
	Batch           *int                    `yaml:"batch"`
	Poll            *string                 `yaml:"poll"`
	Timeout         *string                 `yaml:"timeout"`
	Lag             *string                 `yaml:"lag"`
	Nulls           string                  `yaml:"nulls"`
}

type columnConfig struct {
	Type string `yaml:"type"`
	Name string `yaml:"name"`
	Skip bool   `yaml:"skip"`
}

// nullPolicy says what a NULL in a column does to the customer's trait.
type nullPolicy int

const (
	// nullsKeep leaves the trait out of the upsert: the value Cohort
	// already has (from this or another source) is kept.
	nullsKeep nullPolicy = iota
	// nullsClear sends a null, which removes the trait.
	nullsClear
)

// settings is the validated config, before the database is asked anything.
type settings struct {
	dialect  dialect
	dsn      string
	table    []string // schema-qualified name parts; nil with query
	where    string
	query    string
	id       string
	updated  string // "" without incremental loading
	deleted  string
	columns  map[string]columnConfig
	email    string
	phone    string
	timezone string
	batch    int
	poll     time.Duration
	timeout  time.Duration
	lag      time.Duration
	lagSet   bool
	nulls    nullPolicy
}

// parseConfig decodes the config strictly (unknown and duplicate keys and
// values of the wrong type are errors, see sdk.DecodeConfig) and checks it
// without touching the database. Errors are *sdk.Error with code
// InvalidConfig.
func parseConfig(data []byte) (*settings, error) {
	var cfg fileConfig
	if err := sdk.DecodeConfig(data, &cfg); err != nil {
		return nil, err
	}
	s := &settings{
		dsn: cfg.DSN, where: strings.TrimSpace(cfg.Where),
		id: cfg.IDColumn, updated: cfg.UpdatedAtColumn, deleted: cfg.DeletedColumn,
		columns: cfg.Columns, email: cfg.Email, phone: cfg.Phone, timezone: cfg.Timezone,
		batch: defaultBatch, poll: defaultPoll, timeout: defaultTimeout, lag: defaultLag,
	}
	switch cfg.Driver {
	case "":
		return nil, configError("driver", "required; set it to postgres or mysql")
	case "postgres":
		s.dialect = postgres{}
	case "mysql":
		s.dialect = mysql{}
	default:
		return nil, configError("driver", "%q is not supported; use postgres or mysql (mysql also covers MariaDB)", cfg.Driver)
	}
	if strings.TrimSpace(cfg.DSN) == "" {
		return nil, configError("dsn", "required; set it to the connection string, e.g. %s, with the password from an environment variable", s.dialect.exampleDSN())
	}

	table, query := strings.TrimSpace(cfg.Table), strings.TrimSpace(cfg.Query)
	switch {
	case table != "" && query != "":
		return nil, configError("table", "set either table or query, not both")
	case table == "" && query == "":
		return nil, configError("table", "required; set table to the table (or view) holding the customers, or query to a SELECT")
	case table != "":
		parts := strings.Split(table, ".")
		if len(parts) > 2 || slices.Contains(parts, "") {
			return nil, configError("table", "%q is not a table name; write name or schema.name, unquoted (for anything else use query)", cfg.Table)
		}
		s.table = parts
	default:
		if s.where != "" {
			return nil, configError("where", "applies only with table; put the condition in query instead")
		}
		q, err := checkQuery(query)
		if err != nil {
			return nil, err
		}
		s.query = q
	}

	if cfg.IDColumn == "" {
		return nil, configError("id_column", "required; name the column that holds the customer id")
	}
	if cfg.Batch != nil {
		if *cfg.Batch < 1 || *cfg.Batch > maxBatch {
			return nil, configError("batch", "%d is out of range; use 1 to %d rows per batch (default %d)", *cfg.Batch, maxBatch, defaultBatch)
		}
		s.batch = *cfg.Batch
	}
	var err error
	if s.poll, err = parseDuration("poll", cfg.Poll, defaultPoll, minPoll, maxPoll); err != nil {
		return nil, err
	}
	if s.timeout, err = parseDuration("timeout", cfg.Timeout, defaultTimeout, minTimeout, maxTimeout); err != nil {
		return nil, err
	}
	if s.lag, err = parseDuration("lag", cfg.Lag, defaultLag, 0, maxLag); err != nil {
		return nil, err
	}
	s.lagSet = cfg.Lag != nil
	if s.lagSet && s.updated == "" {
		return nil, configError("lag", "applies only with updated_at_column; set updated_at_column or remove lag")
	}
	switch cfg.Nulls {
	case "", "keep":
		s.nulls = nullsKeep
	case "clear":
		s.nulls = nullsClear
	default:
		return nil, configError("nulls", "%q is not keep or clear; keep (the default) leaves a trait as it was when its column is NULL, clear removes it", cfg.Nulls)
	}

	contact := map[string]string{}
	for _, c := range []struct{ key, col string }{{"email", cfg.Email}, {"phone", cfg.Phone}, {"timezone", cfg.Timezone}} {
		if c.col == "" {
			continue
		}
		if prev, dup := contact[c.col]; dup {
			return nil, configError(c.key, "column %q is already the %s column; each contact field needs its own column", c.col, prev)
		}
		contact[c.col] = c.key
	}
	for _, col := range sortedKeys(cfg.Columns) {
		c := cfg.Columns[col]
		field := "columns." + col
		if c.Skip {
			if c.Type != "" || c.Name != "" {
				return nil, configError(field, "skip: true with other keys; a skipped column is not read, so remove the other keys or the skip")
			}
			continue
		}
		if c.Type != "" {
			if _, ok := parseTraitType(c.Type); !ok {
				return nil, configError(field+".type", "unknown type %q; use string, number, bool, time or list", c.Type)
			}
		}
		if c.Name != "" {
			if msg := checkTraitName(c.Name); msg != "" {
				return nil, configError(field+".name", "%q %s; choose another name (ASCII letters, digits and _, starting with a letter or _)", c.Name, msg)
			}
		}
	}
	return s, nil
}

// parseDuration parses a duration key: a Go duration string such as
// "30s", "1m30s" or "500ms", within [lo, hi].
func parseDuration(field string, v *string, def, lo, hi time.Duration) (time.Duration, error) {
	if v == nil {
		return def, nil
	}
	s := strings.TrimSpace(*v)
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return 0, configError(field, "%q has no unit; write e.g. %s (units: ms, s, m, h)", s, fmtDuration(def))
		}
		return 0, configError(field, "%q is not a duration; write e.g. %s (units: ms, s, m, h)", s, fmtDuration(def))
	}
	if d < lo || d > hi {
		return 0, configError(field, "%s is out of range; use %s to %s (default %s)", fmtDuration(d), fmtDuration(lo), fmtDuration(hi), fmtDuration(def))
	}
	return d, nil
}

// fmtDuration prints d without the trailing zero units time.Duration
// prints ("1h" rather than "1h0m0s").
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// leadingComment matches comments and space before a statement's first word.
var leadingComment = regexp.MustCompile(`^(\s+|--[^\n]*(\n|$)|/\*(?s:.*?)\*/)*`)

// checkQuery checks that query is one SELECT (or WITH ... SELECT) and
// returns it without a trailing semicolon, ready to be a subquery.
func checkQuery(query string) (string, error) {
	q := strings.TrimSpace(query)
	for strings.HasSuffix(q, ";") {
		q = strings.TrimSpace(strings.TrimSuffix(q, ";"))
	}
	body := q[len(leadingComment.FindString(q)):]
	word := body
	if i := strings.IndexFunc(body, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') }); i >= 0 {
		word = body[:i]
	}
	switch strings.ToUpper(word) {
	case "SELECT", "WITH":
		return q, nil
	case "":
		return "", configError("query", "must be a SELECT statement; it is empty")
	}
	return "", configError("query", "must be a SELECT (or WITH ... SELECT) statement, not %s; the plugin only reads", strings.ToUpper(word))
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
