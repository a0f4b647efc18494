package tracksource

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/strictyaml"
)

// Defaults for optional config keys.
const (
	defaultPageEvent   = "page_viewed"
	defaultScreenEvent = "screen_viewed"
	defaultEmailOptIn  = "email_opt_in"
	defaultSMSOptIn    = "sms_opt_in"
	// weakKeyLen is the length under which a write key is logged as easy
	// to guess (Segment's are 32 characters).
	weakKeyLen = 16
)

// defaultValueProperties are the event properties read as the event's value,
// first present wins, when value_property is not set.
var defaultValueProperties = []string{"revenue", "value", "total"}

// fileConfig is the instance's config block as written in config.yaml.
type fileConfig struct {
	WriteKeys          []string               `yaml:"write_keys"`
	Traits             map[string]traitConfig `yaml:"traits"`
	Email              *string                `yaml:"email"`
	Phone              *string                `yaml:"phone"`
	Timezone           *string                `yaml:"timezone"`
	Events             []string               `yaml:"events"`
	AllowUnknownEvents *bool                  `yaml:"allow_unknown_events"`
	Anonymous          string                 `yaml:"anonymous"`
	ContextTraits      bool                   `yaml:"context_traits"`
	ValueProperty      string                 `yaml:"value_property"`
	PageEvent          *string                `yaml:"page_event"`
	ScreenEvent        *string                `yaml:"screen_event"`
	Consent            *consentConfig         `yaml:"consent"`
}

// traitConfig declares one trait: `plan: {type: string, from: account.plan}`
// or, as a shorthand, `plan: string`.
type traitConfig struct {
	Type string `yaml:"type"`
	From string `yaml:"from"`
}

// UnmarshalStrictYAML reads the shorthand (a scalar is the type) or the
// mapping, whose keys are checked like any other.
func (c *traitConfig) UnmarshalStrictYAML(d *strictyaml.Decoder, n *yaml.Node, path string) error {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		typ, err := d.Scalar(n, path+".type")
		c.Type = typ
		return err
	}
	type plain traitConfig
	return d.DecodeNode(n, path, reflect.ValueOf((*plain)(c)).Elem())
}

type consentConfig struct {
	Email *string `yaml:"email"`
	SMS   *string `yaml:"sms"`
}

// anonymousMode says what to do with a message that has an anonymousId but
// no userId.
type anonymousMode int

const (
	// anonymousSkip drops the message and reports it.
	anonymousSkip anonymousMode = iota
	// anonymousUse takes the anonymousId as the customer id.
	anonymousUse
)

// traitSpec is one trait of the schema: its name in Cohort, its type, and
// where it is read in a message's traits.
type traitSpec struct {
	name string
	typ  sdk.TraitType
	path []string
}

// consentSpec maps one trait of identify calls to consent for a channel kind.
type consentSpec struct {
	kind string // "email" or "sms"
	path []string
}

// settings is the validated config.
type settings struct {
	// keys are the SHA-256 sums of the write keys, compared in constant time.
	keys     [][sha256.Size]byte
	weakKeys int
	traits   []traitSpec // sorted by name
	// roots are the top-level keys of a message's traits that the schema or
	// the consent mapping reads; other keys are unknown traits.
	roots         map[string]bool
	contact       sdk.ContactFields
	eventNames    []string // declared, in config order, then page and screen
	declared      map[string]bool
	allowUnknown  bool
	anonymous     anonymousMode
	contextTraits bool
	valuePaths    [][]string
	pageEvent     string // "" ignores page calls
	screenEvent   string // "" ignores screen calls
	consent       []consentSpec
}

