package csvsource

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/strictyaml"
)

// Defaults for optional config keys.
const (
	defaultDelimiter = ','
	defaultBatch     = 1000
	defaultSeparator = "|"
	// maxBatch keeps one batch, and the host's transaction for it, a
	// sensible size: 10,000 rows of a few dozen traits are a few MiB, well
	// under the SDK's message limit.
	maxBatch = 10000
	// maxEventNames bounds the event names a source declares: a column
	// with more distinct values is not a column of event names.
	maxEventNames = 1000
)

// fileConfig is the instance's config block as written in config.yaml.
type fileConfig struct {
	Path          string                  `yaml:"path"`
	IDColumn      string                  `yaml:"id_column"`
	Email         string                  `yaml:"email"`
	Phone         string                  `yaml:"phone"`
	Timezone      string                  `yaml:"timezone"`
	Columns       map[string]columnConfig `yaml:"columns"`
	Delimiter     *string                 `yaml:"delimiter"`
	Batch         *int                    `yaml:"batch"`
	Watch         *bool                   `yaml:"watch"`
	DeleteMissing bool                    `yaml:"delete_missing"`
	Consent       *consentConfig          `yaml:"consent"`
	Events        *eventsConfig           `yaml:"events"`
}

// UnmarshalStrictYAML decodes the block like any other, then refuses
// "events:" with nothing after it, which would otherwise read as no events
// file at all.
func (c *fileConfig) UnmarshalStrictYAML(d *strictyaml.Decoder, n *yaml.Node, path string) error {
	type plain fileConfig
	if err := d.DecodeNode(n, path, reflect.ValueOf((*plain)(c)).Elem()); err != nil {
		return err
	}
	for i := 0; c.Events == nil && i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Value == "events" {
			return strictyaml.Errorf(d.File, k, "events.path", "events is empty; set events.path and the columns, or remove events")
		}
	}
	return nil
}

type columnConfig struct {
	Type      string  `yaml:"type"`
	Name      string  `yaml:"name"`
	Separator *string `yaml:"separator"`
	Format    string  `yaml:"format"`
	Skip      bool    `yaml:"skip"`
}

type consentConfig struct {
	Column     string `yaml:"column"`
	TimeColumn string `yaml:"time_column"`
}

type eventsConfig struct {
	Path           string    `yaml:"path"`
	IDColumn       string    `yaml:"id_column"`
	CustomerColumn string    `yaml:"customer_column"`
	NameColumn     string    `yaml:"name_column"`
	TimeColumn     string    `yaml:"time_column"`
	ValueColumn    string    `yaml:"value_column"`
	TimeFormat     string    `yaml:"time_format"`
	Names          *[]string `yaml:"names"`
}

// settings is the validated config, before the file's header is read.
type settings struct {
	raw       fileConfig
	path      string // absolute
	delimiter rune
	batch     int
	watch     bool
	events    *eventSettings // nil: no events file
}

// eventSettings is the validated events block.
type eventSettings struct {
	path string // absolute
	// The headers of the columns, in the order of eventRoles; value is ""
	// when not set.
	cols [numEventRoles]string
	// layout is the Go time layout of the time column; "" = RFC 3339.
	layout string
	// names are the declared event names, in config order; nil when they
	// are taken from the file.
	names []string
}

// The columns of an events file, in the order of eventSettings.cols.
const (
	evID = iota
	evCustomer
	evName
	evTime
	evValue
	numEventRoles
)

// eventRoles describes each column of an events file: its config key and
// what it holds.
var eventRoles = [numEventRoles]struct{ key, what string }{
	{"id_column", "event id"},
	{"customer_column", "customer id"},
	{"name_column", "event name"},
	{"time_column", "time"},
	{"value_column", "value"},
}

