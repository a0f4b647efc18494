package rules

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/cohortd/cohort/sdk/strictyaml"
)

// Campaigns are parsed and validated here; the campaign engine runs them.

// TriggerKind is what starts a campaign's occurrences.
type TriggerKind int

const (
	// TriggerEnter fires for each customer entering the segment.
	TriggerEnter TriggerKind = iota + 1
	// TriggerExit fires for each customer leaving it.
	TriggerExit
	// TriggerCron broadcasts to the current members on a schedule.
	TriggerCron
)

func (k TriggerKind) String() string {
	switch k {
	case TriggerEnter:
		return "enter"
	case TriggerExit:
		return "exit"
	case TriggerCron:
		return "cron"
	}
	return "unknown"
}

// Trigger is enter, exit or a cron schedule.
type Trigger struct {
	Kind TriggerKind
	// Cron is the schedule of a TriggerCron (config timezone) as written;
	// Schedule is it parsed.
	Cron     string
	Schedule cron.Schedule
}

// Status is a campaign's lifecycle state.
type Status string

const (
	StatusActive Status = "active"
	StatusPaused Status = "paused"
	StatusEnded  Status = "ended"
)

// Campaign sends a message to a segment's customers, split into variants
// with a holdout (DESIGN.md section 5).
type Campaign struct {
	Name    string
	Pos     Pos
	Segment string
	Trigger Trigger
	// Backfill: the first pass after a new or changed campaign fires too
	// (default: it is a baseline and fires nothing).
	Backfill bool
	// ReentryAfter is how long after an occurrence a customer can get
	// another one on enter/exit triggers; 0 means never.
	ReentryAfter time.Duration
	Status       Status
	// Channel is a channel plugin instance of config.yaml; ChannelKind its
	// kind when LoadOptions.Channels was given.
	Channel     string
	ChannelKind string
	// Salt is the assignment key (defaults to the campaign name).
	Salt string
	// Holdout is the holdout share in buckets of 10,000 (10% = 1000).
	Holdout int
	// Goal is the conversion event and its attribution window, or nil.
	Goal *Goal
	// Variants sorted by name; weights sum to 100.
	Variants []Variant
	// Winner is the winner test, or nil (no automatic winner).
	Winner *Winner
}

// Variant is one arm of a campaign.
type Variant struct {
	Name   string
	Pos    Pos
	Weight int
	// Subject is an inline text/template; HTML and Text are template files
	// relative to the rules directory.
	Subject string
	HTML    string
	Text    string
}

// Winner configures the winner test (always-valid mSPRT with Holm).
type Winner struct {
	// Metric is conversion, click or open.
	Metric    string
	MinPerArm int
	Alpha     float64
	Tau       float64
}

// Winner defaults.
const (
	DefaultMinPerArm = 1000
	DefaultAlpha     = 0.05
	DefaultTau       = 0.02
)

// Policy holds a channel kind's send-time rules.
type Policy struct {
	Kind       string
	Pos        Pos
	Cap        *Cap
	QuietHours *QuietHours
}

// Cap is at most Count messages per Days calendar days.
type Cap struct {
	Count int
	Days  int
}

// QuietHours is a daily window without sends, in minutes after local
// midnight; Start > End wraps midnight ("21:00-08:00").
type QuietHours struct {
	Start, End int
}

// Contains reports whether a local time of day falls in the quiet hours.
func (q QuietHours) Contains(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	if q.Start < q.End {
		return m >= q.Start && m < q.End
	}
	return m >= q.Start || m < q.End
}

// ChannelKinds are the channel kinds policies are keyed by.
var ChannelKinds = []string{"email", "sms", "webhook"}

type campaignYAML struct {
	Segment  node[string]     `yaml:"segment"`
	Trigger  node[string]     `yaml:"trigger"`
	Backfill node[bool]       `yaml:"backfill"`
	Reentry  node[string]     `yaml:"reentry"`
	Status   node[string]     `yaml:"status"`
	Channel  node[string]     `yaml:"channel"`
	Salt     node[string]     `yaml:"salt"`
	Holdout  node[string]     `yaml:"holdout"`
	Goal     node[goalYAML]   `yaml:"goal"`
	Variants yaml.Node        `yaml:"variants"`
	Winner   node[winnerYAML] `yaml:"winner"`
}

type variantYAML struct {
	Weight  node[int]    `yaml:"weight"`
	Subject node[string] `yaml:"subject"`
	HTML    node[string] `yaml:"html"`
	Text    node[string] `yaml:"text"`
}

