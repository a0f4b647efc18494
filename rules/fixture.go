package rules

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/strictyaml"
)

// Fixtures
//
// Fixtures are YAML files in the fixtures/ subdirectory of the rules
// directory (FixturesDir). Each sets the evaluation time and lists example
// customers with what they must and must not be in:
//
//	version: 1
//	now: 2026-11-24T12:00:00Z        # or a date: 2026-11-24 (UTC midnight)
//	customers:
//	  alice:
//	    traits: {country: DE, age: 31, signed_up_at: 2026-11-20, interests: [running], vip: true}
//	    events:
//	      - {name: purchase, time: 2026-08-01T10:00:00Z, value: 42.5}
//	      - {name: page_view, time: 2026-11-23}
//	    consent: {email: opt_in, sms: opt_out}
//	    rfm: {r: 5, f: 4, m: 3}        # optional: else computed over the fixture's customers
//	    must_be_in: [lapsed_buyers]
//	    must_not_be_in: [new_mobile]
//	    campaigns:                     # arm and outcome per campaign (docs/campaigns.md)
//	      winback: {arm: a, outcome: sent}
//
// A trait set to null (or left out) is missing.

// FixturesDir is the subdirectory of the rules directory holding fixtures.
const FixturesDir = "fixtures"

// Fixture is one fixture file.
type Fixture struct {
	File      string
	Now       time.Time
	Customers []*FixtureCustomer
}

// FixtureCustomer is an example customer and what it must get.
type FixtureCustomer struct {
	ID      string
	Pos     Pos
	Traits  map[string]sdk.Value
	Events  []EventRecord
	Consent map[string]sdk.ConsentStatus
	// RFM, when R is not 0, sets the customer's quintiles.
	RFM         [3]uint8
	MustBeIn    []Expectation
	MustNotBeIn []Expectation
	Campaigns   map[string]CampaignExpectation
}

// Expectation names a segment, where the fixture names it.
type Expectation struct {
	Segment string
	Pos     Pos
}

// CampaignExpectation is the arm and outcome a customer must get.
type CampaignExpectation struct {
	Arm     string
	Outcome string
	Pos     Pos
}

// FixtureFailure is a customer not where its fixture says it must be, with
// the explanation of the segment's rule for it.
type FixtureFailure struct {
	Pos      Pos
	Customer string
	Segment  string
	// Want is true for must_be_in.
	Want    bool
	Explain *Explanation
}

