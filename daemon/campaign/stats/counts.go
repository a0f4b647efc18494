package stats

import "math"

// clampCounts makes (x, n) a valid binomial observation: a negative n is 0 and x is
// clamped into [0, n].
func clampCounts(x, n int) (int, int) {
	if n < 0 {
		n = 0
	}
	if x < 0 {
		x = 0
	}
	if x > n {
		x = n
	}
	return x, n
}

// Rate is x/n after clamping the counts (see the package doc); n = 0 gives 0.
func Rate(x, n int) float64 {
	x, n = clampCounts(x, n)
	if n == 0 {
		return 0
	}
	return float64(x) / float64(n)
}

// zTwoSided is the standard normal quantile z with P(|Z| <= z) = confidence, that is
// Phi^-1((1+confidence)/2) = sqrt(2) * erfinv(confidence). math.Erfinv follows Wichura's
// AS 241 (Applied Statistics 37:477-484, 1988), accurate to about 1e-16.
func zTwoSided(confidence float64) float64 {
	return math.Sqrt2 * math.Erfinv(confidence)
}