type winnerYAML struct {
	Metric    node[string]  `yaml:"metric"`
	MinPerArm node[int]     `yaml:"min_per_arm"`
	Alpha     node[float64] `yaml:"alpha"`
	Tau       node[float64] `yaml:"tau"`
}

type policyYAML struct {
	Cap        node[string] `yaml:"cap"`
	QuietHours node[string] `yaml:"quiet_hours"`
}

// pendingCampaign is checked once all segments are known.
type pendingCampaign struct {
	c    *Campaign
	file string
	path string
	y    campaignYAML
}

var reentryRE = regexp.MustCompile(`^after\s+(\S+)$`)

func (l *loader) campaignsBlock(d *strictyaml.Decoder, file string, n *yaml.Node) {
	err := d.Mapping(n, "campaigns", func(name string, k, v *yaml.Node) error {
		path := "campaigns." + name
		if !l.checkName(file, k, "campaign") {
			return nil
		}
		var y campaignYAML
		if err := d.DecodeNode(v, path, reflect.ValueOf(&y).Elem()); err != nil {
			l.errs = append(l.errs, err)
			return nil
		}
		c := &Campaign{Name: name, Pos: posOf(file, k), Salt: name, Status: StatusActive, Backfill: y.Backfill.V}
		if prev := l.campByName[name]; prev != nil {
			l.errorf(file, k, "", "campaign %q is defined twice: here and at %s", name, prev.Pos)
			return nil
		}
		l.campByName[name] = c
		l.campaignFields(d, file, path, k, c, &y)
		l.pending = append(l.pending, &pendingCampaign{c: c, file: file, path: path, y: y})
		return nil
	})
	if err != nil {
		l.errs = append(l.errs, err)
	}
}

