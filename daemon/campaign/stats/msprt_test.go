package stats

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

// mixtureLogLRByQuadrature computes log Lambda for an observed difference theta with
// variance v straight from its definition, independently of the closed form:
//
//	Lambda = integral N(theta; t, v) / N(theta; 0, v) * N(t; 0, tau^2) dt
//
// by composite Simpson's rule over t in [-1.5, 1.5] (a difference of rates lies in
// [-1, 1]), factoring out the integrand's maximum on the grid so large effects do not
// overflow.
func mixtureLogLRByQuadrature(theta, v, tau float64) float64 {
	const steps = 200_000 // even
	lo, hi := -1.5, 1.5
	h := (hi - lo) / steps
	logf := func(t float64) float64 {
		logLik := -(theta-t)*(theta-t)/(2*v) + theta*theta/(2*v)
		logPrior := -t*t/(2*tau*tau) - math.Log(tau*math.Sqrt(2*math.Pi))
		return logLik + logPrior
	}
	peak := math.Inf(-1)
	for i := 0; i <= steps; i++ {
		peak = math.Max(peak, logf(lo+float64(i)*h))
	}
	sum := 0.0
	for i := 0; i <= steps; i++ {
		w := 2.0
		switch {
		case i == 0 || i == steps:
			w = 1
		case i%2 == 1:
			w = 4
		}
		sum += w * math.Exp(logf(lo+float64(i)*h)-peak)
	}
	return peak + math.Log(sum*h/3)
}

func TestMSPRTClosedFormMatchesQuadrature(t *testing.T) {
	tests := []struct {
		x1, n1, x2, n2 int
		tau            float64
	}{
		{120, 1000, 100, 1000, 0.02},
		{100, 1000, 120, 1000, 0.02},
		{30, 200, 45, 210, 0.05},
		{5200, 50000, 5000, 50000, 0.02},
		{170, 1000, 100, 1000, 0.02},
		{3, 10, 7, 10, 0.1},
		{400, 1000, 100, 1000, 0.02}, // a huge effect: Lambda around e^150
		{100, 1000, 100, 1000, 0.02},
	}
	for _, tc := range tests {
		p1 := float64(tc.x1) / float64(tc.n1)
		p2 := float64(tc.x2) / float64(tc.n2)
		v := p1*(1-p1)/float64(tc.n1) + p2*(1-p2)/float64(tc.n2)
		want := mixtureLogLRByQuadrature(p1-p2, v, tc.tau)
		got := MSPRTLogLR(tc.x1, tc.n1, tc.x2, tc.n2, tc.tau)
		if math.Abs(got-want) > 1e-8*math.Max(1, math.Abs(want)) {
			t.Errorf("MSPRTLogLR(%d/%d vs %d/%d, tau %v) = %.12g, quadrature gives %.12g",
				tc.x1, tc.n1, tc.x2, tc.n2, tc.tau, got, want)
		}
		wantP := math.Min(1, math.Exp(-want))
		if gotP := MSPRTPValue(tc.x1, tc.n1, tc.x2, tc.n2, tc.tau); math.Abs(gotP-wantP) > 1e-8*math.Max(wantP, 1e-300) {
			t.Errorf("MSPRTPValue(%d/%d vs %d/%d) = %.12g, quadrature gives %.12g", tc.x1, tc.n1, tc.x2, tc.n2, gotP, wantP)
		}
	}
}

func TestMSPRTProperties(t *testing.T) {
	// No observed difference: Lambda = sqrt(V/(V+tau^2)) < 1, so p = 1.
	for _, c := range [][4]int{{100, 1000, 100, 1000}, {100, 1000, 50, 500}, {0, 10, 0, 10}, {10, 10, 20, 20}} {
		if p := MSPRTPValue(c[0], c[1], c[2], c[3], 0.02); p != 1 {
			t.Errorf("MSPRTPValue(%d/%d vs %d/%d) = %v, want 1 with no difference", c[0], c[1], c[2], c[3], p)
		}
	}
	// p decreases as the effect grows, and does not depend on which arm is first.
	prev := 1.0
	strictlyFell := 0
	for x1 := 100; x1 <= 170; x1 += 2 {
		p := MSPRTPValue(x1, 1000, 100, 1000, 0.02)
		if p > prev {
			t.Fatalf("MSPRTPValue(%d/1000 vs 100/1000) = %v, above %v for a smaller effect", x1, p, prev)
		}
		if p < prev {
			strictlyFell++
		}
		if q := MSPRTPValue(100, 1000, x1, 1000, 0.02); math.Abs(q-p) > 1e-15 {
			t.Errorf("swapping arms changes p: %v vs %v", p, q)
		}
		prev = p
	}
	if strictlyFell < 20 || prev > 0.01 {
		t.Errorf("p fell %d times to %v over effects 0..0.07; want a steady fall to a small p", strictlyFell, prev)
	}
	// The same rates on more members give a smaller p once the effect is visible.
	if small, large := MSPRTPValue(150, 1000, 100, 1000, 0.02), MSPRTPValue(1500, 10000, 1000, 10000, 0.02); !(large < small) {
		t.Errorf("p on 10x the members = %v, want below %v", large, small)
	}
}

