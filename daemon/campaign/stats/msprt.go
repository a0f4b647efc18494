package stats

import "math"

// msprtVariance is V = p1(1-p1)/n1 + p2(1-p2)/n2 floored at f(1-f)(1/n1+1/n2) with
// f = 0.5/(n1+n2), the variance of the pooled rate had half a conversion been seen; the
// floor only acts when an arm is all-0 or all-1 (see the package doc). n1 and n2 must be
// positive.
func msprtVariance(x1, n1, x2, n2 int) float64 {
	p1 := float64(x1) / float64(n1)
	p2 := float64(x2) / float64(n2)
	inv := 1/float64(n1) + 1/float64(n2)
	v := p1*(1-p1)/float64(n1) + p2*(1-p2)/float64(n2)
	f := 0.5 / (float64(n1) + float64(n2))
	return math.Max(v, f*(1-f)*inv)
}

// MSPRTLogLR is log Lambda, the log of the normal-mixture likelihood ratio of the mSPRT
// for the difference of two rates at one look (see the package doc for the formula and
// assumptions). Counts are clamped; an arm with n = 0, or tau not a positive finite
// number, gives 0 (Lambda = 1, no evidence).
func MSPRTLogLR(x1, n1, x2, n2 int, tau float64) float64 {
	x1, n1 = clampCounts(x1, n1)
	x2, n2 = clampCounts(x2, n2)
	if n1 == 0 || n2 == 0 || !(tau > 0) || math.IsInf(tau, 1) {
		return 0
	}
	theta := float64(x1)/float64(n1) - float64(x2)/float64(n2)
	v := msprtVariance(x1, n1, x2, n2)
	t2 := tau * tau
	return 0.5*math.Log(v/(v+t2)) + theta*theta*t2/(2*v*(v+t2))
}

// MSPRTPValue is the one-look mSPRT p-value min(1, 1/Lambda) for the difference between
// arm 1 (x1 of n1 converted) and arm 2 (x2 of n2), with mixing scale tau (e.g. 0.02). It is
// two-sided: the sign of the difference does not matter. On its own it is not yet
// always valid: take the running minimum over looks with [Sequential] or
// [RunningPValue]. Degenerate inputs give 1 (see [MSPRTLogLR]); the result is never NaN.
func MSPRTPValue(x1, n1, x2, n2 int, tau float64) float64 {
	l := MSPRTLogLR(x1, n1, x2, n2, tau)
	if l <= 0 {
		return 1
	}
	return math.Exp(-l)
}

// RunningPValue is the always-valid p-value after one more look: min(prev, MSPRTPValue).
// prev is the value after the previous look, 1 before the first; a NaN or out-of-range
// prev is treated as 1.
func RunningPValue(prev float64, x1, n1, x2, n2 int, tau float64) float64 {
	if !(prev >= 0 && prev <= 1) {
		prev = 1
	}
	return math.Min(prev, MSPRTPValue(x1, n1, x2, n2, tau))
}

// Sequential is the always-valid p-value of one comparison across looks: the running
// minimum of the mSPRT p-value. It also keeps the running minimum separately over the
// looks at which arm 1's rate was above arm 2's and over those at which it was below, so
// that evidence gathered while one arm led is never credited to the other after the
// rates cross. Each directional minimum is taken over a subset of the looks, so it is
// never below the two-sided one and is always valid too; MinP is the smaller of the two.
//
// The zero value is ready to use (no looks yet, every p = 1) and it round-trips through
// encoding/json, so the daemon can persist it between looks. The counts passed to
// Observe must be cumulative totals of the same experiment, and tau must not change
// between looks.
type Sequential struct {
	// MinP is the running minimum of the two-sided mSPRT p-value.
	MinP float64 `json:"min_p"`
	// MinPFirstAhead is the running minimum over looks where arm 1's rate was higher.
	MinPFirstAhead float64 `json:"min_p_first_ahead"`
	// MinPSecondAhead is the running minimum over looks where arm 2's rate was higher.
	MinPSecondAhead float64 `json:"min_p_second_ahead"`
	// Looks counts the observations folded in; the minima are meaningful once it is > 0.
	Looks int `json:"looks"`
}

// validP is v if it is a p-value, else 1.
func validP(v float64) float64 {
	if v >= 0 && v <= 1 {
		return v
	}
	return 1
}

// P is the current always-valid two-sided p-value: 1 before the first look.
func (s Sequential) P() float64 {
	if s.Looks == 0 {
		return 1
	}
	return validP(s.MinP)
}

// PFirstAhead is the always-valid p-value of the evidence that arm 1's rate is the
// higher: the running minimum over looks where it was. 1 if it never led.
func (s Sequential) PFirstAhead() float64 {
	if s.Looks == 0 {
		return 1
	}
	return validP(s.MinPFirstAhead)
}

// PSecondAhead is PFirstAhead with the arms swapped.
func (s Sequential) PSecondAhead() float64 {
	if s.Looks == 0 {
		return 1
	}
	return validP(s.MinPSecondAhead)
}

// Observe folds in one look at the cumulative counts and returns the updated two-sided
// p-value. Counts are clamped as in [MSPRTPValue].
func (s *Sequential) Observe(x1, n1, x2, n2 int, tau float64) float64 {
	one := MSPRTPValue(x1, n1, x2, n2, tau)
	first, second := s.PFirstAhead(), s.PSecondAhead()
	switch r1, r2 := Rate(x1, n1), Rate(x2, n2); {
	case r1 > r2:
		first = math.Min(first, one)
	case r2 > r1:
		second = math.Min(second, one)
	}
	s.MinP = math.Min(s.P(), one)
	s.MinPFirstAhead = first
	s.MinPSecondAhead = second
	s.Looks++
	return s.MinP
}