func (f *FixtureFailure) Error() string {
	var b strings.Builder
	if f.Want {
		fmt.Fprintf(&b, "%s: customer %q must be in segment %q but is not\n", f.Pos, f.Customer, f.Segment)
	} else {
		fmt.Fprintf(&b, "%s: customer %q must not be in segment %q but is\n", f.Pos, f.Customer, f.Segment)
	}
	if f.Explain != nil {
		for _, line := range strings.Split(strings.TrimRight(f.Explain.String(), "\n"), "\n") {
			b.WriteString("    " + line + "\n")
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// LoadFixtures loads dir/*.yaml and dir/*.yml as fixtures; a missing dir
// means no fixtures. Traits are typed by schema.
func LoadFixtures(dir string, schema Schema) ([]*Fixture, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fixtures: %w", err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || !isYAML(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("fixtures: %w", err)
		}
		files[path] = data
	}
	return LoadFixtureFiles(files, schema)
}

// LoadFixtureFiles loads fixtures given as file name -> content.
func LoadFixtureFiles(files map[string][]byte, schema Schema) ([]*Fixture, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*Fixture
	var errs []error
	for _, name := range names {
		f, ferrs := loadFixture(name, files[name], schema)
		errs = append(errs, ferrs...)
		if len(ferrs) == 0 {
			out = append(out, f)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

type fixtureCustomerYAML struct {
	Traits      yaml.Node                   `yaml:"traits"`
	Events      []node[fixtureEventYAML]    `yaml:"events"`
	Consent     map[string]node[string]     `yaml:"consent"`
	RFM         node[rfmYAML]               `yaml:"rfm"`
	MustBeIn    []node[string]              `yaml:"must_be_in"`
	MustNotBeIn []node[string]              `yaml:"must_not_be_in"`
	Campaigns   map[string]node[expectYAML] `yaml:"campaigns"`
}

type fixtureEventYAML struct {
	Name  node[string]  `yaml:"name"`
	Time  node[string]  `yaml:"time"`
	Value node[float64] `yaml:"value"`
}

type rfmYAML struct {
	R node[int] `yaml:"r"`
	F node[int] `yaml:"f"`
	M node[int] `yaml:"m"`
}

type expectYAML struct {
	Arm     node[string] `yaml:"arm"`
	Outcome node[string] `yaml:"outcome"`
}

func loadFixture(file string, data []byte, schema Schema) (*Fixture, []error) {
	var errs []error
	errorf := func(n *yaml.Node, path, format string, args ...any) {
		errs = append(errs, strictyaml.Errorf(file, n, path, format, args...))
	}
	root, err := strictyaml.Parse(file, data)
	if err != nil {
		return nil, []error{err}
	}
	if root == nil || root.Kind != yaml.MappingNode {
		return nil, []error{&strictyaml.Error{File: file, Msg: "a fixture is a mapping with version: 1, now: and customers:"}}
	}
	d := strictyaml.NewDecoder(file, strictyaml.Options{})
	f := &Fixture{File: file}
	var version, now, customers *yaml.Node
	err = d.Mapping(root, "", func(key string, k, v *yaml.Node) error {
		switch key {
		case "version":
			version = v
		case "now":
			now = v
		case "customers":
			customers = v
		default:
			errorf(k, "", "unknown key %q at the top level of a fixture (known keys: customers, now, version)", key)
		}
		return nil
	})
	if err != nil {
		return nil, []error{err}
	}
	switch {
	case version == nil:
		errorf(root, "", "version is required: add `version: %d` at the top of the file", Version)
		return nil, errs
	case version.Value != strconv.Itoa(Version):
		errorf(version, "version", "unsupported version %s: the supported version is %d", describe(version), Version)
		return nil, errs
	}
	if now == nil {
		errorf(root, "", "now is required: the time the fixture is evaluated at, e.g. now: 2026-11-24T12:00:00Z")
	} else if t, err := parseFixtureTime(now.Value); err != nil {
		errorf(now, "now", "%v", err)
	} else {
		f.Now = t
	}
	if customers == nil {
		errorf(root, "", "customers is required")
		return nil, errs
	}
	err = d.Mapping(customers, "customers", func(id string, k, v *yaml.Node) error {
		path := "customers." + id
		var y fixtureCustomerYAML
		if err := d.DecodeNode(v, path, reflect.ValueOf(&y).Elem()); err != nil {
			errs = append(errs, err)
			return nil
		}
		c := &FixtureCustomer{ID: id, Pos: posOf(file, k), Traits: map[string]sdk.Value{}, Consent: map[string]sdk.ConsentStatus{}, Campaigns: map[string]CampaignExpectation{}}
		if y.Traits.Kind != 0 {
			err := d.Mapping(&y.Traits, path+".traits", func(name string, tk, tv *yaml.Node) error {
				typ, ok := schema.Traits[name]
				if !ok {
					var names []string
					for n := range schema.Traits {
						names = append(names, n)
					}
					hint := ""
					if s := strictyaml.Closest(name, names); s != "" {
						hint = fmt.Sprintf(" (did you mean %q?)", s)
					}
					errorf(tk, path+".traits", "unknown trait %q%s", name, hint)
					return nil
				}
				val, msg := fixtureValue(typ, tv)
				if msg != "" {
					errorf(tv, path+".traits."+name, "%s", msg)
					return nil
				}
				c.Traits[name] = val
				return nil
			})
			if err != nil {
				errs = append(errs, err)
			}
		}
		for i, ev := range y.Events {
			epath := fmt.Sprintf("%s.events[%d]", path, i)
			e := EventRecord{Name: ev.V.Name.V, Value: ev.V.Value.V}
			if !ev.V.Name.set() || !ev.V.Time.set() {
				errorf(ev.N, epath, "an event needs a name and a time, e.g. {name: purchase, time: 2026-08-01T10:00:00Z, value: 42.5}")
				continue
			}
			known := false
			for _, n := range schema.Events {
				known = known || n == e.Name
			}
			if !known {
				hint := ""
				if s := strictyaml.Closest(e.Name, schema.Events); s != "" {
					hint = fmt.Sprintf(" (did you mean %q?)", s)
				}
				errorf(ev.V.Name.N, epath+".name", "unknown event %q%s", e.Name, hint)
				continue
			}
			t, err := parseFixtureTime(ev.V.Time.V)
			if err != nil {
				errorf(ev.V.Time.N, epath+".time", "%v", err)
				continue
			}
			if d := Day(t); d < 1 || d > math.MaxUint16 {
				errorf(ev.V.Time.N, epath+".time", "event times must be from 1970-01-02 to 2149")
				continue
			}
			if math.IsNaN(e.Value) || math.IsInf(e.Value, 0) {
				errorf(ev.V.Value.N, epath+".value", "the value must be a finite number")
				continue
			}
			e.Time = t
			c.Events = append(c.Events, e)
		}
		for kind, st := range y.Consent {
			switch st.V {
			case "opt_in":
				c.Consent[kind] = sdk.OptIn
			case "opt_out":
				c.Consent[kind] = sdk.OptOut
			default:
				errorf(st.N, path+".consent."+kind, "expected opt_in or opt_out, found %q", st.V)
			}
		}
		if y.RFM.set() {
			q := [3]node[int]{y.RFM.V.R, y.RFM.V.F, y.RFM.V.M}
			for i, x := range q {
				if !x.set() || x.V < 1 || x.V > 5 {
					errorf(y.RFM.N, path+".rfm", "rfm needs r, f and m, each a quintile from 1 to 5")
					break
				}
				c.RFM[i] = uint8(x.V)
			}
		}
		for _, s := range y.MustBeIn {
			c.MustBeIn = append(c.MustBeIn, Expectation{Segment: s.V, Pos: posOf(file, s.N)})
		}
		for _, s := range y.MustNotBeIn {
			c.MustNotBeIn = append(c.MustNotBeIn, Expectation{Segment: s.V, Pos: posOf(file, s.N)})
		}
		for name, e := range y.Campaigns {
			c.Campaigns[name] = CampaignExpectation{Arm: e.V.Arm.V, Outcome: e.V.Outcome.V, Pos: posOf(file, e.N)}
		}
		f.Customers = append(f.Customers, c)
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return f, errs
}

// fixtureValue converts a YAML value to a trait of type t ("" or a message).
func fixtureValue(t sdk.TraitType, n *yaml.Node) (sdk.Value, string) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return sdk.Value{}, ""
	}
	if t == sdk.TypeStringList {
		if n.Kind != yaml.SequenceNode {
			return sdk.Value{}, "expected a list of strings, e.g. [running, travel]"
		}
		l := make([]string, 0, len(n.Content))
		for _, it := range n.Content {
			if it.Kind != yaml.ScalarNode {
				return sdk.Value{}, "expected a list of strings, e.g. [running, travel]"
			}
			l = append(l, it.Value)
		}
		return sdk.List(l...), ""
	}
	if n.Kind != yaml.ScalarNode {
		return sdk.Value{}, fmt.Sprintf("expected a %s, found %s", t, describe(n))
	}
	s := n.Value
	switch t {
	case sdk.TypeString:
		return sdk.String(s), ""
	case sdk.TypeNumber:
		f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
		if err != nil || math.IsNaN(f) {
			return sdk.Value{}, fmt.Sprintf("expected a number, found %q", s)
		}
		return sdk.Number(f), ""
	case sdk.TypeBool:
		switch strings.ToLower(s) {
		case "true", "yes", "on":
			return sdk.Bool(true), ""
		case "false", "no", "off":
			return sdk.Bool(false), ""
		}
		return sdk.Value{}, fmt.Sprintf("expected true or false, found %q", s)
	case sdk.TypeTime:
		tm, err := parseFixtureTime(s)
		if err != nil {
			return sdk.Value{}, err.Error()
		}
		return sdk.Time(tm), ""
	}
	return sdk.Value{}, fmt.Sprintf("traits of type %s are not supported", t)
}

// parseFixtureTime accepts RFC 3339 times and dates (UTC midnight).
func parseFixtureTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: write 2026-11-24 or 2026-11-24T12:00:00Z", s)
}

// RunFixtures evaluates the fixtures against the set. It returns the
// expectations that failed, each with the explanation of the segment's rule
// for the customer; the error reports fixtures that do not fit the set
// (unknown segments, campaigns or arms, customers the schema rejects).
func RunFixtures(set *Set, fixtures []*Fixture) ([]*FixtureFailure, error) {
	var failures []*FixtureFailure
	var errs []error
	for _, f := range fixtures {
		customers := make([]MemCustomer, len(f.Customers))
		for i, c := range f.Customers {
			customers[i] = MemCustomer{ID: c.ID, Traits: c.Traits, Events: c.Events, RFM: c.RFM}
		}
		t, err := NewMemTable(set.cs.Schema, customers)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.File, err))
			continue
		}
		members, err := set.EvalAll(t, f.Now)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.File, err))
			continue
		}
		segNames := make([]string, 0, len(set.segments))
		for _, s := range set.segments {
			segNames = append(segNames, s.Name)
		}
		for i, c := range f.Customers {
			row := uint32(i)
			var explains []*Explanation
			check := func(e Expectation, want bool) {
				m, ok := members[e.Segment]
				if !ok {
					msg := fmt.Sprintf("%s: customer %q: unknown segment %q", e.Pos, c.ID, e.Segment)
					if s := strictyaml.Closest(e.Segment, segNames); s != "" {
						msg += fmt.Sprintf(" (did you mean %q?)", s)
					}
					errs = append(errs, errors.New(msg))
					return
				}
				if m.Has(row) == want {
					return
				}
				if explains == nil {
					explains, err = set.Explain(t, row, f.Now)
					if err != nil {
						errs = append(errs, fmt.Errorf("%s: customer %q: %w", e.Pos, c.ID, err))
					}
				}
				fail := &FixtureFailure{Pos: e.Pos, Customer: c.ID, Segment: e.Segment, Want: want}
				for _, x := range explains {
					if x.Segment == e.Segment {
						fail.Explain = x
					}
				}
				failures = append(failures, fail)
			}
			for _, e := range c.MustBeIn {
				check(e, true)
			}
			for _, e := range c.MustNotBeIn {
				check(e, false)
			}
			campNames := make([]string, 0, len(c.Campaigns))
			for name := range c.Campaigns {
				campNames = append(campNames, name)
			}
			sort.Strings(campNames)
			for _, name := range campNames {
				exp := c.Campaigns[name]
				camp := set.Campaign(name)
				if camp == nil {
					errs = append(errs, fmt.Errorf("%s: customer %q: unknown campaign %q", exp.Pos, c.ID, name))
					continue
				}
				if exp.Arm == "" || exp.Arm == "holdout" {
					continue
				}
				known := false
				for _, v := range camp.Variants {
					known = known || v.Name == exp.Arm
				}
				if !known {
					errs = append(errs, fmt.Errorf("%s: customer %q: campaign %q has no arm %q (its arms: holdout and its variants)", exp.Pos, c.ID, name, exp.Arm))
				}
			}
		}
	}
	return failures, errors.Join(errs...)
}