func TestMSPRTDegenerate(t *testing.T) {
	tests := []struct {
		name           string
		x1, n1, x2, n2 int
		tau            float64
		wantOne        bool
	}{
		{"empty arm", 0, 0, 10, 100, 0.02, true},
		{"both empty", 0, 0, 0, 0, 0.02, true},
		{"tau zero", 50, 100, 10, 100, 0, true},
		{"tau negative", 50, 100, 10, 100, -1, true},
		{"tau NaN", 50, 100, 10, 100, math.NaN(), true},
		{"tau infinite", 50, 100, 10, 100, math.Inf(1), true},
		{"all zero in both", 0, 100, 0, 100, 0.02, true},
		{"all one in both", 100, 100, 100, 100, 0.02, true},
		{"zero variance, total difference", 0, 100, 100, 100, 0.02, false},
		{"converted above n clamps", 150, 100, 0, 100, 0.02, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := MSPRTPValue(tc.x1, tc.n1, tc.x2, tc.n2, tc.tau)
			if math.IsNaN(p) || p < 0 || p > 1 {
				t.Fatalf("p = %v, want within [0, 1]", p)
			}
			if tc.wantOne && p != 1 {
				t.Errorf("p = %v, want 1", p)
			}
			if !tc.wantOne && p > 1e-10 {
				t.Errorf("p = %v, want tiny for a total difference", p)
			}
		})
	}
}

// The variance floor never acts when both arms have a conversion and a non-conversion,
// nor in these common one-sided cases; it acts when an arm is all-0 and the plug-in V is
// nearly 0.
func TestMSPRTVarianceFloor(t *testing.T) {
	for _, c := range [][4]int{{1, 1000, 0, 1000}, {0, 5000, 1, 10}, {999, 1000, 1000, 1000}, {1, 2, 1, 2}, {1, 2, 1, 100000}, {1, 100000, 99999, 100000}} {
		p1 := float64(c[0]) / float64(c[1])
		p2 := float64(c[2]) / float64(c[3])
		plugin := p1*(1-p1)/float64(c[1]) + p2*(1-p2)/float64(c[3])
		if got := msprtVariance(c[0], c[1], c[2], c[3]); got != plugin {
			t.Errorf("msprtVariance(%v) = %v, want the plug-in %v", c, got, plugin)
		}
	}
	if v := msprtVariance(0, 100, 0, 100); !(v > 0) {
		t.Errorf("msprtVariance(0/100 vs 0/100) = %v, want a positive floor", v)
	}
	// 1 of 10,000 against 0 of 10: plug-in V is 1e-8, the floor (about 5e-6) takes over.
	plugin := 1e-4 * (1 - 1e-4) / 10000
	f := 0.5 / 10010
	floor := f * (1 - f) * (1.0/10000 + 1.0/10)
	if v := msprtVariance(1, 10000, 0, 10); math.Abs(v-floor) > 1e-12*floor || !(floor > plugin) {
		t.Errorf("msprtVariance(1/10000 vs 0/10) = %v, want the floor %v above the plug-in %v", v, floor, plugin)
	}
}

