// Package ingest turns what source plugins send into stored profiles.
package ingest

import (
	"encoding/json"
	"fmt"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// Customers converts plugin customers to storage rows: traits become one JSON
// object; a null Value becomes JSON null, which removes the trait on upsert.
// Times are stored as RFC 3339 UTC strings with millisecond precision.
func Customers(cs []sdk.Customer) ([]storage.Customer, error) {
	out := make([]storage.Customer, 0, len(cs))
	for _, c := range cs {
		if c.ID == "" {
			return nil, fmt.Errorf("a customer without an id")
		}
		m := make(map[string]any, len(c.Traits))
		for k, v := range c.Traits {
			m[k] = TraitJSON(v)
		}
		b, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("customer %q: %w", c.ID, err)
		}
		out = append(out, storage.Customer{ID: c.ID, Traits: b})
	}
	return out, nil
}

// TraitJSON is the JSON form of a trait value.
func TraitJSON(v sdk.Value) any {
	switch v.Type {
	case sdk.TypeString:
		return v.Str
	case sdk.TypeNumber:
		return v.Num
	case sdk.TypeBool:
		return v.Bool
	case sdk.TypeTime:
		return v.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	case sdk.TypeStringList:
		if v.List == nil {
			return []string{}
		}
		return v.List
	}
	return nil
}