func (l *loader) campaignFields(d *strictyaml.Decoder, file, path string, k *yaml.Node, c *Campaign, y *campaignYAML) bool {
	ok := true
	bad := func(n *yaml.Node, field, format string, args ...any) {
		l.errorf(file, n, path+"."+field, format, args...)
		ok = false
	}
	if !y.Segment.set() {
		l.errorf(file, k, path, "segment is required: the segment the campaign targets")
		ok = false
	} else {
		c.Segment = y.Segment.V
	}
	switch {
	case !y.Trigger.set():
		l.errorf(file, k, path, "trigger is required: enter, exit or a cron expression")
		ok = false
	case y.Trigger.V == "enter":
		c.Trigger = Trigger{Kind: TriggerEnter}
	case y.Trigger.V == "exit":
		c.Trigger = Trigger{Kind: TriggerExit}
	default:
		if msg := checkCron(y.Trigger.V); msg != "" {
			bad(y.Trigger.N, "trigger", "expected enter, exit or a cron expression: %s", msg)
		}
		sched, _ := cronParser.Parse(y.Trigger.V) // nil when checkCron reported it
		c.Trigger = Trigger{Kind: TriggerCron, Cron: y.Trigger.V, Schedule: sched}
	}
	if y.Reentry.set() {
		switch r := strings.TrimSpace(y.Reentry.V); {
		case r == "never":
		case reentryRE.MatchString(r):
			days, err := parseWindow(reentryRE.FindStringSubmatch(r)[1])
			if err != nil {
				bad(y.Reentry.N, "reentry", "%v", err)
			}
			c.ReentryAfter = time.Duration(days) * 24 * time.Hour
		default:
			bad(y.Reentry.N, "reentry", "expected never or \"after 30d\", found %q", r)
		}
	}
	if y.Status.set() {
		switch s := Status(y.Status.V); s {
		case StatusActive, StatusPaused, StatusEnded:
			c.Status = s
		default:
			bad(y.Status.N, "status", "expected active, paused or ended, found %q", y.Status.V)
		}
	}
	if !y.Channel.set() {
		l.errorf(file, k, path, "channel is required: a channel instance of config.yaml")
		ok = false
	} else {
		c.Channel = y.Channel.V
	}
	if y.Salt.set() {
		if y.Salt.V == "" {
			bad(y.Salt.N, "salt", "must not be empty (leave it out to use the campaign name)")
		}
		c.Salt = y.Salt.V
	}
	if y.Holdout.set() {
		p, err := parsePercent(y.Holdout.V)
		switch {
		case err != nil || p < 0 || p > 100:
			bad(y.Holdout.N, "holdout", "write a percentage from 0%% to 100%%, e.g. \"10%%\"")
		case math.Abs(p*100-math.Round(p*100)) > 1e-9:
			bad(y.Holdout.N, "holdout", "%s has more than two decimals: the holdout is counted in buckets of 0.01%%", y.Holdout.V)
		default:
			c.Holdout = int(math.Round(p * 100))
		}
	}
	if y.Goal.set() {
		g, gok := l.goal(file, path+".goal", y.Goal)
		c.Goal, ok = g, ok && gok
	}
	if y.Variants.Kind == 0 || (y.Variants.Kind == yaml.ScalarNode && y.Variants.Tag == "!!null") {
		l.errorf(file, k, path, "variants are required, e.g. variants: {a: {weight: 100, subject: ..., html: ...}}")
		ok = false
	} else {
		sum := 0
		err := d.Mapping(&y.Variants, path+".variants", func(name string, vk, vv *yaml.Node) error {
			vpath := path + ".variants." + name
			if !l.checkName(file, vk, "variant") {
				ok = false
				return nil
			}
			if name == "holdout" {
				bad(vk, "variants", "holdout is not a variant name: the holdout is set by holdout:")
				return nil
			}
			var vy variantYAML
			if err := d.DecodeNode(vv, vpath, reflect.ValueOf(&vy).Elem()); err != nil {
				l.errs = append(l.errs, err)
				ok = false
				return nil
			}
			v := Variant{Name: name, Pos: posOf(file, vk), Weight: vy.Weight.V, Subject: vy.Subject.V, HTML: vy.HTML.V, Text: vy.Text.V}
			if !vy.Weight.set() {
				l.errorf(file, vk, vpath, "weight is required (the variants' weights sum to 100)")
				ok = false
			} else if v.Weight < 0 || v.Weight > 100 {
				l.errorf(file, vy.Weight.N, vpath+".weight", "must be from 0 to 100")
				ok = false
			}
			sum += v.Weight
			c.Variants = append(c.Variants, v)
			return nil
		})
		if err != nil {
			l.errs = append(l.errs, err)
			ok = false
		} else if len(c.Variants) == 0 {
			bad(&y.Variants, "variants", "at least one variant is required")
		} else if sum != 100 {
			bad(&y.Variants, "variants", "the weights sum to %d; they must sum to 100", sum)
		}
		sort.Slice(c.Variants, func(i, j int) bool { return c.Variants[i].Name < c.Variants[j].Name })
	}
	if y.Winner.set() {
		w := &Winner{Metric: "conversion", MinPerArm: DefaultMinPerArm, Alpha: DefaultAlpha, Tau: DefaultTau}
		wy := y.Winner.V
		if wy.Metric.set() {
			switch wy.Metric.V {
			case "conversion", "click", "open":
				w.Metric = wy.Metric.V
			default:
				bad(wy.Metric.N, "winner.metric", "expected conversion, click or open, found %q", wy.Metric.V)
			}
		}
		if wy.MinPerArm.set() {
			if wy.MinPerArm.V < 1 {
				bad(wy.MinPerArm.N, "winner.min_per_arm", "must be 1 or more")
			}
			w.MinPerArm = wy.MinPerArm.V
		}
		if wy.Alpha.set() {
			if !(wy.Alpha.V > 0 && wy.Alpha.V < 1) {
				bad(wy.Alpha.N, "winner.alpha", "must be between 0 and 1, e.g. 0.05")
			}
			w.Alpha = wy.Alpha.V
		}
		if wy.Tau.set() {
			if !(wy.Tau.V > 0) || math.IsInf(wy.Tau.V, 0) {
				bad(wy.Tau.N, "winner.tau", "must be above 0, e.g. 0.02")
			}
			w.Tau = wy.Tau.V
		}
		if len(c.Variants) < 2 {
			bad(y.Winner.N, "winner", "a winner needs at least two variants")
		}
		if w.Metric == "conversion" && c.Goal == nil && y.Goal.N == nil {
			bad(y.Winner.N, "winner", "a conversion winner needs the campaign's goal: {event, within}")
		}
		c.Winner = w
	}
	return ok
}

