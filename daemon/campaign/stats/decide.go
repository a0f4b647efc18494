package stats

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
)

// ArmKind tells variants from the holdout.
type ArmKind int

const (
	// Variant is an arm that receives a message; variants are compared for a winner.
	Variant ArmKind = iota
	// Holdout is the arm that receives nothing; it is never part of the winner test.
	Holdout
)

// String names the kind as reports show it.
func (k ArmKind) String() string {
	switch k {
	case Variant:
		return "variant"
	case Holdout:
		return "holdout"
	}
	return fmt.Sprintf("ArmKind(%d)", int(k))
}

// MarshalText encodes the kind by name.
func (k ArmKind) MarshalText() ([]byte, error) {
	if k != Variant && k != Holdout {
		return nil, fmt.Errorf("arm kind %d: unknown value", int(k))
	}
	return []byte(k.String()), nil
}

// UnmarshalText decodes "variant" or "holdout".
func (k *ArmKind) UnmarshalText(b []byte) error {
	switch string(b) {
	case "variant":
		*k = Variant
	case "holdout":
		*k = Holdout
	default:
		return fmt.Errorf("arm kind %q: unknown, want variant or holdout", b)
	}
	return nil
}

// Arm is one arm's counts for the winner metric. Only matured members (whose goal window
// has closed) count in Matured and Converted; Assigned is everyone assigned so far.
type Arm struct {
	Name      string  `json:"name"`
	Kind      ArmKind `json:"kind"`
	Assigned  int     `json:"assigned"`
	Matured   int     `json:"matured"`
	Converted int     `json:"converted"`
}

// WinnerRule configures [Decide]; the campaign's winner block (rules.Winner) supplies it.
type WinnerRule struct {
	// MinPerArm is how many matured members every variant needs before any test runs.
	MinPerArm int `json:"min_per_arm"`
	// Alpha is the family-wise error rate across the pairs of variants, e.g. 0.05.
	Alpha float64 `json:"alpha"`
	// Tau is the mSPRT mixing scale, e.g. 0.02.
	Tau float64 `json:"tau"`
}

// Validate reports a rule Decide cannot use, saying what to change.
func (r WinnerRule) Validate() error {
	var errs []error
	if r.MinPerArm < 1 {
		errs = append(errs, fmt.Errorf("winner rule: min_per_arm is %d, must be 1 or more, e.g. 1000", r.MinPerArm))
	}
	if !(r.Alpha > 0 && r.Alpha < 1) {
		errs = append(errs, fmt.Errorf("winner rule: alpha is %v, must be between 0 and 1, e.g. 0.05", r.Alpha))
	}
	if !(r.Tau > 0) || math.IsInf(r.Tau, 1) {
		errs = append(errs, fmt.Errorf("winner rule: tau is %v, must be a positive number, e.g. 0.02", r.Tau))
	}
	return errors.Join(errs...)
}

// PairState is the persisted always-valid p-value of one pair of variants, A < B by name.
type PairState struct {
	A string `json:"a"`
	B string `json:"b"`
	Sequential
}

// State carries each pair's running minimum from one [Decide] call to the next. The zero
// value is the start of an experiment; it round-trips through encoding/json.
type State struct {
	Pairs []PairState `json:"pairs,omitempty"`
}

// lookup returns the stored sequential state of the pair (a, b), with a as arm 1; a pair
// stored the other way round has its directions swapped.
func (s State) lookup(a, b string) Sequential {
	for _, p := range s.Pairs {
		switch {
		case p.A == a && p.B == b:
			return p.Sequential
		case p.A == b && p.B == a:
			q := p.Sequential
			q.MinPFirstAhead, q.MinPSecondAhead = q.MinPSecondAhead, q.MinPFirstAhead
			return q
		}
	}
	return Sequential{}
}

// Verdict is the outcome of [Decide].
type Verdict int

const (
	// NoWinnerYet: the test has not (yet) found a variant that beats every other.
	NoWinnerYet Verdict = iota
	// WinnerFound: Decision.Winner beats every other variant.
	WinnerFound
	// SingleVariant: the campaign has one variant, so there is nothing to compare.
	SingleVariant
	// InvalidInput: the arms or the rule are unusable; Decision.Reason says why.
	InvalidInput
)

