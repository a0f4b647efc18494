package stats

import "math"

// Wilson returns the Wilson score interval (without continuity correction) for a
// proportion of successes out of n at the given two-sided confidence, e.g. 0.95:
//
//	centre = (x + z^2/2) / (n + z^2)
//	half   = z/(n + z^2) * sqrt(x(n-x)/n + z^2/4)
//
// Counts are clamped (see the package doc). n = 0 gives (0, 1). A confidence of 1 or
// more, or NaN, gives (0, 1), the limit as confidence grows; 0 or less gives the point
// estimate (p, p), the limit as it shrinks. lo and hi always lie in [0, 1].
func Wilson(successes, n int, confidence float64) (lo, hi float64) {
	x, n := clampCounts(successes, n)
	if n == 0 || math.IsNaN(confidence) || confidence >= 1 {
		return 0, 1
	}
	p := float64(x) / float64(n)
	if confidence <= 0 {
		return p, p
	}
	z := zTwoSided(confidence)
	z2 := z * z
	fn := float64(n)
	fx := float64(x)
	centre := (fx + z2/2) / (fn + z2)
	half := z / (fn + z2) * math.Sqrt(fx*(fn-fx)/fn+z2/4)
	lo, hi = centre-half, centre+half
	// Exact at the boundaries (the formula gives them up to rounding).
	if x == 0 {
		lo = 0
	}
	if x == n {
		hi = 1
	}
	return clamp01(lo), clamp01(hi)
}

func clamp01(v float64) float64 {
	switch {
	case v < 0:
		return 0
	case v > 1:
		return 1
	}
	return v
}

// LiftResult is a variant's rate compared with the holdout's.
type LiftResult struct {
	// VariantRate and HoldoutRate are the two conversion rates (0 when n = 0).
	VariantRate, HoldoutRate float64
	// Diff is VariantRate - HoldoutRate, the absolute lift.
	Diff float64
	// DiffLo and DiffHi bound Diff: Newcombe's method 10 interval, within [-1, 1].
	DiffLo, DiffHi float64
	// Relative is Diff / HoldoutRate; meaningful only when HasRelative is true.
	Relative float64
	// HasRelative is false when the holdout rate is 0 (relative lift undefined); then
	// Relative is 0.
	HasRelative bool
}

// Lift compares a variant's rate (variantX of variantN) with the holdout's (holdoutX of
// holdoutN) at the given two-sided confidence. The interval for the difference is
// Newcombe's (1998) method 10: with Wilson intervals (l1, u1) for the variant and
// (l2, u2) for the holdout,
//
//	lo = d - sqrt((p1-l1)^2 + (u2-p2)^2)
//	hi = d + sqrt((u1-p1)^2 + (p2-l2)^2)
//
// An arm with n = 0 has rate 0 and Wilson interval (0, 1), so the difference's interval
// widens to reflect that nothing is known. Confidence is handled as in [Wilson].
func Lift(variantX, variantN, holdoutX, holdoutN int, confidence float64) LiftResult {
	p1 := Rate(variantX, variantN)
	p2 := Rate(holdoutX, holdoutN)
	l1, u1 := Wilson(variantX, variantN, confidence)
	l2, u2 := Wilson(holdoutX, holdoutN, confidence)
	d := p1 - p2
	r := LiftResult{
		VariantRate: p1,
		HoldoutRate: p2,
		Diff:        d,
		DiffLo:      math.Max(-1, d-math.Hypot(p1-l1, u2-p2)),
		DiffHi:      math.Min(1, d+math.Hypot(u1-p1, p2-l2)),
	}
	if p2 > 0 {
		r.Relative = d / p2
		r.HasRelative = true
	}
	return r
}