func TestSequentialRunningMinimum(t *testing.T) {
	var s Sequential
	if s.P() != 1 || s.PFirstAhead() != 1 || s.PSecondAhead() != 1 {
		t.Fatalf("zero Sequential p-values = %v %v %v, want 1", s.P(), s.PFirstAhead(), s.PSecondAhead())
	}
	// Arm 1 leads, then the rates meet, then arm 2 leads.
	looks := [][4]int{{20, 100, 10, 100}, {45, 200, 20, 200}, {60, 300, 45, 300}, {70, 400, 70, 400}, {75, 500, 100, 500}}
	prev := 1.0
	wantFirst, wantSecond := 1.0, 1.0
	sawRise := false
	for i, l := range looks {
		one := MSPRTPValue(l[0], l[1], l[2], l[3], 0.02)
		got := s.Observe(l[0], l[1], l[2], l[3], 0.02)
		if want := math.Min(prev, one); got != want {
			t.Fatalf("look %d: p = %v, want min(%v, %v)", i, got, prev, one)
		}
		if one > prev {
			sawRise = true
		}
		switch {
		case l[0]*l[3] > l[2]*l[1]:
			wantFirst = math.Min(wantFirst, one)
		case l[0]*l[3] < l[2]*l[1]:
			wantSecond = math.Min(wantSecond, one)
		}
		if s.PFirstAhead() != wantFirst || s.PSecondAhead() != wantSecond {
			t.Fatalf("look %d: directional p = %v (arm 1 ahead), %v (arm 2 ahead), want %v, %v",
				i, s.PFirstAhead(), s.PSecondAhead(), wantFirst, wantSecond)
		}
		// Through JSON between looks, as the daemon persists it.
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back Sequential
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		if back != s {
			t.Fatalf("JSON round trip %s gave %+v, want %+v", b, back, s)
		}
		s = back
		prev = got
	}
	if !sawRise {
		t.Fatal("test data never made the one-look p rise; the running minimum went unchecked")
	}
	if s.Looks != len(looks) {
		t.Errorf("Looks = %d, want %d", s.Looks, len(looks))
	}
	if !(wantSecond < 1 && wantFirst < 1) || s.P() != math.Min(wantFirst, wantSecond) {
		t.Errorf("p = %v from directional %v and %v; want both below 1 and p their minimum", s.P(), wantFirst, wantSecond)
	}
	if got := RunningPValue(math.NaN(), 100, 1000, 100, 1000, 0.02); got != 1 {
		t.Errorf("RunningPValue(NaN prev, no difference) = %v, want 1", got)
	}
	if got := RunningPValue(0.01, 100, 1000, 100, 1000, 0.02); got != 0.01 {
		t.Errorf("RunningPValue(0.01, no difference) = %v, want 0.01", got)
	}
}

// aaSimulation runs reps experiments in which both arms convert at rate p (or p and
// p+effect), looking every batch members per arm up to looks batches, and counts how
// many the always-valid mSPRT and a naive fixed-horizon two-sided z-test, each checked at
// every look, declare significant at alpha.
func aaSimulation(seed uint64, reps, looks, batch int, p, effect, tau, alpha float64) (msprt, naive int) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	zCrit := zTwoSided(1 - alpha)
	for r := 0; r < reps; r++ {
		var x1, x2, n int
		var seq Sequential
		msprtHit, naiveHit := false, false
		for l := 0; l < looks; l++ {
			for i := 0; i < batch; i++ {
				if rng.Float64() < p+effect {
					x1++
				}
				if rng.Float64() < p {
					x2++
				}
			}
			n += batch
			if seq.Observe(x1, n, x2, n, tau) <= alpha {
				msprtHit = true
			}
			pool := float64(x1+x2) / float64(2*n)
			se := math.Sqrt(pool * (1 - pool) * 2 / float64(n))
			if se > 0 && math.Abs(float64(x1-x2)/float64(n))/se > zCrit {
				naiveHit = true
			}
		}
		if msprtHit {
			msprt++
		}
		if naiveHit {
			naive++
		}
	}
	return msprt, naive
}

// Under continuous monitoring of A/A tests the always-valid p-value keeps the false
// positive rate at or below alpha, while a fixed-horizon z-test checked at every look
// exceeds it (the "peeking" problem of Johari et al.).
func TestMSPRTAlwaysValidUnderContinuousMonitoring(t *testing.T) {
	const (
		reps  = 1000
		looks = 30
		batch = 100
		alpha = 0.05
	)
	msprt, naive := aaSimulation(1, reps, looks, batch, 0.10, 0, 0.02, alpha)
	msprtRate := float64(msprt) / reps
	naiveRate := float64(naive) / reps
	t.Logf("A/A, %d looks of %d per arm, %d experiments: mSPRT false positives %.3f, naive z-test %.3f",
		looks, batch, reps, msprtRate, naiveRate)
	if msprtRate > alpha {
		t.Errorf("mSPRT false-positive rate %.3f under continuous monitoring, want <= %v", msprtRate, alpha)
	}
	if naiveRate <= 2*alpha {
		t.Errorf("naive z-test false-positive rate %.3f, want well above %v (peeking inflates it)", naiveRate, alpha)
	}

	// Not trivially conservative: a real effect of 3 points on 10% is found.
	found, _ := aaSimulation(2, 200, looks, batch, 0.10, 0.03, 0.02, alpha)
	power := float64(found) / 200
	t.Logf("10%% vs 13%%, same looks, 200 experiments: mSPRT found the effect in %.2f", power)
	if power < 0.6 {
		t.Errorf("mSPRT found a 10%% -> 13%% effect in %.2f of experiments, want >= 0.6", power)
	}
}
