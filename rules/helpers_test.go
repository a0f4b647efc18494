package rules

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// testSchema is the schema the tests compile against.
var testSchema = Schema{
	Traits: map[string]sdk.TraitType{
		"age":          sdk.TypeNumber,
		"ltv":          sdk.TypeNumber,
		"orders":       sdk.TypeNumber,
		"country":      sdk.TypeString,
		"city":         sdk.TypeString,
		"gender":       sdk.TypeString,
		"plan":         sdk.TypeString,
		"device":       sdk.TypeString,
		"app_version":  sdk.TypeString,
		"first_name":   sdk.TypeString,
		"vip":          sdk.TypeBool,
		"email_opt_in": sdk.TypeBool,
		"signed_up_at": sdk.TypeTime,
		"birthday":     sdk.TypeTime,
		"interests":    sdk.TypeStringList,
		"tags":         sdk.TypeStringList,
		"first name":   sdk.TypeString, // not an identifier: hidden
		"count":        sdk.TypeNumber, // an expr builtin: hidden
	},
	Events:   []string{"purchase", "page_view", "email_open"},
	RFMEvent: "purchase",
}

// testNow is the evaluation time of the tests.
var testNow = time.Date(2026, 11, 24, 15, 30, 0, 0, time.UTC)

// testCustomers generates n deterministic customers with missing values,
// unicode, empty lists and events around testNow, plus hand-made edges.
func testCustomers(n int, seed uint64) []MemCustomer {
	r := rand.New(rand.NewPCG(seed, 7))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	maybe := func(p float64) bool { return r.Float64() < p }
	var out []MemCustomer
	for i := range n {
		tr := map[string]sdk.Value{}
		if maybe(0.85) {
			tr["age"] = sdk.Number(float64(14 + r.IntN(70)))
		}
		if maybe(0.7) {
			tr["ltv"] = sdk.Number(float64(r.IntN(100000)) / 100)
		}
		if maybe(0.8) {
			tr["orders"] = sdk.Number(float64(r.IntN(30)))
		}
		if maybe(0.9) {
			tr["country"] = sdk.String(pick("DE", "AT", "CH", "FR", "US", "GB", "JP", ""))
		}
		if maybe(0.8) {
			tr["city"] = sdk.String(pick("Berlin", "München", "Zürich", "Paris", "東京", "Köln", "New York", "berlin"))
		}
		if maybe(0.9) {
			tr["gender"] = sdk.String(pick("female", "male", "nonbinary"))
		}
		if maybe(0.95) {
			tr["plan"] = sdk.String(pick("free", "pro", "enterprise"))
		}
		if maybe(0.9) {
			tr["device"] = sdk.String(pick("ios", "android", "web", "iOS"))
		}
		if maybe(0.8) {
			tr["app_version"] = sdk.String(pick("4.9.1", "5.0.0", "5.2.0", "6.0.0", "10.1"))
		}
		if maybe(0.9) {
			tr["first_name"] = sdk.String(pick("Émile", "Chloe", "Ngozi", "Farid", "Åsa", "Zoë", "李", "O'Brien", ""))
		}
		if maybe(0.8) {
			tr["vip"] = sdk.Bool(maybe(0.2))
		}
		if maybe(0.7) {
			tr["email_opt_in"] = sdk.Bool(maybe(0.6))
		}
		if maybe(0.9) {
			tr["signed_up_at"] = sdk.Time(testNow.AddDate(0, 0, -r.IntN(900)).Add(-time.Duration(r.IntN(86400)) * time.Second))
		}
		if maybe(0.5) {
			tr["birthday"] = sdk.Time(time.Date(1950+r.IntN(60), time.Month(1+r.IntN(12)), 1+r.IntN(28), 0, 0, 0, 0, time.UTC))
		}
		if maybe(0.85) {
			k := r.IntN(4)
			var l []string
			for range k {
				l = append(l, pick("running", "travel", "cooking", "yoga", "books", "outdoor", "sports", "photography", "café"))
			}
			tr["interests"] = sdk.List(l...)
		}
		if maybe(0.3) {
			tr["tags"] = sdk.List(pick("a", "b"), pick("c", "ünï"))
		}
		if maybe(0.2) {
			tr["count"] = sdk.Number(3)
		}
		var evs []EventRecord
		ne := r.IntN(25)
		for range ne {
			name := pick("purchase", "page_view", "page_view", "email_open")
			e := EventRecord{Name: name, Time: testNow.AddDate(0, 0, -r.IntN(400)).Add(-time.Duration(r.IntN(86400)) * time.Second)}
			if maybe(0.02) {
				e.Time = testNow.AddDate(0, 0, 1+r.IntN(3)) // a future event
			}
			if name == "purchase" {
				e.Value = float64(r.IntN(20000)) / 100
			}
			evs = append(evs, e)
		}
		out = append(out, MemCustomer{ID: fmt.Sprintf("c%04d", i), Traits: tr, Events: evs, Deleted: maybe(0.02)})
	}
	// Edges: nothing at all; everything at a window boundary.
	out = append(out, MemCustomer{ID: "empty"})
	out = append(out, MemCustomer{ID: "edges", Traits: map[string]sdk.Value{
		"age": sdk.Number(0), "ltv": sdk.Number(-0.5), "orders": sdk.Number(1e300), "country": sdk.String(""),
		"interests": sdk.List(), "vip": sdk.Bool(false), "signed_up_at": sdk.Time(testNow),
		"city": sdk.String("\u00e9\u0301"), "tags": sdk.List("", ""),
	}, Events: []EventRecord{
		{Name: "purchase", Time: testNow.AddDate(0, 0, -89), Value: 0.1},
		{Name: "purchase", Time: testNow.AddDate(0, 0, -90), Value: 0.2},
		{Name: "purchase", Time: testNow.AddDate(0, 0, -90), Value: 0.3},
		{Name: "page_view", Time: testNow.Truncate(24 * time.Hour)},
	}})
	return out
}
