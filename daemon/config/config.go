// Package config loads and validates config.yaml: strict decoding (an unknown
// key or a wrong type is an error with file:line:col), ${VAR} expansion from
// the environment, and defaults applied in one place (applyDefaults).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cohortd/cohort/sdk/strictyaml"
)

// Config is the daemon's configuration.
type Config struct {
	Storage  Storage   `yaml:"storage"`
	HTTP     HTTP      `yaml:"http"`
	Timezone string    `yaml:"timezone"`
	Rules    Rules     `yaml:"rules"`
	RFM      RFM       `yaml:"rfm"`
	Log      Log       `yaml:"log"`
	Plugins  Plugins   `yaml:"plugins"`
	Sources  Instances `yaml:"sources"`
	Channels Instances `yaml:"channels"`
	Messages Messages  `yaml:"messages"`

	// File is the path the config was read from; Dir its directory. Relative
	// paths in the config (SQLite file, rules dir, plugin binaries) resolve
	// against Dir, and plugins run with Dir as their working directory.
	File string `yaml:"-"`
	Dir  string `yaml:"-"`
	// Location is Timezone loaded.
	Location *time.Location `yaml:"-"`
}

// Storage selects the database.
type Storage struct {
	// Driver is "sqlite" (embedded, default) or "postgres".
	Driver string `yaml:"driver"`
	// DSN is the SQLite file path, or a PostgreSQL URL / keyword DSN.
	DSN string `yaml:"dsn"`
	// MaxOpenConns bounds the connection pool (default 10 on PostgreSQL, 4 on SQLite).
	MaxOpenConns int `yaml:"max_open_conns"`
}

