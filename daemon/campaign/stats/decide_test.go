package stats

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testRule is the DESIGN.md example winner block with the default tau.
func testRule() WinnerRule { return WinnerRule{MinPerArm: 1000, Alpha: 0.05, Tau: 0.02} }

func arm(name string, matured, converted int) Arm {
	return Arm{Name: name, Kind: Variant, Assigned: matured + 50, Matured: matured, Converted: converted}
}

func holdout(matured, converted int) Arm {
	return Arm{Name: "holdout", Kind: Holdout, Assigned: matured, Matured: matured, Converted: converted}
}

// jsonRoundTrip persists and reloads a State as the daemon does between looks.
func jsonRoundTrip(t *testing.T, s State) State {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("marshal state: %v", err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("unmarshal state %s: %v", b, err)
	}
	if diff := cmp.Diff(s, back); diff != "" {
		t.Fatalf("state JSON round trip %s (-before +after):\n%s", b, diff)
	}
	return back
}

func TestDecideClearWinnerIgnoresHoldout(t *testing.T) {
	// The holdout converts best of all; it must not take part in the winner test.
	arms := []Arm{arm("b", 1000, 100), holdout(1000, 400), arm("a", 1000, 170)}
	d, s := Decide(arms, testRule(), State{})
	if d.Verdict != WinnerFound || d.Winner != "a" {
		t.Fatalf("Decide = %+v, want winner a", d)
	}
	if len(d.Pairs) != 1 || d.Pairs[0].A != "a" || d.Pairs[0].B != "b" || !d.Pairs[0].Significant {
		t.Errorf("pairs = %+v, want one significant pair a vs b", d.Pairs)
	}
	if want := MSPRTPValue(170, 1000, 100, 1000, 0.02); d.Pairs[0].P != want || d.Pairs[0].Adjusted != want {
		t.Errorf("pair p = %v adjusted %v, want %v for both (one pair: Holm leaves it)", d.Pairs[0].P, d.Pairs[0].Adjusted, want)
	}
	if !strings.Contains(d.Reason, `"a" beats every other variant`) {
		t.Errorf("reason %q does not name the winner", d.Reason)
	}
	if len(s.Pairs) != 1 || s.Pairs[0].Looks != 1 {
		t.Errorf("state = %+v, want one pair after one look", s)
	}
	jsonRoundTrip(t, s)
}

func TestDecideShortArmTestsNothing(t *testing.T) {
	prev := State{Pairs: []PairState{{A: "a", B: "b", Sequential: Sequential{MinP: 0.2, Looks: 3}}}}
	arms := []Arm{arm("a", 5000, 900), arm("b", 999, 10), holdout(10, 1)}
	d, s := Decide(arms, testRule(), prev)
	if d.Verdict != NoWinnerYet || d.Winner != "" {
		t.Fatalf("Decide = %+v, want no winner yet", d)
	}
	if want := `variant "b" has 999 matured members; min_per_arm is 1000`; !strings.Contains(d.Reason, want) {
		t.Errorf("reason %q, want it to contain %q", d.Reason, want)
	}
	if strings.Contains(d.Reason, `"a"`) || strings.Contains(d.Reason, "holdout") {
		t.Errorf("reason %q names an arm that is not short (the holdout has no minimum)", d.Reason)
	}
	if diff := cmp.Diff(prev, s); diff != "" {
		t.Errorf("state advanced before min_per_arm (-prev +got):\n%s", diff)
	}
	if d.Pairs[0].P != 0.2 || d.Pairs[0].Significant {
		t.Errorf("pair = %+v, want the stored p 0.2 and not significant", d.Pairs[0])
	}
}

func TestDecideRunningMinimumAcrossLooks(t *testing.T) {
	// Look 1: a clearly ahead. Look 2 (cumulative): the gap has shrunk so that look alone
	// is far from significant, but the always-valid p-value is the running minimum.
	d1, s := Decide([]Arm{arm("a", 1000, 170), arm("b", 1000, 100)}, testRule(), State{})
	if d1.Verdict != WinnerFound {
		t.Fatalf("look 1: %+v, want a winner", d1)
	}
	s = jsonRoundTrip(t, s)
	look2 := []Arm{arm("a", 10000, 1050), arm("b", 10000, 1000)}
	if one := MSPRTPValue(1050, 10000, 1000, 10000, 0.02); one < 0.5 {
		t.Fatalf("look 2 alone has p %v; the test needs an insignificant look", one)
	}
	d2, s2 := Decide(look2, testRule(), s)
	if d2.Verdict != WinnerFound || d2.Winner != "a" {
		t.Errorf("look 2 with state: %+v, want winner a kept by the running minimum", d2)
	}
	if d2.Pairs[0].P != d1.Pairs[0].P || s2.Pairs[0].Looks != 2 {
		t.Errorf("look 2 p = %v after %d looks, want %v after 2", d2.Pairs[0].P, s2.Pairs[0].Looks, d1.Pairs[0].P)
	}
	// Without the state the same look finds nothing.
	d3, _ := Decide(look2, testRule(), State{})
	if d3.Verdict != NoWinnerYet || !strings.Contains(d3.Reason, "smallest Holm-adjusted p-value") {
		t.Errorf("look 2 without state: %+v, want no winner yet with the smallest adjusted p", d3)
	}
	// The rate must still be higher now: if b overtakes a, a no longer wins.
	d4, _ := Decide([]Arm{arm("a", 10000, 1000), arm("b", 10000, 1050)}, testRule(), s)
	if d4.Verdict == WinnerFound {
		t.Errorf("the rates crossed after the evidence was gathered, yet %q won: %+v", d4.Winner, d4)
	}
	if d4.Pairs[0].Leader != "a" || !d4.Pairs[0].Significant {
		t.Errorf("pair = %+v, want the evidence still favouring a", d4.Pairs[0])
	}
}

