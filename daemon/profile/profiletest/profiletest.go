// Package profiletest generates the synthetic customers the benchmarks use:
// 14 traits (age and app_version sometimes missing) and 20 events a year
// across purchase, page_view and email_open, rolled up by day. It returns
// storage.Rollup (the same fields as profile.Rollup) so profile's own
// tests can use it without an import cycle.
package profiletest

import (
	"fmt"
	"math/rand/v2"

	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

var (
	countries = []string{"DE", "AT", "CH", "FR", "US", "GB", "ES", "IT", "NL", "PL", "SE", "JP", "BR", "IN", "CA"}
	genders   = []string{"female", "male", "nonbinary"}
	plans     = []string{"free", "pro", "enterprise"}
	devices   = []string{"ios", "android", "web"}
	versions  = []string{"4.8.0", "4.9.1", "5.0.0", "5.1.2", "5.2.0", "5.3.1", "6.0.0", "6.1.0", "6.2.3", "7.0.0"}
	topics    = []string{"running", "travel", "cooking", "yoga", "books", "outdoor", "sports", "photography", "music", "gaming", "fashion", "cycling"}
	cities    = func() []string {
		c := []string{"Berlin"}
		for i := range 59 {
			c = append(c, fmt.Sprintf("city%02d", i))
		}
		return c
	}()
	// Of 20 events a year: ~1/6 purchases, 1/2 page views, 1/3 email opens.
	events = []string{"purchase", "page_view", "page_view", "page_view", "email_open", "email_open"}
)

// Traits makes one customer's 14 traits.
func Traits(r *rand.Rand, today int64) map[string]sdk.Value {
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	t := map[string]sdk.Value{
		"lifetime_value": sdk.Number(float64(r.IntN(200000)) / 100),
		"orders":         sdk.Number(float64(r.IntN(12))),
		"sessions":       sdk.Number(float64(r.IntN(300))),
		"score":          sdk.Number(r.Float64()),
		"country":        sdk.String(pick(countries)),
		"city":           sdk.String(pick(cities)),
		"gender":         sdk.String(pick(genders)),
		"plan":           sdk.String(pick(plans)),
		"device":         sdk.String(pick(devices)),
		"signed_up_at":   sdk.Time(rules.DayTime(today - int64(r.IntN(1100)))),
		"vip":            sdk.Bool(r.IntN(10) == 0),
	}
	if r.IntN(100) < 85 {
		t["age"] = sdk.Number(float64(18 + r.IntN(62)))
	}
	if r.IntN(100) < 80 {
		t["app_version"] = sdk.String(pick(versions))
	}
	items := make([]string, r.IntN(5))
	for i := range items {
		items[i] = pick(topics)
	}
	t["interests"] = sdk.List(items...)
	return t
}

// Rollups appends one customer's year of 20 events, rolled up by day (one
// entry per name and day), to out.
func Rollups(r *rand.Rand, id string, today int64, out []storage.Rollup) []storage.Rollup {
	first := len(out)
	for range 20 {
		name := events[r.IntN(len(events))]
		day := int32(today) - int32(r.IntN(365))
		var sum float64
		if name == "purchase" {
			sum = float64(1+r.IntN(20000)) / 100
		}
		merged := false
		for i := first; i < len(out); i++ {
			if out[i].Name == name && out[i].Day == day {
				out[i].Count++
				out[i].Sum += sum
				merged = true
				break
			}
		}
		if !merged {
			out = append(out, storage.Rollup{CustomerID: id, Name: name, Day: day, Count: 1, Sum: sum})
		}
	}
	return out
}
