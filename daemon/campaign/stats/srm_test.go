package stats

import (
	"math"
	"testing"
)

// R. Kohavi, D. Tang and Y. Xu, "Trustworthy Online Controlled Experiments" (Cambridge
// University Press, 2020), chapter 3, section "Sample Ratio Mismatch": an experiment
// designed 50/50 with 821,588 users in control and 815,482 in treatment (ratio 0.993) has
// a p-value of about 1.8e-6, "extremely unlikely" by chance. With one degree of freedom the
// chi-square tail is also erfc(sqrt(chi2/2)), an independent check of the gamma code.
func TestSRMKohaviExample(t *testing.T) {
	chi2, p := SRM([]int{821588, 815482}, []float64{50, 50})
	e := (821588.0 + 815482.0) / 2
	wantChi2 := 2 * (821588 - e) * (821588 - e) / e
	if math.Abs(chi2-wantChi2) > 1e-9*wantChi2 {
		t.Errorf("chi2 = %v, want %v", chi2, wantChi2)
	}
	if math.Abs(p-1.8e-6) > 0.05e-6 {
		t.Errorf("p = %.3g, want 1.8e-6 (Kohavi, Tang & Xu 2020, chapter 3)", p)
	}
	if want := math.Erfc(math.Sqrt(chi2 / 2)); math.Abs(p-want) > 1e-10*want {
		t.Errorf("p = %.15g, want erfc(sqrt(chi2/2)) = %.15g", p, want)
	}
}

func TestSRM(t *testing.T) {
	tests := []struct {
		name     string
		observed []int
		weights  []float64
		chi2, p  float64
	}{
		{"perfect split", []int{500, 500}, []float64{50, 50}, 0, 1},
		// 3 arms 20/40/40 of 1000: expected 200, 400, 400; chi2 = 100/200 + 25/400 + 25/400.
		{"three arms", []int{210, 395, 395}, []float64{20, 40, 40}, 0.5 + 0.0625 + 0.0625, math.Exp(-0.625 / 2)},
		// Weights in any unit: the holdout's 1000 buckets against two variants' 4500 each.
		{"bucket weights", []int{100, 450, 450}, []float64{1000, 4500, 4500}, 0, 1},
		{"zero-weight arm with nobody is skipped", []int{500, 500, 0}, []float64{50, 50, 0}, 0, 1},
		{"zero-weight arm with members", []int{500, 500, 1}, []float64{50, 50, 0}, math.Inf(1), 0},
		{"length mismatch", []int{1, 2}, []float64{1}, 0, 1},
		{"single arm", []int{10}, []float64{100}, 0, 1},
		{"no members", []int{0, 0}, []float64{50, 50}, 0, 1},
		{"negative weight", []int{5, 5}, []float64{-1, 2}, 0, 1},
		{"NaN weight", []int{5, 5}, []float64{math.NaN(), 2}, 0, 1},
		{"nil", nil, nil, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chi2, p := SRM(tc.observed, tc.weights)
			if math.IsNaN(chi2) || math.IsNaN(p) {
				t.Fatalf("SRM = (%v, %v), want no NaN", chi2, p)
			}
			if !(chi2 == tc.chi2 || math.Abs(chi2-tc.chi2) <= 1e-12) || math.Abs(p-tc.p) > 1e-12 {
				t.Errorf("SRM(%v, %v) = (%v, %v), want (%v, %v)", tc.observed, tc.weights, chi2, p, tc.chi2, tc.p)
			}
		})
	}
}
