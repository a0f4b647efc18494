package stats

import (
	"math"
	"testing"
)

// Reference values: R. G. Newcombe, "Two-sided confidence intervals for the single
// proportion: comparison of seven methods", Statistics in Medicine 17:857-872 (1998),
// Table II, method 3 (Wilson score interval without continuity correction), 95%,
// published to four decimals.
func TestWilsonNewcombe1998TableII(t *testing.T) {
	tests := []struct {
		x, n   int
		lo, hi float64
	}{
		{81, 263, 0.2553, 0.3662},
		{15, 148, 0.0624, 0.1605},
		{0, 20, 0.0000, 0.1611},
		{1, 29, 0.0061, 0.1718},
	}
	for _, tc := range tests {
		lo, hi := Wilson(tc.x, tc.n, 0.95)
		if math.Abs(lo-tc.lo) > 0.5e-4 || math.Abs(hi-tc.hi) > 0.5e-4 {
			t.Errorf("Wilson(%d, %d, 0.95) = (%.5f, %.5f), want (%.4f, %.4f) from Newcombe 1998 Table II",
				tc.x, tc.n, lo, hi, tc.lo, tc.hi)
		}
	}
}

// Two-sided standard normal quantiles, the z behind every Wilson interval: 1.959963985,
// 2.575829304 and 1.644853627 in M. Abramowitz and I. A. Stegun, "Handbook of
// Mathematical Functions" (1964), Table 26.5; here to full double precision (R's
// qnorm(0.975), qnorm(0.995), qnorm(0.95)).
func TestZTwoSided(t *testing.T) {
	for _, tc := range []struct{ conf, z float64 }{
		{0.95, 1.959963984540054},
		{0.99, 2.5758293035489004},
		{0.90, 1.6448536269514722},
	} {
		if got := zTwoSided(tc.conf); math.Abs(got-tc.z) > 1e-12 {
			t.Errorf("zTwoSided(%v) = %.15f, want %.15f", tc.conf, got, tc.z)
		}
	}
}

func TestWilsonDegenerate(t *testing.T) {
	tests := []struct {
		name   string
		x, n   int
		conf   float64
		lo, hi float64
	}{
		{"n zero", 0, 0, 0.95, 0, 1},
		{"negative n", 3, -5, 0.95, 0, 1},
		{"confidence NaN", 5, 10, math.NaN(), 0, 1},
		{"confidence one", 5, 10, 1, 0, 1},
		{"confidence zero is the point estimate", 5, 10, 0, 0.5, 0.5},
		{"all successes reaches 1", 20, 20, 0.95, 1 - 0.1611, 1},
		{"more successes than n clamps to n", 25, 20, 0.95, 1 - 0.1611, 1},
		{"negative successes clamp to 0", -3, 20, 0.95, 0, 0.1611},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi := Wilson(tc.x, tc.n, tc.conf)
			if math.Abs(lo-tc.lo) > 0.5e-4 || math.Abs(hi-tc.hi) > 0.5e-4 {
				t.Errorf("Wilson(%d, %d, %v) = (%v, %v), want (%v, %v)", tc.x, tc.n, tc.conf, lo, hi, tc.lo, tc.hi)
			}
		})
	}
}

// Reference values: R. G. Newcombe, "Interval estimation for the difference between
// independent proportions: comparison of eleven methods", Statistics in Medicine
// 17:873-890 (1998), Table II, method 10 (score interval from Wilson limits, no continuity
// correction), 95%, published to four decimals. Examples (a), (b) and (d)-(h).
func TestLiftNewcombe1998Method10(t *testing.T) {
	tests := []struct {
		x1, n1, x2, n2 int
		lo, hi         float64
	}{
		{56, 70, 48, 80, 0.0524, 0.3339},
		{9, 10, 3, 10, 0.1705, 0.8090},
		{5, 56, 0, 29, -0.0381, 0.1926},
		{0, 10, 0, 20, -0.1611, 0.2775},
		{0, 10, 0, 10, -0.2775, 0.2775},
		{10, 10, 0, 20, 0.6791, 1.0000},
		{10, 10, 0, 10, 0.6075, 1.0000},
	}
	for _, tc := range tests {
		r := Lift(tc.x1, tc.n1, tc.x2, tc.n2, 0.95)
		if math.Abs(r.DiffLo-tc.lo) > 0.5e-4 || math.Abs(r.DiffHi-tc.hi) > 0.5e-4 {
			t.Errorf("Lift(%d/%d vs %d/%d) interval = (%.5f, %.5f), want (%.4f, %.4f) from Newcombe 1998 Table II",
				tc.x1, tc.n1, tc.x2, tc.n2, r.DiffLo, r.DiffHi, tc.lo, tc.hi)
		}
		if !(r.DiffLo <= r.Diff && r.Diff <= r.DiffHi) {
			t.Errorf("Lift(%d/%d vs %d/%d): diff %v outside its interval (%v, %v)", tc.x1, tc.n1, tc.x2, tc.n2, r.Diff, r.DiffLo, r.DiffHi)
		}
	}
}

func TestLiftRelative(t *testing.T) {
	r := Lift(120, 1000, 100, 1000, 0.95)
	if math.Abs(r.Diff-0.02) > 1e-15 || !r.HasRelative || math.Abs(r.Relative-0.2) > 1e-12 {
		t.Errorf("Lift(120/1000 vs 100/1000) = %+v, want diff 0.02 and relative 0.2", r)
	}
	r = Lift(5, 100, 0, 100, 0.95)
	if r.HasRelative || r.Relative != 0 {
		t.Errorf("Lift with a zero holdout rate = %+v, want no relative lift", r)
	}
	r = Lift(5, 100, 0, 0, 0.95)
	if r.HasRelative || r.DiffLo < -1 || r.DiffHi > 1 || r.DiffHi-r.DiffLo < 0.9 {
		t.Errorf("Lift against an empty holdout = %+v, want a wide interval within [-1, 1] and no relative lift", r)
	}
}