var verdictNames = [...]string{"no_winner_yet", "winner", "single_variant", "invalid_input"}

// String is the verdict's snake_case name, as persisted and shown.
func (v Verdict) String() string {
	if v >= 0 && int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// MarshalText encodes the verdict by name.
func (v Verdict) MarshalText() ([]byte, error) {
	if v < 0 || int(v) >= len(verdictNames) {
		return nil, fmt.Errorf("verdict %d: unknown value", int(v))
	}
	return []byte(v.String()), nil
}

// UnmarshalText decodes a verdict name written by MarshalText.
func (v *Verdict) UnmarshalText(b []byte) error {
	for i, n := range verdictNames {
		if n == string(b) {
			*v = Verdict(i)
			return nil
		}
	}
	return fmt.Errorf("verdict %q: unknown, want one of %s", b, strings.Join(verdictNames[:], ", "))
}

// PairResult is one comparison of two variants, A < B by name.
type PairResult struct {
	A     string  `json:"a"`
	B     string  `json:"b"`
	RateA float64 `json:"rate_a"`
	RateB float64 `json:"rate_b"`
	// P is the always-valid two-sided p-value (running minimum over looks).
	P float64 `json:"p"`
	// Leader names the variant the evidence behind P favours: the one that was ahead at
	// the look where P was reached. Empty while P is 1.
	Leader string `json:"leader,omitempty"`
	// Adjusted is P after Holm's correction across all pairs.
	Adjusted float64 `json:"adjusted_p"`
	// Significant is true when Holm rejects "no difference" at alpha; it is only ever set
	// once every variant has min_per_arm matured members.
	Significant bool `json:"significant"`
}

// Decision is what [Decide] concluded and why.
type Decision struct {
	Verdict Verdict `json:"verdict"`
	// Winner names the winning variant when Verdict is WinnerFound.
	Winner string `json:"winner,omitempty"`
	// Reason explains the verdict in a sentence a marketer can read.
	Reason string `json:"reason"`
	// Pairs lists every pair of variants in name order (empty for SingleVariant and
	// InvalidInput).
	Pairs []PairResult `json:"pairs,omitempty"`
}

// Decide runs the winner test on the arms' current cumulative counts. It compares every
// pair of variants (the holdout is ignored) with the always-valid mSPRT p-value, whose
// running minimum per pair it carries in the returned State (pass it back as prev next
// time), applies Holm's correction across the pairs at rule.Alpha, and declares a winner
// when one variant beats every other: significantly, with the evidence in its favour (it
// was ahead at the look that gave the pair's p-value, see [Sequential]) and with the higher
// rate now. Until every variant has at least rule.MinPerArm matured members it tests
// nothing and leaves the state as it was. One variant gives SingleVariant; an invalid
// rule or arm (empty or duplicate name, negative counts, more matured than assigned, more
// converted than matured, no variant) gives InvalidInput with prev returned unchanged.
//
// Decide has no side effects; a winner, once found, is the caller's to persist.
func Decide(arms []Arm, rule WinnerRule, prev State) (Decision, State) {
	if err := rule.Validate(); err != nil {
		return Decision{Verdict: InvalidInput, Reason: err.Error()}, prev
	}
	if err := validateArms(arms); err != nil {
		return Decision{Verdict: InvalidInput, Reason: err.Error()}, prev
	}
	var variants []Arm
	for _, a := range arms {
		if a.Kind == Variant {
			variants = append(variants, a)
		}
	}
	sort.Slice(variants, func(i, j int) bool { return variants[i].Name < variants[j].Name })
	switch len(variants) {
	case 0:
		return Decision{Verdict: InvalidInput, Reason: "no variants: a campaign needs at least one variant"}, prev
	case 1:
		return Decision{
			Verdict: SingleVariant,
			Reason:  fmt.Sprintf("only one variant (%q): there is no winner test; lift over the holdout is reported instead", variants[0].Name),
		}, prev
	}

	var short []string
	for _, v := range variants {
		if v.Matured < rule.MinPerArm {
			short = append(short, fmt.Sprintf("variant %q has %d matured members", v.Name, v.Matured))
		}
	}
	testing := len(short) == 0

	var next State
	var pairs []PairResult
	for i := range variants {
		for j := i + 1; j < len(variants); j++ {
			a, b := variants[i], variants[j]
			seq := prev.lookup(a.Name, b.Name)
			if testing {
				seq.Observe(a.Converted, a.Matured, b.Converted, b.Matured, rule.Tau)
			}
			next.Pairs = append(next.Pairs, PairState{A: a.Name, B: b.Name, Sequential: seq})
			pr := PairResult{
				A: a.Name, B: b.Name,
				RateA: Rate(a.Converted, a.Matured),
				RateB: Rate(b.Converted, b.Matured),
				P:     seq.P(),
			}
			switch pa, pb := seq.PFirstAhead(), seq.PSecondAhead(); {
			case pa < pb:
				pr.Leader = a.Name
			case pb < pa:
				pr.Leader = b.Name
			}
			pairs = append(pairs, pr)
		}
	}
	ps := make([]float64, len(pairs))
	for i, p := range pairs {
		ps[i] = p.P
	}
	reject, adjusted := Holm(ps, rule.Alpha)
	for i := range pairs {
		pairs[i].Adjusted = adjusted[i]
		pairs[i].Significant = testing && reject[i]
	}
	d := Decision{Verdict: NoWinnerYet, Pairs: pairs}
	if !testing {
		d.Reason = fmt.Sprintf("no winner yet: %s; min_per_arm is %d", strings.Join(short, ", "), rule.MinPerArm)
		return d, next
	}
	if w, ok := winner(variants, pairs); ok {
		d.Verdict = WinnerFound
		d.Winner = w
		d.Reason = fmt.Sprintf("variant %q beats every other variant (largest Holm-adjusted p-value %.3g, alpha %g)",
			w, largestAdjusted(pairs, w), rule.Alpha)
		return d, next
	}
	best := 0
	for i := range pairs {
		if pairs[i].Adjusted < pairs[best].Adjusted {
			best = i
		}
	}
	d.Reason = fmt.Sprintf("no winner yet: smallest Holm-adjusted p-value is %.3g (%q vs %q), alpha %g",
		pairs[best].Adjusted, pairs[best].A, pairs[best].B, rule.Alpha)
	if pairs[best].Significant {
		d.Reason += "; no variant is significantly ahead of every other yet"
	}
	return d, next
}

// winner finds the variant that beats every other: each of its pairs is significant, the
// evidence favours it (it was ahead when the p-value was reached) and its current rate is
// the higher. At most one variant can: one beaten by another cannot beat it back.
func winner(variants []Arm, pairs []PairResult) (string, bool) {
	for _, v := range variants {
		beatsAll := true
		for _, p := range pairs {
			var mine, theirs float64
			switch v.Name {
			case p.A:
				mine, theirs = p.RateA, p.RateB
			case p.B:
				mine, theirs = p.RateB, p.RateA
			default:
				continue
			}
			if !p.Significant || p.Leader != v.Name || !(mine > theirs) {
				beatsAll = false
				break
			}
		}
		if beatsAll {
			return v.Name, true
		}
	}
	return "", false
}

func largestAdjusted(pairs []PairResult, name string) float64 {
	m := 0.0
	for _, p := range pairs {
		if p.A == name || p.B == name {
			m = math.Max(m, p.Adjusted)
		}
	}
	return m
}

func validateArms(arms []Arm) error {
	seen := make(map[string]bool, len(arms))
	for i, a := range arms {
		switch {
		case a.Name == "":
			return fmt.Errorf("arm %d: empty name", i)
		case seen[a.Name]:
			return fmt.Errorf("arm %q: listed twice", a.Name)
		case a.Kind != Variant && a.Kind != Holdout:
			return fmt.Errorf("arm %q: unknown kind %d", a.Name, int(a.Kind))
		case a.Assigned < 0 || a.Matured < 0 || a.Converted < 0:
			return fmt.Errorf("arm %q: negative count (assigned %d, matured %d, converted %d)", a.Name, a.Assigned, a.Matured, a.Converted)
		case a.Matured > a.Assigned:
			return fmt.Errorf("arm %q: %d matured members but only %d assigned", a.Name, a.Matured, a.Assigned)
		case a.Converted > a.Matured:
			return fmt.Errorf("arm %q: %d converted but only %d matured", a.Name, a.Converted, a.Matured)
		}
		seen[a.Name] = true
	}
	return nil
}
