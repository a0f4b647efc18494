package rules

import (
	"math"
	"slices"
	"sort"
)

// ComputeRFM computes RFM quintiles over the live rows of n that had the
// event: recency from the last day, frequency from the total count and
// monetary from the total value. Quintile 5 is the best (most recent, most
// frequent, highest value). Equal values get the same quintile: a value's
// quintile is 1 + floor(5 * p), p being the midpoint of its tied ranks as a
// fraction of the population ((rank + 0.5) / count, ranks from 0). Rows
// without the event, and tombstoned rows, get 0 (missing).
//
// The profile store and MemTable (fixtures) both use it, so rules see the
// same quintiles in the daemon and in `cohort check`.
func ComputeRFM(e *EventColumn, live Bitmap, n int) RFMColumns {
	out := RFMColumns{R: make([]uint8, n), F: make([]uint8, n), M: make([]uint8, n)}
	if e == nil {
		return out
	}
	var rows []uint32
	for r := range n {
		if live.Has(uint32(r)) && e.First[r] != 0 {
			rows = append(rows, uint32(r))
		}
	}
	rec := make([]float64, len(rows))
	freq := make([]float64, len(rows))
	mon := make([]float64, len(rows))
	for i, r := range rows {
		rec[i] = float64(e.Last[r])
		s, k := e.Start[r], uint32(e.N[r])
		var cnt uint64
		var sum float64
		for j := s; j < s+k; j++ {
			if c := e.Counts[j]; c != OverflowCount {
				cnt += uint64(c)
			} else {
				cnt += uint64(e.Overflow[OverflowKey(r, e.Days[j])])
			}
			if e.Sums != nil {
				sum += e.Sums[j]
			}
		}
		freq[i], mon[i] = float64(cnt), sum
	}
	quintiles(rows, rec, out.R)
	quintiles(rows, freq, out.F)
	quintiles(rows, mon, out.M)
	return out
}

// quintiles writes each row's quintile (1..5, higher value = higher
// quintile) into dst.
func quintiles(rows []uint32, vals []float64, dst []uint8) {
	n := len(vals)
	if n == 0 {
		return
	}
	sorted := slices.Clone(vals)
	slices.Sort(sorted)
	for i, v := range vals {
		lo := sort.SearchFloat64s(sorted, v)
		hi := sort.Search(n, func(j int) bool { return sorted[j] > v })
		p := (float64(lo+hi-1)/2 + 0.5) / float64(n)
		q := 1 + int(math.Floor(5*p))
		dst[rows[i]] = uint8(min(max(q, 1), 5))
	}
}
