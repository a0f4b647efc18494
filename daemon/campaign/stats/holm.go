package stats

import (
	"math"
	"sort"
)

// Holm applies Holm's (1979) step-down procedure to the p-values p at family-wise error
// rate alpha. It returns, in the order of p, whether each hypothesis is rejected and its
// Holm-adjusted p-value: with the p-values sorted ascending p_(1) <= ... <= p_(m),
//
//	adjusted_(i) = min(1, max_{j<=i} (m-j+1) p_(j))
//
// and hypothesis (i) is rejected when adjusted_(i) <= alpha, which is the same as
// rejecting (1), (2), ... while p_(i) <= alpha/(m-i+1) and stopping at the first failure.
// Ties keep their input order. A NaN or out-of-range p-value is treated as 1 (never
// rejected); alpha outside (0, 1) or NaN rejects nothing. An empty p gives empty slices.
func Holm(p []float64, alpha float64) (reject []bool, adjusted []float64) {
	m := len(p)
	reject = make([]bool, m)
	adjusted = make([]float64, m)
	if m == 0 {
		return reject, adjusted
	}
	clean := make([]float64, m)
	for i, v := range p {
		if math.IsNaN(v) || v > 1 {
			v = 1
		}
		if v < 0 {
			v = 0
		}
		clean[i] = v
	}
	order := make([]int, m)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return clean[order[i]] < clean[order[j]] })
	running := 0.0
	for rank, idx := range order {
		adj := math.Min(1, float64(m-rank)*clean[idx])
		running = math.Max(running, adj)
		adjusted[idx] = running
	}
	validAlpha := alpha > 0 && alpha < 1
	for i := range adjusted {
		reject[i] = validAlpha && adjusted[i] <= alpha
	}
	return reject, adjusted
}
