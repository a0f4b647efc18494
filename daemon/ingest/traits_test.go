package ingest_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
)

// TestCustomersJSONMatchesEncodingJSON: the hand-written encoder produces
// what encoding/json would for the same values.
func TestCustomersJSONMatchesEncodingJSON(t *testing.T) {
	tenth, fifth := 0.1, 0.2
	ts := time.Date(2026, 2, 3, 4, 5, 6, 789_000_000, time.FixedZone("x", 3600))
	traits := map[string]sdk.Value{
		"name":    sdk.String(`Zoë "Z" <zoe>&\ back` + "\n\t\x01"),
		"emoji":   sdk.String("🎉 ünïcødé"),
		"age":     sdk.Number(41),
		"ratio":   sdk.Number(tenth + fifth),
		"big":     sdk.Number(1e21),
		"neg":     sdk.Number(-3.5e-7),
		"nan":     sdk.Number(math.NaN()),
		"vip":     sdk.Bool(true),
		"since":   sdk.Time(ts),
		"tags":    sdk.List("a", "b\"c"),
		"empty":   sdk.List(),
		"removed": {},
	}
	rows, err := ingest.Customers([]sdk.Customer{{ID: "c1", Traits: traits}, {ID: "c2", Traits: map[string]sdk.Value{"z": sdk.Number(1)}}})
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal(rows[0].Traits, &got), string(rows[0].Traits))
	want := map[string]any{
		"name": `Zoë "Z" <zoe>&\ back` + "\n\t\x01", "emoji": "🎉 ünïcødé", "age": 41.0, "ratio": 0.30000000000000004,
		"big": 1e21, "neg": -3.5e-7, "nan": nil, "vip": true, "since": "2026-02-03T03:05:06.789Z",
		"tags": []any{"a", `b"c`}, "empty": []any{}, "removed": nil,
	}
	require.Equal(t, want, got)
	require.JSONEq(t, `{"z":1}`, string(rows[1].Traits))
}