// finishCampaigns checks segment and channel references.
func (l *loader) finishCampaigns() {
	var kinds []string
	for inst := range l.opts.Channels {
		kinds = append(kinds, inst)
	}
	sort.Strings(kinds)
	for _, p := range l.pending {
		c := p.c
		if c.Segment != "" && l.segByName[c.Segment] == nil {
			var names []string
			for n := range l.segByName {
				names = append(names, n)
			}
			msg := fmt.Sprintf("unknown segment %q", c.Segment)
			if s := strictyaml.Closest(c.Segment, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			l.errorf(p.file, p.y.Segment.N, p.path+".segment", "%s", msg)
		}
		if l.opts.Channels != nil && c.Channel != "" {
			kind, known := l.opts.Channels[c.Channel]
			if !known {
				msg := fmt.Sprintf("unknown channel instance %q", c.Channel)
				if s := strictyaml.Closest(c.Channel, kinds); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				} else if len(kinds) > 0 {
					msg += fmt.Sprintf(" (config.yaml has: %s)", strings.Join(kinds, ", "))
				} else {
					msg += " (config.yaml has no channels)"
				}
				l.errorf(p.file, p.y.Channel.N, p.path+".channel", "%s", msg)
			} else {
				c.ChannelKind = kind
				l.checkContent(p, kind)
			}
		}
		l.campaigns = append(l.campaigns, c)
	}
	sort.Slice(l.campaigns, func(i, j int) bool { return l.campaigns[i].Name < l.campaigns[j].Name })
}

// checkContent checks that each variant has what its channel kind sends.
func (l *loader) checkContent(p *pendingCampaign, kind string) {
	for _, v := range p.c.Variants {
		vpath := p.path + ".variants." + v.Name
		n := &yaml.Node{Line: v.Pos.Line, Column: v.Pos.Column}
		switch kind {
		case "email":
			if v.Subject == "" {
				l.errorf(p.file, n, vpath, "an email variant needs a subject")
			}
			if v.HTML == "" && v.Text == "" {
				l.errorf(p.file, n, vpath, "an email variant needs html or text (template files)")
			}
		case "sms":
			if v.Text == "" {
				l.errorf(p.file, n, vpath, "an sms variant needs text (a template file)")
			}
		}
	}
}

var (
	capRE   = regexp.MustCompile(`^(\d+)/(\d+[dw])$`)
	quietRE = regexp.MustCompile(`^(\d\d):(\d\d)-(\d\d):(\d\d)$`)
)

func (l *loader) policiesBlock(d *strictyaml.Decoder, file string, n *yaml.Node) {
	err := d.Mapping(n, "policies", func(kind string, k, v *yaml.Node) error {
		path := "policies." + kind
		known := false
		for _, ck := range ChannelKinds {
			known = known || ck == kind
		}
		if !known {
			hint := ""
			if s := strictyaml.Closest(kind, ChannelKinds); s != "" {
				hint = fmt.Sprintf("; did you mean %q?", s)
			}
			l.errorf(file, k, "", "unknown channel kind %q in policies (policies are keyed by kind: %s)%s", kind, strings.Join(ChannelKinds, ", "), hint)
			return nil
		}
		var y policyYAML
		if err := d.DecodeNode(v, path, reflect.ValueOf(&y).Elem()); err != nil {
			l.errs = append(l.errs, err)
			return nil
		}
		p := &Policy{Kind: kind, Pos: posOf(file, k)}
		if y.Cap.set() {
			m := capRE.FindStringSubmatch(strings.TrimSpace(y.Cap.V))
			var cnt, days int
			var err error
			if m != nil {
				cnt, err = strconv.Atoi(m[1])
				if err == nil {
					days, err = parseWindow(m[2])
				}
			}
			if m == nil || err != nil || cnt < 1 {
				l.errorf(file, y.Cap.N, path+".cap", "expected messages per days, e.g. \"3/7d\" (at least 1 message, 1 to 65535 days), found %q", y.Cap.V)
			} else {
				p.Cap = &Cap{Count: cnt, Days: days}
			}
		}
		if y.QuietHours.set() {
			q, err := parseQuietHours(y.QuietHours.V)
			if err != nil {
				l.errorf(file, y.QuietHours.N, path+".quiet_hours", "%v", err)
			} else {
				p.QuietHours = q
			}
		}
		if prev := l.policies[kind]; prev != nil {
			l.errorf(file, k, "", "policy for %q is defined twice: here and at %s", kind, prev.Pos)
			return nil
		}
		l.policies[kind] = p
		return nil
	})
	if err != nil {
		l.errs = append(l.errs, err)
	}
}

func parseQuietHours(s string) (*QuietHours, error) {
	m := quietRE.FindStringSubmatch(strings.TrimSpace(s))
	bad := fmt.Errorf("expected a local time range such as \"21:00-08:00\", found %q", s)
	if m == nil {
		return nil, bad
	}
	var v [4]int
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	if v[0] > 23 || v[2] > 23 || v[1] > 59 || v[3] > 59 {
		return nil, bad
	}
	q := &QuietHours{Start: v[0]*60 + v[1], End: v[2]*60 + v[3]}
	if q.Start == q.End {
		return nil, fmt.Errorf("quiet hours %q start and end at the same time", s)
	}
	return q, nil
}
