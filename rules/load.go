package rules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/cohortd/cohort/sdk/strictyaml"
)

// Version is the rules document format this package reads.
const Version = 1

// DefaultRefresh is the full re-evaluation schedule when a document sets none.
const DefaultRefresh = "*/15 * * * *"

// Pos is a position in a rules file.
type Pos struct {
	File   string
	Line   int
	Column int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

func posOf(file string, n *yaml.Node) Pos {
	if n == nil {
		return Pos{File: file}
	}
	return Pos{File: file, Line: n.Line, Column: n.Column}
}

// LoadOptions are what rules are checked against.
type LoadOptions struct {
	Schema Schema
	// Channels maps channel instance names (config.yaml) to their kind
	// (email, sms, webhook). When nil, campaign channels are not checked.
	Channels map[string]string
}

// Set is a loaded, compiled and validated rules directory.
type Set struct {
	segments  []*Segment
	byName    map[string]*Segment
	campaigns []*Campaign
	policies  map[string]*Policy
	cs        *compiledSchema
	files     []string
}

// Segments returns the segments in dependency order: a segment comes after
// every segment it names with in_segment.
func (s *Set) Segments() []*Segment { return s.segments }

// Segment returns the named segment, or nil.
func (s *Set) Segment(name string) *Segment { return s.byName[name] }

// Campaigns returns the campaigns sorted by name.
func (s *Set) Campaigns() []*Campaign { return s.campaigns }

// Campaign returns the named campaign, or nil.
func (s *Set) Campaign(name string) *Campaign {
	for _, c := range s.campaigns {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Policies returns the send-time policies by channel kind.
func (s *Set) Policies() map[string]*Policy { return s.policies }

// Files lists the rules files the set was loaded from.
func (s *Set) Files() []string { return s.files }

// Segment is one named rule.
type Segment struct {
	Name        string
	Description string
	// When is the rule's expression as written.
	When string
	// Pos is where the segment's name is; WhenPos where its when value is.
	Pos     Pos
	WhenPos Pos
	// MinSize and MaxSize hold campaigns on the segment while it is smaller
	// or larger (0: no bound).
	MinSize, MaxSize int
	// AlertSwing warns when the size moves more than this fraction between
	// passes (0.3 for "30%"; 0: never).
	AlertSwing float64
	// Goal is the segment's KPI event, or nil.
	Goal *Goal
	// Refresh is the full re-evaluation schedule (cron, config timezone):
	// the segment's own, else its document's, else DefaultRefresh.
	Refresh string
	// Deps are the segments it names with in_segment, sorted.
	Deps []string

	cs    *compiledSchema
	prog  *program
	mu    sync.Mutex
	cache *binding
}

// Goal is a KPI event and the window it counts in.
type Goal struct {
	Event  string
	Within time.Duration
}

// LoadDir loads every *.yaml and *.yml file directly in dir (not in
// subdirectories: fixtures live in dir/fixtures). Every problem found is
// returned, joined, each with its file:line:col.
func LoadDir(dir string, opts LoadOptions) (*Set, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !isYAML(name) {
			continue
		}
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		files[path] = data
	}
	return LoadFiles(files, opts)
}

func isYAML(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// LoadFiles loads rules documents given as file name -> content; names are
// used in positions. Files are read in name order.
func LoadFiles(files map[string][]byte, opts LoadOptions) (*Set, error) {
	l := &loader{
		opts:       opts,
		cs:         prepareSchema(opts.Schema),
		segByName:  map[string]*Segment{},
		campByName: map[string]*Campaign{},
		policies:   map[string]*Policy{},
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		l.file(name, files[name])
	}
	set := l.finish()
	set.files = names
	if len(l.errs) > 0 {
		sortErrors(l.errs)
		return nil, errors.Join(l.errs...)
	}
	return set, nil
}

type loader struct {
	opts       LoadOptions
	cs         *compiledSchema
	errs       []error
	segments   []*Segment
	segByName  map[string]*Segment
	campaigns  []*Campaign
	campByName map[string]*Campaign
	policies   map[string]*Policy
	// raw campaign data kept until segments are known.
	pending []*pendingCampaign
}

func (l *loader) errorf(file string, n *yaml.Node, path, format string, args ...any) {
	l.errs = append(l.errs, strictyaml.Errorf(file, n, path, format, args...))
}

// node is a decoded value that remembers where it was; unset when absent
// or null.
type node[T any] struct {
	V T
	N *yaml.Node
}

func (x *node[T]) UnmarshalStrictYAML(d *strictyaml.Decoder, n *yaml.Node, path string) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	x.N = n
	return d.DecodeNode(n, path, reflect.ValueOf(&x.V).Elem())
}

func (x node[T]) set() bool { return x.N != nil }

var topKeys = []string{"campaigns", "policies", "refresh", "segments", "version"}

func (l *loader) file(file string, data []byte) {
	root, err := strictyaml.Parse(file, data)
	if err != nil {
		l.errs = append(l.errs, err)
		return
	}
	if root == nil {
		l.errs = append(l.errs, &strictyaml.Error{File: file, Msg: "empty document: a rules file starts with `version: 1`"})
		return
	}
	if root.Kind != yaml.MappingNode {
		l.errorf(file, root, "", "a rules file is a mapping starting with `version: 1`, found %s", describe(root))
		return
	}
	d := strictyaml.NewDecoder(file, strictyaml.Options{})
	var version *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "version" {
			version = root.Content[i+1]
		}
	}
	if version == nil {
		l.errorf(file, root, "", "version is required: add `version: %d` at the top of the file", Version)
		return
	}
	if version.Kind != yaml.ScalarNode || version.Value != strconv.Itoa(Version) {
		l.errorf(file, version, "version", "unsupported version %s: the supported version is %d", describe(version), Version)
		return
	}
	refresh := DefaultRefresh
	var segNode, campNode, polNode *yaml.Node
	err = d.Mapping(root, "", func(key string, k, v *yaml.Node) error {
		switch key {
		case "version":
		case "refresh":
			s, err := d.Scalar(v, "refresh")
			if err != nil {
				return err
			}
			if msg := checkCron(s); msg != "" {
				l.errorf(file, v, "refresh", "%s", msg)
			} else {
				refresh = s
			}
		case "segments":
			segNode = v
		case "campaigns":
			campNode = v
		case "policies":
			polNode = v
		default:
			hint := ""
			if s := strictyaml.Closest(key, topKeys); s != "" {
				hint = fmt.Sprintf("; did you mean %q?", s)
			}
			l.errorf(file, k, "", "unknown key %q at the top level (known keys: %s)%s", key, strings.Join(topKeys, ", "), hint)
		}
		return nil
	})
	if err != nil {
		l.errs = append(l.errs, err)
		return
	}
	if segNode != nil {
		l.segmentsBlock(d, file, segNode, refresh)
	}
	if campNode != nil {
		l.campaignsBlock(d, file, campNode)
	}
	if polNode != nil {
		l.policiesBlock(d, file, polNode)
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,99}$`)

func (l *loader) checkName(file string, k *yaml.Node, what string) bool {
	if !nameRE.MatchString(k.Value) {
		l.errorf(file, k, "", "invalid %s name %q: use letters, digits, _ and -, starting with a letter", what, k.Value)
		return false
	}
	return true
}

type segmentYAML struct {
	Description node[string]   `yaml:"description"`
	When        node[string]   `yaml:"when"`
	MinSize     node[int]      `yaml:"min_size"`
	MaxSize     node[int]      `yaml:"max_size"`
	AlertSwing  node[string]   `yaml:"alert_swing"`
	Goal        node[goalYAML] `yaml:"goal"`
	Refresh     node[string]   `yaml:"refresh"`
}

type goalYAML struct {
	Event  node[string] `yaml:"event"`
	Within node[string] `yaml:"within"`
}

func (l *loader) segmentsBlock(d *strictyaml.Decoder, file string, n *yaml.Node, refresh string) {
	err := d.Mapping(n, "segments", func(name string, k, v *yaml.Node) error {
		path := "segments." + name
		if !l.checkName(file, k, "segment") {
			return nil
		}
		var y segmentYAML
		if err := d.DecodeNode(v, path, reflect.ValueOf(&y).Elem()); err != nil {
			l.errs = append(l.errs, err)
			return nil
		}
		s := &Segment{Name: name, Pos: posOf(file, k), Description: y.Description.V, Refresh: refresh, cs: l.cs}
		ok := true
		if !y.When.set() || strings.TrimSpace(y.When.V) == "" {
			l.errorf(file, k, path, "when is required: the condition customers of the segment meet, e.g. when: country == \"DE\"")
			ok = false
		} else {
			s.When, s.WhenPos = y.When.V, posOf(file, y.When.N)
		}
		if y.MinSize.set() {
			if y.MinSize.V < 0 {
				l.errorf(file, y.MinSize.N, path+".min_size", "must be 0 or more")
				ok = false
			}
			s.MinSize = y.MinSize.V
		}
		if y.MaxSize.set() {
			if y.MaxSize.V < 1 {
				l.errorf(file, y.MaxSize.N, path+".max_size", "must be 1 or more (leave it out for no maximum)")
				ok = false
			}
			s.MaxSize = y.MaxSize.V
			if y.MinSize.set() && s.MaxSize < s.MinSize {
				l.errorf(file, y.MaxSize.N, path+".max_size", "max_size %d is smaller than min_size %d", s.MaxSize, s.MinSize)
				ok = false
			}
		}
		if y.AlertSwing.set() {
			f, err := parsePercent(y.AlertSwing.V)
			if err != nil || f <= 0 {
				l.errorf(file, y.AlertSwing.N, path+".alert_swing", "write a percentage above 0, e.g. \"30%%\"")
				ok = false
			}
			s.AlertSwing = f / 100
		}
		if y.Goal.set() {
			g, gok := l.goal(file, path+".goal", y.Goal)
			s.Goal, ok = g, ok && gok
		}
		if y.Refresh.set() {
			if msg := checkCron(y.Refresh.V); msg != "" {
				l.errorf(file, y.Refresh.N, path+".refresh", "%s", msg)
				ok = false
			}
			s.Refresh = y.Refresh.V
		}
		if prev := l.segByName[name]; prev != nil {
			l.errorf(file, k, "", "segment %q is defined twice: here and at %s", name, prev.Pos)
			return nil
		}
		l.segByName[name] = s
		if ok {
			l.segments = append(l.segments, s)
		}
		return nil
	})
	if err != nil {
		l.errs = append(l.errs, err)
	}
}

func (l *loader) goal(file, path string, g node[goalYAML]) (*Goal, bool) {
	out := &Goal{}
	ok := true
	if !g.V.Event.set() {
		l.errorf(file, g.N, path, "event is required, e.g. goal: {event: purchase, within: 30d}")
		ok = false
	} else {
		out.Event = g.V.Event.V
		if !l.cs.events[out.Event] {
			msg := fmt.Sprintf("unknown event %q", out.Event)
			if s := strictyaml.Closest(out.Event, l.cs.Events); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			l.errorf(file, g.V.Event.N, path+".event", "%s", msg)
			ok = false
		}
	}
	if !g.V.Within.set() {
		l.errorf(file, g.N, path, "within is required, e.g. goal: {event: purchase, within: 30d}")
		ok = false
	} else {
		days, err := parseWindow(g.V.Within.V)
		if err != nil {
			l.errorf(file, g.V.Within.N, path+".within", "%v", err)
			ok = false
		}
		out.Within = time.Duration(days) * 24 * time.Hour
	}
	return out, ok
}

// parsePercent parses "30%" (or "12.5%") into 30 (12.5).
func parsePercent(s string) (float64, error) {
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, fmt.Errorf("%q is not a percentage", s)
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || f != f {
		return 0, fmt.Errorf("%q is not a percentage", s)
	}
	return f, nil
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// checkCron validates a cron expression ("" if fine).
func checkCron(s string) string {
	if strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ=") {
		return fmt.Sprintf("invalid cron expression %q: schedules use the config timezone; remove the TZ= prefix", s)
	}
	if _, err := cronParser.Parse(s); err != nil {
		return fmt.Sprintf("invalid cron expression %q: %v (write five fields, e.g. \"*/15 * * * *\", or @daily)", s, err)
	}
	return ""
}

// finish compiles the segments, orders them and validates references.
func (l *loader) finish() *Set {
	set := &Set{byName: map[string]*Segment{}, policies: l.policies, cs: l.cs}
	names := make([]string, 0, len(l.segByName))
	for name := range l.segByName {
		names = append(names, name)
	}
	c := newCompiler(l.cs, names)
	compiled := map[string]*Segment{}
	for _, s := range l.segments {
		prog, xerr := c.compile(s.When)
		if xerr != nil {
			l.errs = append(l.errs, newCompileError(s.WhenPos, s.Name, s.When, xerr))
			continue
		}
		s.prog, s.Deps = prog, prog.deps
		compiled[s.Name] = s
	}
	set.segments = l.order(compiled)
	for _, s := range set.segments {
		set.byName[s.Name] = s
	}
	l.finishCampaigns()
	set.campaigns = l.campaigns
	return set
}

// order sorts the segments so each comes after its dependencies, and
// reports in_segment cycles, naming them.
func (l *loader) order(segs map[string]*Segment) []*Segment {
	var out []*Segment
	state := map[string]int{} // 1: visiting, 2: done
	reported := map[string]bool{}
	var stack []string
	var visit func(s *Segment) bool
	visit = func(s *Segment) bool {
		switch state[s.Name] {
		case 1:
			i := len(stack) - 1
			for stack[i] != s.Name {
				i--
			}
			cycle := append(append([]string(nil), stack[i:]...), s.Name)
			key := canonicalCycle(cycle)
			if !reported[key] {
				reported[key] = true
				l.errs = append(l.errs, &strictyaml.Error{File: s.WhenPos.File, Line: s.WhenPos.Line, Column: s.WhenPos.Column,
					Msg: fmt.Sprintf("segment %q: in_segment cycle: %s", s.Name, strings.Join(cycle, " -> "))})
			}
			return false
		case 2:
			return true
		}
		state[s.Name] = 1
		stack = append(stack, s.Name)
		ok := true
		for _, dep := range s.Deps {
			d := segs[dep]
			if d == nil {
				ok = false // the dependency failed to compile: reported already
				continue
			}
			if !visit(d) {
				ok = false
			}
		}
		stack = stack[:len(stack)-1]
		state[s.Name] = 2
		if ok {
			out = append(out, s)
		} else {
			delete(segs, s.Name)
		}
		return ok
	}
	for _, s := range l.segments {
		if segs[s.Name] != nil {
			visit(s)
		}
	}
	return out
}

func canonicalCycle(c []string) string {
	c = c[:len(c)-1]
	best := 0
	for i := range c {
		if c[i] < c[best] {
			best = i
		}
	}
	return strings.Join(append(append([]string(nil), c[best:]...), c[:best]...), ",")
}

// sortErrors orders errors by file, line and column.
func sortErrors(errs []error) {
	key := func(e error) Pos {
		var se *strictyaml.Error
		var ce *CompileError
		switch {
		case errors.As(e, &ce):
			return ce.Pos
		case errors.As(e, &se):
			return Pos{File: se.File, Line: se.Line, Column: se.Column}
		}
		return Pos{File: "\xff"}
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := key(errs[i]), key(errs[j])
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
}