// HTTP configures the daemon's HTTP server.
type HTTP struct {
	Listen string `yaml:"listen"`
	// PublicURL is how the outside world reaches this daemon (links, webhooks).
	PublicURL string `yaml:"public_url"`
	// ShutdownTimeout bounds a graceful stop.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Rules locates the rules directory.
type Rules struct {
	Dir string `yaml:"dir"`
}

// RFM configures the recency/frequency/monetary quintiles rules read as
// rfm.r, rfm.f and rfm.m, recomputed at every full pass.
type RFM struct {
	// Event is the event whose recency, count and value sum are ranked
	// (e.g. purchase); empty disables rfm.* in rules.
	Event string `yaml:"event"`
}

// Messages holds what every message carries and how sends are governed.
type Messages struct {
	// From and ReplyTo are the email sender and reply address.
	From    string `yaml:"from"`
	ReplyTo string `yaml:"reply_to"`
	// PostalAddress is the sender's postal address (CAN-SPAM), available
	// to templates as {{postal_address}}.
	PostalAddress string `yaml:"postal_address"`
	// UnsubscribeSecret signs unsubscribe links (at least 32 bytes); empty:
	// one is generated and kept in the database, shared by every daemon.
	UnsubscribeSecret string `yaml:"unsubscribe_secret"`
	// UnsubscribeTTL is how long an unsubscribe link stays valid (at least
	// 60 days; default 90 days).
	UnsubscribeTTL time.Duration `yaml:"unsubscribe_ttl"`
	// Consent is opt_in (default: message only customers whose latest
	// consent record for the channel kind is an opt-in) or opt_out
	// (everyone not opted out).
	Consent string `yaml:"consent"`
	// MaxAttempts bounds sends of one message on retryable errors.
	MaxAttempts int `yaml:"max_attempts"`
	// UnknownTTL is how long a message whose outcome is unknown waits for
	// the provider's delivery events before it is reported unresolved.
	UnknownTTL time.Duration `yaml:"unknown_ttl"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is auto (text on a terminal, JSON otherwise), text or json.
	Format string `yaml:"format"`
}

// Plugins holds settings shared by all plugin instances.
type Plugins struct {
	// Dir is where a bare plugin name (no slash) is looked up; default bin/plugins.
	Dir string `yaml:"dir"`
	// StartTimeout bounds a plugin's launch and handshake.
	StartTimeout time.Duration `yaml:"start_timeout"`
}

// Instances maps instance names to plugin instances, keeping file order.
type Instances struct {
	Names  []string
	ByName map[string]*Instance
}

// Instance is one configured plugin instance.
type Instance struct {
	Name string `yaml:"-"`
	// Plugin is the binary: a bare name is looked up in plugins.dir, a path
	// resolves against the config file's directory.
	Plugin string `yaml:"plugin"`
	// SHA256, when set, pins the binary's checksum (hex), verified at each launch.
	SHA256 string `yaml:"sha256"`
	// AutoMTLS secures the plugin connection with fresh certificates (default true).
	AutoMTLS *bool `yaml:"automtls"`
	// Timeout is the deadline of each call to the plugin.
	Timeout time.Duration `yaml:"timeout"`
	// Kind overrides a channel's kind where the plugin allows it.
	Kind string `yaml:"kind"`
	// Concurrency is how many calls may be in flight at once (channels).
	Concurrency int `yaml:"concurrency"`
	// Rate is the most messages per second (channels; 0 = the plugin's hint or unlimited).
	Rate float64 `yaml:"rate"`
	// Batch is the most messages per Send (channels; 0 = the plugin's max batch).
	Batch int `yaml:"batch"`
	// OnUnknown is "report" (default: never resend a message whose outcome is
	// unknown) or "resend".
	OnUnknown string `yaml:"on_unknown"`
	// Config is the block passed to the plugin's Configure, as YAML.
	Config yaml.Node `yaml:"config"`

	// Line and Column locate the instance in the file.
	Line, Column int `yaml:"-"`
}

// ConfigYAML returns the instance's config block re-encoded as YAML, with
// ${VAR} already expanded. Empty when there is none.
func (in *Instance) ConfigYAML() []byte {
	if in.Config.Kind == 0 || in.Config.Tag == "!!null" {
		return nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&in.Config); err != nil {
		return nil // a node parsed from YAML always re-encodes
	}
	return buf.Bytes()
}

// AutoMTLSEnabled reports whether AutoMTLS is on (the default).
func (in *Instance) AutoMTLSEnabled() bool { return in.AutoMTLS == nil || *in.AutoMTLS }

// UnmarshalStrictYAML decodes a mapping of instance names, keeping order.
func (is *Instances) UnmarshalStrictYAML(d *strictyaml.Decoder, n *yaml.Node, path string) error {
	is.ByName = map[string]*Instance{}
	return d.Mapping(n, path, func(key string, k, v *yaml.Node) error {
		in := &Instance{Name: key, Line: k.Line, Column: k.Column}
		if err := d.DecodeNode(v, path+"."+key, reflectValue(in)); err != nil {
			return err
		}
		is.Names = append(is.Names, key)
		is.ByName[key] = in
		return nil
	})
}

// EnvPluginsDir names the environment variable that overrides plugins.dir.
const EnvPluginsDir = "COHORT_PLUGINS_DIR"

// Load reads, decodes and validates the config file at path, resolving
// relative paths against its directory.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: config file not found; pass --config FILE or create it (see docs/config.md)", path)
		}
		return nil, fmt.Errorf("%s: cannot read config: %w", path, err)
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse decodes and validates config data read from file.
func Parse(file string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	root, err := strictyaml.Parse(file, data)
	if err != nil {
		return nil, err
	}
	c := &Config{File: file}
	if root != nil {
		d := strictyaml.NewDecoder(file, strictyaml.Options{ExpandEnv: true, LookupEnv: lookupEnv})
		if err := d.DecodeNode(root, "", reflectValue(c)); err != nil {
			return nil, err
		}
	}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	c.Dir = dir
	// COHORT_PLUGINS_DIR overrides plugins.dir (packaged installs keep
	// plugins elsewhere; tests point it at freshly built binaries).
	if v, ok := lookupEnv(EnvPluginsDir); ok && v != "" {
		c.Plugins.Dir = v
	}
	c.applyDefaults()
	if err := c.validate(root); err != nil {
		return nil, err
	}
	return c, nil
}

// applyDefaults is the one place defaults live.
func (c *Config) applyDefaults() {
	if c.Storage.Driver == "" {
		c.Storage.Driver = "sqlite"
	}
	if c.Storage.Driver == "sqlite" && c.Storage.DSN == "" {
		c.Storage.DSN = "var/cohort.db"
	}
	if c.Storage.MaxOpenConns == 0 {
		c.Storage.MaxOpenConns = 10
		if c.Storage.Driver == "sqlite" {
			c.Storage.MaxOpenConns = 4
		}
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:8080"
	}
	if c.HTTP.PublicURL == "" {
		c.HTTP.PublicURL = "http://" + c.HTTP.Listen
	}
	c.HTTP.PublicURL = strings.TrimRight(c.HTTP.PublicURL, "/")
	if c.HTTP.ShutdownTimeout == 0 {
		c.HTTP.ShutdownTimeout = 30 * time.Second
	}
	if c.Timezone == "" {
		c.Timezone = "UTC"
	}
	if c.Rules.Dir == "" {
		c.Rules.Dir = "rules"
	}
	if c.Messages.UnsubscribeTTL == 0 {
		c.Messages.UnsubscribeTTL = 90 * 24 * time.Hour
	}
	if c.Messages.Consent == "" {
		c.Messages.Consent = "opt_in"
	}
	if c.Messages.MaxAttempts == 0 {
		c.Messages.MaxAttempts = 8
	}
	if c.Messages.UnknownTTL == 0 {
		c.Messages.UnknownTTL = 72 * time.Hour
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "auto"
	}
	if c.Plugins.Dir == "" {
		c.Plugins.Dir = "bin/plugins"
	}
	if c.Plugins.StartTimeout == 0 {
		c.Plugins.StartTimeout = 30 * time.Second
	}
	for _, is := range []Instances{c.Sources, c.Channels} {
		for _, in := range is.ByName {
			if in.Timeout == 0 {
				in.Timeout = 30 * time.Second
			}
			if in.Concurrency == 0 {
				in.Concurrency = 4
			}
			if in.OnUnknown == "" {
				in.OnUnknown = "report"
			}
		}
	}
}

var instanceName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// validate checks values; errors point at the offending key when it was set.
func (c *Config) validate(root *yaml.Node) error {
	at := func(path, format string, args ...any) error {
		// Point at the key's value, or at the nearest enclosing key that was set.
		n := lookup(root, path)
		for p := path; n == nil && strings.Contains(p, "."); {
			p = p[:strings.LastIndex(p, ".")]
			n = lookup(root, p)
		}
		e := &strictyaml.Error{File: c.File, Path: path, Msg: fmt.Sprintf(format, args...)}
		if n != nil {
			e.Line, e.Column = n.Line, n.Column
		}
		return e
	}
	switch c.Storage.Driver {
	case "sqlite":
	case "postgres":
		if c.Storage.DSN == "" {
			return at("storage.dsn", "is required for the postgres driver, e.g. postgres://user@127.0.0.1:5432/cohort")
		}
	default:
		return at("storage.driver", "%q is not a storage driver: use sqlite or postgres", c.Storage.Driver)
	}
	if c.Storage.MaxOpenConns < 0 {
		return at("storage.max_open_conns", "must be 1 or more")
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		return at("http.listen", "%q is not host:port, e.g. 127.0.0.1:8080", c.HTTP.Listen)
	}
	u, err := url.Parse(c.HTTP.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return at("http.public_url", "%q is not an absolute http(s) URL, e.g. https://cohort.example.com", c.HTTP.PublicURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return at("http.public_url", "%q must not have a query or fragment", c.HTTP.PublicURL)
	}
	if c.HTTP.ShutdownTimeout < 0 {
		return at("http.shutdown_timeout", "must be positive")
	}
	loc, err := time.LoadLocation(c.Timezone)
	if err != nil {
		return at("timezone", "%q is not a time zone: use an IANA name such as UTC or Europe/Berlin", c.Timezone)
	}
	c.Location = loc
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return at("log.level", "%q is not a log level: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		return at("log.format", "%q is not a log format: use auto, text or json", c.Log.Format)
	}
	if s := c.Messages.UnsubscribeSecret; s != "" && len(s) < 32 {
		return at("messages.unsubscribe_secret", "is %d bytes; use at least 32 random bytes (e.g. `openssl rand -base64 48`), or leave it out to have one generated", len(s))
	}
	if c.Messages.UnsubscribeTTL < 60*24*time.Hour {
		return at("messages.unsubscribe_ttl", "is %s; unsubscribe links must stay valid at least 60 days (1440h)", c.Messages.UnsubscribeTTL)
	}
	switch c.Messages.Consent {
	case "opt_in", "opt_out":
	default:
		return at("messages.consent", "%q is not allowed: use opt_in (message only customers who opted in) or opt_out (everyone not opted out)", c.Messages.Consent)
	}
	if c.Messages.MaxAttempts < 1 {
		return at("messages.max_attempts", "must be 1 or more")
	}
	if c.Messages.UnknownTTL < 0 {
		return at("messages.unknown_ttl", "must be positive")
	}
	seen := map[string]string{}
	for _, group := range []struct {
		key string
		is  Instances
	}{{"sources", c.Sources}, {"channels", c.Channels}} {
		for _, name := range group.is.Names {
			in := group.is.ByName[name]
			p := group.key + "." + name
			if !instanceName.MatchString(name) {
				return at(p, "instance name %q must be lower case letters, digits, _ or -, starting with a letter", name)
			}
			if other, dup := seen[name]; dup {
				return at(p, "instance name %q is already used in %s; names must be unique (webhooks are routed by name)", name, other)
			}
			seen[name] = group.key
			if in.Plugin == "" {
				return at(p, "plugin is required: the plugin binary's name (looked up in plugins.dir) or path")
			}
			if in.SHA256 != "" && !isHex64(in.SHA256) {
				return at(p+".sha256", "must be 64 hex digits, as printed by `sha256sum BINARY`")
			}
			if in.Timeout < 0 {
				return at(p+".timeout", "must be positive")
			}
			if in.Concurrency < 1 {
				return at(p+".concurrency", "must be 1 or more")
			}
			if in.Rate < 0 {
				return at(p+".rate", "must be 0 (unlimited) or more")
			}
			if in.Batch < 0 {
				return at(p+".batch", "must be 0 (the plugin's maximum) or more")
			}
			switch in.OnUnknown {
			case "report", "resend":
			default:
				return at(p+".on_unknown", "%q is not allowed: use report (never resend a message whose outcome is unknown) or resend", in.OnUnknown)
			}
			if group.key == "sources" {
				for _, k := range []string{"kind", "concurrency", "rate", "batch", "on_unknown"} {
					if lookup(root, p+"."+k) != nil {
						return at(p+"."+k, "applies to channels only; remove it from source %q", name)
					}
				}
			} else if in.Kind != "" {
				switch in.Kind {
				case "email", "sms", "webhook":
				default:
					return at(p+".kind", "%q is not a channel kind: use email, sms or webhook", in.Kind)
				}
			}
		}
	}
	return nil
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

// lookup finds the value node at a dotted path in the document, or nil.
func lookup(n *yaml.Node, path string) *yaml.Node {
	for _, key := range strings.Split(path, ".") {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
				break
			}
		}
		n = next
	}
	return n
}

// Path resolves p against the config file's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// PluginPath resolves an instance's plugin binary: a bare name is looked up
// in plugins.dir, anything with a slash resolves against the config dir.
func (c *Config) PluginPath(in *Instance) string {
	if !strings.ContainsRune(in.Plugin, '/') {
		return filepath.Join(c.Path(c.Plugins.Dir), in.Plugin)
	}
	return c.Path(in.Plugin)
}

// SQLitePath is the SQLite database file, resolved (only for driver sqlite).
func (c *Config) SQLitePath() string { return c.Path(c.Storage.DSN) }

// InstanceNames lists all instance names, sorted.
func (c *Config) InstanceNames() []string {
	var names []string
	names = append(names, c.Sources.Names...)
	names = append(names, c.Channels.Names...)
	sort.Strings(names)
	return names
}

func reflectValue(p any) reflect.Value { return reflect.ValueOf(p).Elem() }