// parseConfig decodes the config strictly (unknown and duplicate keys and
// values of the wrong type are errors, see sdk.DecodeConfig) and checks it.
// Errors are *sdk.Error with code InvalidConfig.
func parseConfig(data []byte) (*settings, error) {
	var cfg fileConfig
	if err := sdk.DecodeConfig(data, &cfg); err != nil {
		return nil, err
	}
	s := &settings{roots: map[string]bool{}, declared: map[string]bool{}, allowUnknown: true}

	if len(cfg.WriteKeys) == 0 {
		return nil, configError("write_keys", "required; list at least one write key, e.g. write_keys: [\"${TRACK_WRITE_KEY}\"], and give it to your analytics SDKs")
	}
	for i, k := range cfg.WriteKeys {
		field := fmt.Sprintf("write_keys[%d]", i)
		switch {
		case k == "":
			return nil, configError(field, "is empty; set it to a write key (keep keys in the environment: \"${TRACK_WRITE_KEY}\")")
		case strings.ContainsFunc(k, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
			return nil, configError(field, "contains a space, line break or control character (a stray newline in the environment variable?); remove it")
		case strings.Contains(k, ":"):
			return nil, configError(field, "contains \":\", which cannot be sent as the HTTP Basic user name; use a key without it")
		}
		if len(k) < weakKeyLen {
			s.weakKeys++
		}
		s.keys = append(s.keys, sha256.Sum256([]byte(k)))
	}

	for _, name := range slices.Sorted(maps.Keys(cfg.Traits)) {
		tc := cfg.Traits[name]
		field := "traits." + name
		if msg := checkTraitName(name); msg != "" {
			return nil, configError(field, "trait name %q %s; choose a name of letters, digits and _ that starts with a letter or _", name, msg)
		}
		if tc.Type == "" {
			return nil, configError(field+".type", "required; use string, number, bool, time or list")
		}
		typ, ok := sdk.ParseTraitType(tc.Type)
		if !ok {
			return nil, configError(field+".type", "unknown type %q; use string, number, bool, time or list", tc.Type)
		}
		from := tc.From
		if from == "" {
			from = name
		}
		path, ok := parsePath(from)
		if !ok {
			return nil, configError(field+".from", "%q is not a path; write the key in the message's traits, with dots between nested keys, e.g. address.city", tc.From)
		}
		s.traits = append(s.traits, traitSpec{name: name, typ: typ, path: path})
		s.roots[path[0]] = true
	}
	types := make(map[string]sdk.TraitType, len(s.traits))
	for _, t := range s.traits {
		types[t.name] = t.typ
	}
	contact := func(field string, set *string, def string) (string, error) {
		if set == nil {
			if types[def] == sdk.TypeString {
				return def, nil
			}
			return "", nil
		}
		name := *set
		switch typ, ok := types[name]; {
		case name == "":
			return "", nil
		case !ok:
			return "", configError(field, "names trait %q, which is not declared under traits; declare it with type: string", name)
		case typ != sdk.TypeString:
			return "", configError(field, "names trait %q of type %v; a contact trait must be of type string", name, typ)
		}
		return name, nil
	}
	var err error
	if s.contact.Email, err = contact("email", cfg.Email, "email"); err != nil {
		return nil, err
	}
	if s.contact.Phone, err = contact("phone", cfg.Phone, "phone"); err != nil {
		return nil, err
	}
	if s.contact.Timezone, err = contact("timezone", cfg.Timezone, "timezone"); err != nil {
		return nil, err
	}

	for i, name := range cfg.Events {
		field := fmt.Sprintf("events[%d]", i)
		if msg := checkEventName(name); msg != "" {
			return nil, configError(field, "%s", msg)
		}
		if s.declared[name] {
			return nil, configError(field, "event %q is listed twice; keep one", name)
		}
		s.declared[name] = true
		s.eventNames = append(s.eventNames, name)
	}
	if cfg.AllowUnknownEvents != nil {
		s.allowUnknown = *cfg.AllowUnknownEvents
	}

	switch cfg.Anonymous {
	case "", "skip":
		s.anonymous = anonymousSkip
	case "use":
		s.anonymous = anonymousUse
	default:
		return nil, configError("anonymous", "unknown value %q; use skip (drop messages that have only an anonymousId, the default) or use (take the anonymousId as the customer id)", cfg.Anonymous)
	}
	s.contextTraits = cfg.ContextTraits

	if cfg.ValueProperty != "" {
		path, ok := parsePath(cfg.ValueProperty)
		if !ok {
			return nil, configError("value_property", "%q is not a path; name a key of the event's properties, with dots between nested keys", cfg.ValueProperty)
		}
		s.valuePaths = [][]string{path}
	} else {
		for _, p := range defaultValueProperties {
			s.valuePaths = append(s.valuePaths, []string{p})
		}
	}

	callEvent := func(field string, set *string, def string) (string, error) {
		if set == nil {
			return def, nil
		}
		if *set == "" {
			return "", nil
		}
		if msg := checkEventName(*set); msg != "" {
			return "", configError(field, "%s; or set it to \"\" to ignore these calls", msg)
		}
		return *set, nil
	}
	if s.pageEvent, err = callEvent("page_event", cfg.PageEvent, defaultPageEvent); err != nil {
		return nil, err
	}
	if s.screenEvent, err = callEvent("screen_event", cfg.ScreenEvent, defaultScreenEvent); err != nil {
		return nil, err
	}
	for _, name := range []string{s.pageEvent, s.screenEvent} {
		if name != "" && !s.declared[name] {
			s.declared[name] = true
			s.eventNames = append(s.eventNames, name)
		}
	}

	email, sms := defaultEmailOptIn, defaultSMSOptIn
	if cfg.Consent != nil {
		if cfg.Consent.Email != nil {
			email = *cfg.Consent.Email
		}
		if cfg.Consent.SMS != nil {
			sms = *cfg.Consent.SMS
		}
	}
	for _, c := range []struct{ kind, from string }{{"email", email}, {"sms", sms}} {
		if c.from == "" {
			continue
		}
		path, ok := parsePath(c.from)
		if !ok {
			return nil, configError("consent."+c.kind, "%q is not a path; name the key of identify traits that holds the opt-in (true or false), or \"\" to read no %s consent", c.from, c.kind)
		}
		s.consent = append(s.consent, consentSpec{kind: c.kind, path: path})
		s.roots[path[0]] = true
	}
	return s, nil
}

// parsePath splits a dotted path ("address.city") into its keys.
func parsePath(s string) ([]string, bool) {
	parts := strings.Split(s, ".")
	for _, p := range parts {
		if strings.TrimSpace(p) == "" {
			return nil, false
		}
	}
	return parts, true
}

// reserved are words of the rule language (expr) that cannot name a trait.
var reserved = map[string]bool{
	"and": true, "or": true, "not": true, "in": true, "matches": true, "contains": true,
	"let": true, "if": true, "else": true, "true": true, "false": true, "nil": true,
}

// checkTraitName returns "" if name can be used in rules, or what is wrong.
func checkTraitName(name string) string {
	if name == "" {
		return "is empty"
	}
	if reserved[name] {
		return "is a word of the rule language"
	}
	first, _ := utf8.DecodeRuneInString(name)
	if first != '_' && !unicode.IsLetter(first) {
		return "does not start with a letter or _"
	}
	for _, r := range name {
		if r != '_' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			return "is not an identifier"
		}
	}
	return ""
}

// checkEventName returns "" if name can name an event, or what is wrong.
func checkEventName(name string) string {
	switch {
	case name == "":
		return "an event name is empty; name the event as your code tracks it"
	case strings.TrimSpace(name) != name:
		return fmt.Sprintf("event name %q starts or ends with a space; remove it", name)
	case !utf8.ValidString(name):
		return fmt.Sprintf("event name %q is not valid UTF-8", name)
	}
	return ""
}

// configError reports a config the user must change, as an *sdk.Error with
// code InvalidConfig. field is the dotted config key ("traits.plan.type"),
// "" for the block as a whole; the message starts with it.
func configError(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if field != "" && !strings.HasPrefix(msg, field) {
		msg = field + ": " + msg
	}
	return sdk.Errorf(sdk.InvalidConfig, field, "%s", msg)
}
