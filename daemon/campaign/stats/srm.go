package stats

import "math"

// SRM tests the observed arm sizes against the configured weights for sample-ratio
// mismatch with Pearson's chi-square goodness-of-fit test. observed[i] is the number of
// members assigned to arm i and weights[i] its configured share in any unit (percentages,
// bucket counts); expected_i = N * weights[i] / sum(weights) with N = sum(observed), and
//
//	chi2 = sum_i (observed_i - expected_i)^2 / expected_i,  p = ChiSquareSurvival(chi2, k-1)
//
// where k counts the arms with a positive weight. Arms with weight 0 and no members are
// skipped; a member in an arm with weight 0 is an impossible assignment, so chi2 is +Inf
// and p is 0. Assumptions: members are assigned independently (per-customer hashing) and
// the weights did not change while these counts accrued — compute it per weights epoch.
// The approximation wants expected counts of about 5 or more per arm.
//
// Degenerate inputs return (0, 1), no evidence of mismatch: different lengths, fewer than
// two arms with positive weight, no members, or a negative, NaN or infinite weight.
// Negative observed counts are treated as 0.
func SRM(observed []int, weights []float64) (chi2, p float64) {
	if len(observed) != len(weights) {
		return 0, 1
	}
	total := 0.0
	sumW := 0.0
	k := 0
	for i, w := range weights {
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			return 0, 1
		}
		if w > 0 {
			k++
			sumW += w
		}
		total += float64(max(observed[i], 0))
	}
	if k < 2 || total == 0 {
		return 0, 1
	}
	for i, w := range weights {
		o := float64(max(observed[i], 0))
		if w == 0 {
			if o > 0 {
				return math.Inf(1), 0
			}
			continue
		}
		e := total * w / sumW
		chi2 += (o - e) * (o - e) / e
	}
	return chi2, ChiSquareSurvival(chi2, k-1)
}
