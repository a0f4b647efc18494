package sqlsource

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
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
// Durations are strings ("30s") so that a bare number is an error, not
// nanoseconds.
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

// knownKeys lists the keys allowed at each level, in the order error
// messages show them.
var knownKeys = map[string][]string{
	"": {"driver", "dsn", "table", "where", "query", "id_column", "updated_at_column", "deleted_column",
		"columns", "email", "phone", "timezone", "batch", "poll", "timeout", "lag", "nulls"},
	"columns": {"type", "name", "skip"},
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

// parseConfig decodes and checks the config without touching the
// database. Errors are *sdk.Error with code InvalidConfig.
func parseConfig(data []byte) (*settings, error) {
	var cfg fileConfig
	if len(bytes.TrimSpace(data)) > 0 {
		if err := decodeStrict(data, &cfg); err != nil {
			return nil, err
		}
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

// decodeStrict decodes data into cfg, rejecting unknown and duplicate keys
// and values of the wrong kind, with errors that name the key and its line.
func decodeStrict(data []byte, cfg *fileConfig) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return configError("", "config is not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	lines := map[int]string{}
	if len(root.Content) > 0 {
		if err := checkKeys(root.Content[0], lines); err != nil {
			return err
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(cfg)
	if err == nil {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return configError("", "config: %v", err)
	}
	return typeError(te.Errors[0], lines)
}

// checkKeys reports unknown and duplicate keys and records which key each
// value's line holds (to name the key in type errors).
func checkKeys(root *yaml.Node, lines map[int]string) error {
	top, err := checkMapping(root, "", knownKeys[""], lines)
	if err != nil {
		return err
	}
	for _, kv := range top {
		if kv[0].Value != "columns" {
			continue
		}
		cols, err := checkMapping(kv[1], "columns", nil, lines)
		if err != nil {
			return err
		}
		for _, c := range cols {
			if _, err := checkMapping(c[1], "columns."+c[0].Value, knownKeys["columns"], lines); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkMapping checks one mapping's keys against allowed (nil: any key)
// and returns its key/value pairs. A null is an empty mapping.
func checkMapping(n *yaml.Node, path string, allowed []string, lines map[int]string) ([][2]*yaml.Node, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		what := "the config"
		if path != "" {
			what = path
		}
		return nil, configError(path, "%s (line %d): must be a mapping of keys to values", what, n.Line)
	}
	var pairs [][2]*yaml.Node
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := k.Value
		if path != "" {
			field = path + "." + k.Value
		}
		if prev, dup := seen[k.Value]; dup {
			return nil, configError(field, "%s (line %d): set twice (first at line %d); keep one", field, k.Line, prev)
		}
		seen[k.Value] = k.Line
		if allowed != nil && !slices.Contains(allowed, k.Value) {
			where := "at the top level"
			if path != "" {
				where = "in " + path
			}
			return nil, configError(field, "%s (line %d): unknown key %s%s; known keys: %s", field, k.Line, where, suggest(k.Value, allowed), strings.Join(allowed, ", "))
		}
		lines[v.Line] = field
		pairs = append(pairs, [2]*yaml.Node{k, v})
	}
	return pairs, nil
}

var typeErrRE = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `?(.*?)`? into (.+)$")

// typeError turns one of yaml.v3's type error lines into a config error
// naming the key.
func typeError(msg string, lines map[int]string) error {
	m := typeErrRE.FindStringSubmatch(msg)
	if m == nil {
		return configError("", "config: %s", msg)
	}
	line, _ := strconv.Atoi(m[1])
	field := lines[line]
	want := m[4]
	switch {
	case strings.HasPrefix(want, "map["), strings.Contains(want, "sqlsource."):
		want = "a mapping"
	case want == "int" || want == "*int":
		want = "a whole number"
	case want == "bool" || want == "*bool":
		want = "true or false"
	case want == "string" || want == "*string":
		want = "a string"
	}
	got := m[3]
	if got == "" {
		got = "a " + m[2]
	} else {
		got = strconv.Quote(got)
	}
	name := field
	if name == "" {
		name = "value"
	}
	return configError(field, "%s (line %d): %s is not %s", name, line, got, want)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// suggest returns ` (did you mean "x"?)` for the known key closest to key,
// or "" if none is close.
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