func TestDecideThreeVariantsHolm(t *testing.T) {
	// a and b both beat c, but not each other: no variant beats every other.
	arms := []Arm{arm("a", 2000, 340), arm("b", 2000, 330), arm("c", 2000, 200)}
	d, s := Decide(arms, testRule(), State{})
	if d.Verdict != NoWinnerYet {
		t.Fatalf("Decide = %+v, want no winner", d)
	}
	if got := len(d.Pairs); got != 3 || len(s.Pairs) != 3 {
		t.Fatalf("%d pairs, %d in state, want 3", got, len(s.Pairs))
	}
	wantOrder := [][2]string{{"a", "b"}, {"a", "c"}, {"b", "c"}}
	ps := make([]float64, 3)
	for i, p := range d.Pairs {
		if p.A != wantOrder[i][0] || p.B != wantOrder[i][1] {
			t.Errorf("pair %d is %s vs %s, want %s vs %s", i, p.A, p.B, wantOrder[i][0], wantOrder[i][1])
		}
		ps[i] = p.P
	}
	reject, adjusted := Holm(ps, testRule().Alpha)
	for i, p := range d.Pairs {
		if p.Adjusted != adjusted[i] || p.Significant != reject[i] {
			t.Errorf("pair %s vs %s: adjusted %v significant %v, want Holm's %v %v", p.A, p.B, p.Adjusted, p.Significant, adjusted[i], reject[i])
		}
	}
	if d.Pairs[0].Significant || !d.Pairs[1].Significant || !d.Pairs[2].Significant {
		t.Errorf("pairs = %+v, want a~b not significant, a>c and b>c significant", d.Pairs)
	}
	if !strings.Contains(d.Reason, "no variant is significantly ahead of every other yet") {
		t.Errorf("reason %q does not explain that some pairs differ but no variant beats all", d.Reason)
	}

	// With a clearly ahead of both, a wins.
	arms[0] = arm("a", 2000, 450)
	d, _ = Decide(arms, testRule(), s)
	if d.Verdict != WinnerFound || d.Winner != "a" {
		t.Errorf("Decide = %+v, want winner a", d)
	}
}

func TestDecideAANoWinner(t *testing.T) {
	d, _ := Decide([]Arm{arm("a", 5000, 500), arm("b", 5000, 500)}, testRule(), State{})
	if d.Verdict != NoWinnerYet || d.Pairs[0].P != 1 {
		t.Errorf("Decide on identical arms = %+v, want no winner with p 1", d)
	}
}

func TestDecideStateLookupAndStalePairs(t *testing.T) {
	// Stored in the other order (arm 1 is b; the strong evidence is for its arm 2, a),
	// plus a pair for a variant that no longer exists.
	prev := State{Pairs: []PairState{
		{A: "b", B: "a", Sequential: Sequential{MinP: 0.001, MinPFirstAhead: 0.9, MinPSecondAhead: 0.001, Looks: 4}},
		{A: "a", B: "gone", Sequential: Sequential{MinP: 0.5, MinPFirstAhead: 0.5, MinPSecondAhead: 1, Looks: 4}},
	}}
	d, s := Decide([]Arm{arm("a", 1000, 101), arm("b", 1000, 100)}, testRule(), prev)
	if d.Pairs[0].P != 0.001 || d.Pairs[0].Leader != "a" || d.Verdict != WinnerFound || d.Winner != "a" {
		t.Errorf("Decide = %+v, want the stored p 0.001 favouring a, found in either order, and a winning", d)
	}
	want := State{Pairs: []PairState{{A: "a", B: "b", Sequential: Sequential{MinP: 0.001, MinPFirstAhead: 0.001, MinPSecondAhead: 0.9, Looks: 5}}}}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}

	// The same stored p, but the evidence favoured b: a leads now yet does not win.
	prev.Pairs[0].MinPFirstAhead, prev.Pairs[0].MinPSecondAhead = 0.001, 0.9
	d, _ = Decide([]Arm{arm("a", 1000, 101), arm("b", 1000, 100)}, testRule(), prev)
	if d.Verdict != NoWinnerYet || d.Pairs[0].Leader != "b" {
		t.Errorf("Decide = %+v, want no winner: the evidence favoured b, the rate favours a", d)
	}
}

