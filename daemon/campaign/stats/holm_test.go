package stats

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Worked example from Wikipedia, "Holm–Bonferroni method", section "Example": four
// hypotheses with p-values 0.01, 0.04, 0.03 and 0.005 at alpha = 0.05; H1 and H4 are
// rejected, H2 and H3 are not. The adjusted p-values follow Holm (1979) as computed by
// R's p.adjust(method = "holm"): sorted 0.005*4, 0.01*3, 0.03*2, max(0.04*1, 0.06).
func TestHolmWorkedExample(t *testing.T) {
	reject, adjusted := Holm([]float64{0.01, 0.04, 0.03, 0.005}, 0.05)
	if diff := cmp.Diff([]bool{true, false, false, true}, reject); diff != "" {
		t.Errorf("Holm rejections (-want +got):\n%s", diff)
	}
	want := []float64{0.03, 0.06, 0.06, 0.02}
	if diff := cmp.Diff(want, adjusted, cmpopts.EquateApprox(0, 1e-15)); diff != "" {
		t.Errorf("Holm adjusted p-values (-want +got):\n%s", diff)
	}
}

func TestHolmProperties(t *testing.T) {
	tests := []struct {
		name     string
		p        []float64
		alpha    float64
		reject   []bool
		adjusted []float64
	}{
		{"empty", nil, 0.05, []bool{}, []float64{}},
		{"single is unadjusted", []float64{0.04}, 0.05, []bool{true}, []float64{0.04}},
		{"capped at one", []float64{0.6, 0.7}, 0.05, []bool{false, false}, []float64{1, 1}},
		// The step-down stops at the first failure: 0.03 > 0.05/2 so 0.04 < 0.05 is not rejected.
		{"stops at first failure", []float64{0.04, 0.03}, 0.05, []bool{false, false}, []float64{0.06, 0.06}},
		{"NaN and out of range treated as 1 and 0", []float64{math.NaN(), -0.1, 2}, 0.05, []bool{false, true, false}, []float64{1, 0, 1}},
		{"invalid alpha rejects nothing", []float64{0.001}, 0, []bool{false}, []float64{0.001}},
		{"ties keep order", []float64{0.01, 0.01}, 0.05, []bool{true, true}, []float64{0.02, 0.02}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reject, adjusted := Holm(tc.p, tc.alpha)
			if diff := cmp.Diff(tc.reject, reject); diff != "" {
				t.Errorf("rejections (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.adjusted, adjusted, cmpopts.EquateApprox(0, 1e-15)); diff != "" {
				t.Errorf("adjusted (-want +got):\n%s", diff)
			}
		})
	}
}
