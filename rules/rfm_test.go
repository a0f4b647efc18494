package rules

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

// referenceQuintiles is the definition ComputeRFM documents, written the
// slow and obvious way: each value's tied ranks found by binary search.
func referenceQuintiles(rows []uint32, vals []float64, dst []uint8) {
	n := len(vals)
	sorted := slices.Clone(vals)
	slices.Sort(sorted)
	for i, v := range vals {
		lo := sort.SearchFloat64s(sorted, v)
		hi := sort.Search(n, func(j int) bool { return sorted[j] > v })
		p := (float64(lo+hi-1)/2 + 0.5) / float64(n)
		dst[rows[i]] = uint8(min(max(1+int(math.Floor(5*p)), 1), 5))
	}
}

// TestRFMMatchesReference checks the counting and distinct-value paths
// against the reference on populations with many ties, few ties, a range
// too wide for counting, and sizes that do not divide by 5.
func TestRFMMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		n    int
		gen  func() uint64
	}{
		{"one value", 7, func() uint64 { return 3 }},
		{"few values", 1001, func() uint64 { return uint64(r.IntN(4)) }},
		{"days", 5003, func() uint64 { return uint64(20000 + r.IntN(365)) }},
		{"skewed counts", 4000, func() uint64 { return uint64(r.ExpFloat64() * 3) }},
		{"too wide to count", 3000, func() uint64 { return uint64(r.IntN(10)) << 30 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := make([]uint32, tc.n)
			ints := make([]uint64, tc.n)
			floats := make([]float64, tc.n)
			for i := range rows {
				rows[i] = uint32(2 * i) // rows need not be contiguous
				ints[i] = tc.gen()
				floats[i] = float64(ints[i]) / 7
			}
			want := make([]uint8, 2*tc.n)
			referenceQuintiles(rows, floats, want)
			got := make([]uint8, 2*tc.n)
			intQuintiles(rows, ints, got)
			require.Equal(t, want, got, "integer path")
			got = make([]uint8, 2*tc.n)
			quintiles(rows, floats, got)
			require.Equal(t, want, got, "float path")
		})
	}
}

func TestUsesRFM(t *testing.T) {
	set, err := LoadFiles(map[string][]byte{"s.yaml": []byte(`version: 1
segments:
  champions:
    when: rfm.r >= 4 && rfm.f >= 4
  adults:
    when: age >= 18
  champion_adults:
    when: in_segment("champions") && age >= 18
`)}, LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	require.True(t, set.Segment("champions").UsesRFM())
	require.False(t, set.Segment("champion_adults").UsesRFM(), "in_segment reads membership, not quintiles")
	require.True(t, set.UsesRFM(nil))
	require.True(t, set.UsesRFM([]string{"adults", "champions"}))
	require.False(t, set.UsesRFM([]string{"adults", "champion_adults", "gone"}))
}

// BenchmarkComputeRFM: 1M customers, 70% buyers with up to 20 purchase days
// over a year.
func BenchmarkComputeRFM(b *testing.B) {
	const n = 1_000_000
	r := rand.New(rand.NewPCG(3, 4))
	e := &EventColumn{Start: make([]uint32, n), N: make([]uint16, n), First: make([]uint16, n), Last: make([]uint16, n)}
	live := NewBitmap(n)
	for row := range n {
		live.Set(uint32(row))
		if r.IntN(10) >= 7 {
			continue
		}
		k := 1 + r.IntN(20)
		e.Start[row], e.N[row] = uint32(len(e.Days)), uint16(k)
		day := uint16(20000 + r.IntN(365))
		e.First[row] = day
		for range k {
			e.Days = append(e.Days, day)
			e.Counts = append(e.Counts, uint16(1+r.IntN(3)))
			e.Sums = append(e.Sums, float64(r.IntN(30000))/100)
			day += uint16(r.IntN(3))
		}
		e.Last[row] = day
	}
	b.ResetTimer()
	for range b.N {
		ComputeRFM(e, live, n)
	}
}