func TestDecideSingleAndInvalid(t *testing.T) {
	prev := State{Pairs: []PairState{{A: "a", B: "b", Sequential: Sequential{MinP: 0.3, Looks: 1}}}}
	tests := []struct {
		name    string
		arms    []Arm
		rule    WinnerRule
		verdict Verdict
		reason  string
	}{
		{"single variant", []Arm{arm("a", 5000, 100), holdout(500, 5)}, testRule(), SingleVariant, `only one variant ("a")`},
		{"no variants", []Arm{holdout(500, 5)}, testRule(), InvalidInput, "no variants"},
		{"no arms", nil, testRule(), InvalidInput, "no variants"},
		{"duplicate name", []Arm{arm("a", 10, 1), arm("a", 10, 1)}, testRule(), InvalidInput, `arm "a": listed twice`},
		{"empty name", []Arm{arm("", 10, 1), arm("b", 10, 1)}, testRule(), InvalidInput, "arm 0: empty name"},
		{"converted above matured", []Arm{arm("a", 10, 11), arm("b", 10, 1)}, testRule(), InvalidInput, `arm "a": 11 converted but only 10 matured`},
		{"matured above assigned", []Arm{{Name: "a", Assigned: 5, Matured: 6}, arm("b", 10, 1)}, testRule(), InvalidInput, `arm "a": 6 matured members but only 5 assigned`},
		{"negative count", []Arm{{Name: "a", Assigned: -1}, arm("b", 10, 1)}, testRule(), InvalidInput, "negative count"},
		{"unknown kind", []Arm{{Name: "a", Kind: 7}, arm("b", 10, 1)}, testRule(), InvalidInput, "unknown kind 7"},
		{"bad alpha", []Arm{arm("a", 10, 1), arm("b", 10, 1)}, WinnerRule{MinPerArm: 1, Alpha: 1.5, Tau: 0.02}, InvalidInput, "alpha is 1.5, must be between 0 and 1"},
		{"zero rule", []Arm{arm("a", 10, 1), arm("b", 10, 1)}, WinnerRule{}, InvalidInput, "min_per_arm is 0, must be 1 or more"},
		{"NaN tau", []Arm{arm("a", 10, 1), arm("b", 10, 1)}, WinnerRule{MinPerArm: 1, Alpha: 0.05, Tau: math.NaN()}, InvalidInput, "tau is NaN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, s := Decide(tc.arms, tc.rule, prev)
			if d.Verdict != tc.verdict || !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("Decide = %v %q, want %v containing %q", d.Verdict, d.Reason, tc.verdict, tc.reason)
			}
			if d.Winner != "" || len(d.Pairs) != 0 {
				t.Errorf("Decide = %+v, want no winner and no pairs", d)
			}
			if diff := cmp.Diff(prev, s); diff != "" {
				t.Errorf("state changed (-prev +got):\n%s", diff)
			}
		})
	}
}

func TestDecisionJSON(t *testing.T) {
	d, _ := Decide([]Arm{arm("a", 1000, 170), arm("b", 1000, 100)}, testRule(), State{})
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatalf("marshal decision: %v", err)
	}
	if !strings.Contains(string(b), `"verdict":"winner"`) {
		t.Errorf("decision JSON %s does not name the verdict", b)
	}
	var back Decision
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	if diff := cmp.Diff(d, back); diff != "" {
		t.Errorf("decision JSON round trip (-before +after):\n%s", diff)
	}
	var v Verdict
	if err := json.Unmarshal([]byte(`"maybe"`), &v); err == nil || !strings.Contains(err.Error(), "no_winner_yet, winner") {
		t.Errorf("unmarshal unknown verdict: err %v, want one listing the valid names", err)
	}
	a := []Arm{holdout(3, 1)}
	ab, err := json.Marshal(a)
	if err != nil || !strings.Contains(string(ab), `"kind":"holdout"`) {
		t.Fatalf("arm JSON %s, %v: want kind by name", ab, err)
	}
	var aback []Arm
	if err := json.Unmarshal(ab, &aback); err != nil || aback[0] != a[0] {
		t.Errorf("arm JSON round trip gave %+v, %v", aback, err)
	}
}