// parseConfig decodes the config strictly (unknown and duplicate keys and
// values of the wrong type are errors, see sdk.DecodeConfig) and checks the
// parts that do not need the file. Errors are *sdk.Error with code
// InvalidConfig.
func parseConfig(data []byte) (*settings, error) {
	var cfg fileConfig
	if err := sdk.DecodeConfig(data, &cfg); err != nil {
		return nil, err
	}
	s := &settings{raw: cfg, delimiter: defaultDelimiter, batch: defaultBatch, watch: true}
	if cfg.Path == "" {
		return nil, configError("path", "required; set it to the CSV file to read (a relative path is relative to the daemon's working directory)")
	}
	abs, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, configError("path", "cannot make %q absolute: %v", cfg.Path, err)
	}
	s.path = abs
	if cfg.IDColumn == "" {
		return nil, configError("id_column", "required; set it to the header of the column holding the customer id")
	}
	if cfg.Delimiter != nil {
		d := *cfg.Delimiter
		r, n := utf8.DecodeRuneInString(d)
		if n == 0 || n != len(d) || r == utf8.RuneError || r == '"' || r == '\r' || r == '\n' {
			return nil, configError("delimiter", "%q cannot be the delimiter; use one character other than a quote or a line break, e.g. \",\", \";\" or \"\\t\"", d)
		}
		s.delimiter = r
	}
	if cfg.Batch != nil {
		if *cfg.Batch < 1 || *cfg.Batch > maxBatch {
			return nil, configError("batch", "%d is out of range; use 1 to %d customers per batch (default %d)", *cfg.Batch, maxBatch, defaultBatch)
		}
		s.batch = *cfg.Batch
	}
	if cfg.Watch != nil {
		s.watch = *cfg.Watch
	}
	if cfg.Consent != nil && cfg.Consent.Column == "" {
		return nil, configError("consent.column", "required when consent is set; name the column holding yes/no consent to email")
	}
	if cfg.Events != nil {
		ev, err := parseEventsConfig(cfg.Events)
		if err != nil {
			return nil, err
		}
		s.events = ev
	}
	for _, col := range sortedKeys(cfg.Columns) {
		c := cfg.Columns[col]
		field := "columns." + col
		if c.Skip {
			if c.Type != "" || c.Name != "" || c.Separator != nil || c.Format != "" {
				return nil, configError(field, "skip: true with other keys; a skipped column is dropped, so remove the other keys or the skip")
			}
			continue
		}
		if c.Type != "" {
			if _, ok := parseType(c.Type); !ok {
				return nil, configError(field+".type", "unknown type %q; use string, number, bool, time or list", c.Type)
			}
		}
		if c.Name != "" {
			if msg := checkTraitName(c.Name); msg != "" {
				return nil, configError(field+".name", "%q %s; choose another name (letters, digits and _, starting with a letter or _)", c.Name, msg)
			}
		}
		if c.Separator != nil {
			if c.Type != "list" {
				return nil, configError(field+".separator", "applies only to type: list; set type: list or remove separator")
			}
			if *c.Separator == "" {
				return nil, configError(field+".separator", "is empty; use e.g. \"|\" or \";\" (default \"|\")")
			}
		}
		if c.Format != "" && c.Type != "time" {
			return nil, configError(field+".format", "applies only to type: time; set type: time or remove format")
		}
	}
	return s, nil
}

// parseEventsConfig checks the events block.
func parseEventsConfig(cfg *eventsConfig) (*eventSettings, error) {
	if cfg.Path == "" {
		return nil, configError("events.path", "required when events is set; set it to the events CSV file (a relative path is relative to the daemon's working directory)")
	}
	abs, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, configError("events.path", "cannot make %q absolute: %v", cfg.Path, err)
	}
	ev := &eventSettings{path: abs, layout: cfg.TimeFormat}
	ev.cols = [numEventRoles]string{cfg.IDColumn, cfg.CustomerColumn, cfg.NameColumn, cfg.TimeColumn, cfg.ValueColumn}
	why := [numEventRoles]string{
		"the header of the column holding each event's stable id (the daemon deduplicates events by it)",
		"the header of the column holding the customer id",
		"the header of the column holding the event name",
		"the header of the column holding the event time",
	}
	for r := range evValue {
		if ev.cols[r] == "" {
			return nil, configError("events."+eventRoles[r].key, "required when events is set; set it to %s", why[r])
		}
	}
	for r, col := range ev.cols {
		for q := range r {
			if col != "" && ev.cols[q] == col {
				return nil, configError("events."+eventRoles[r].key, "%q is also events.%s; each needs its own column", col, eventRoles[q].key)
			}
		}
	}
	if l := cfg.TimeFormat; l != "" {
		// A layout must at least say the date: one that round-trips a
		// date is one.
		ref := time.Date(2025, 11, 21, 0, 0, 0, 0, time.UTC)
		t, err := time.Parse(l, ref.Format(l))
		if err != nil || t.Year() != ref.Year() || t.YearDay() != ref.YearDay() {
			return nil, configError("events.time_format", "%q is not a Go time layout with a date; write the reference time 2006-01-02 15:04:05 as your file does, e.g. \"2006-01-02 15:04:05\" or \"02/01/2006 15:04\" (default: RFC 3339)", l)
		}
	}
	if cfg.Names != nil {
		names := *cfg.Names
		if len(names) == 0 {
			return nil, configError("events.names", "is empty; list the event names to load, or remove names to take them from the file")
		}
		if len(names) > maxEventNames {
			return nil, configError("events.names", "%d names; at most %d are allowed", len(names), maxEventNames)
		}
		seen := make(map[string]int, len(names))
		for i, n := range names {
			switch {
			case n == "":
				return nil, configError("events.names", "name %d is empty", i+1)
			case strings.TrimSpace(n) != n:
				return nil, configError("events.names", "%q starts or ends with a space; remove it", n)
			}
			if j, dup := seen[n]; dup {
				return nil, configError("events.names", "%q is listed twice (names %d and %d); keep one", n, j+1, i+1)
			}
			seen[n] = i
		}
		ev.names = slices.Clone(names)
	}
	return ev, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
