package stats

import (
	"math"
	"testing"
)

func inUnit(v float64) bool { return v >= 0 && v <= 1 }

// Whatever the counts and parameters, nothing panics and nothing is NaN. `go test` runs
// the seeds; `go test -fuzz=FuzzNoNaN` explores further.
func FuzzNoNaN(f *testing.F) {
	f.Add(81, 263, 15, 148, 0.95, 0.02)
	f.Add(0, 0, 0, 0, 0.95, 0.02)
	f.Add(-5, 3, 10, -1, 2.0, -1.0)
	f.Add(100, 100, 0, 100, 0.5, 1e-9)
	f.Add(math.MaxInt32, math.MaxInt32, 1, math.MaxInt32, 0.999999, 1e6)
	f.Fuzz(func(t *testing.T, x1, n1, x2, n2 int, conf, tau float64) {
		lo, hi := Wilson(x1, n1, conf)
		if !inUnit(lo) || !inUnit(hi) || lo > hi {
			t.Fatalf("Wilson(%d, %d, %v) = (%v, %v)", x1, n1, conf, lo, hi)
		}
		r := Lift(x1, n1, x2, n2, conf)
		for _, v := range []float64{r.VariantRate, r.HoldoutRate, r.Diff, r.DiffLo, r.DiffHi, r.Relative} {
			if math.IsNaN(v) {
				t.Fatalf("Lift(%d/%d vs %d/%d, %v) = %+v has NaN", x1, n1, x2, n2, conf, r)
			}
		}
		if r.DiffLo < -1 || r.DiffHi > 1 || r.DiffLo > r.DiffHi {
			t.Fatalf("Lift(%d/%d vs %d/%d, %v) = %+v: interval out of order or range", x1, n1, x2, n2, conf, r)
		}
		if p := MSPRTPValue(x1, n1, x2, n2, tau); !inUnit(p) {
			t.Fatalf("MSPRTPValue(%d/%d vs %d/%d, %v) = %v", x1, n1, x2, n2, tau, p)
		}
		chi2, p := SRM([]int{x1, n1, x2}, []float64{conf, tau, 1})
		if math.IsNaN(chi2) || chi2 < 0 || !inUnit(p) {
			t.Fatalf("SRM = (%v, %v)", chi2, p)
		}
		if q := GammaQ(conf, tau); !inUnit(q) {
			t.Fatalf("GammaQ(%v, %v) = %v", conf, tau, q)
		}
		d, _ := Decide([]Arm{
			{Name: "a", Assigned: n1, Matured: n1, Converted: x1},
			{Name: "b", Assigned: n2, Matured: n2, Converted: x2},
		}, WinnerRule{MinPerArm: 1, Alpha: 0.05, Tau: tau}, State{})
		for _, pr := range d.Pairs {
			if !inUnit(pr.P) || !inUnit(pr.Adjusted) || math.IsNaN(pr.RateA) || math.IsNaN(pr.RateB) {
				t.Fatalf("Decide pair %+v", pr)
			}
		}
	})
}
