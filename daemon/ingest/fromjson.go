package ingest

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// TraitsFromJSON decodes a stored traits document (as Customers writes it)
// into typed values, using the schema's types. A stored value whose type no
// longer matches the schema (the source changed a column's type) is skipped
// and reported in the returned slice of trait names.
func TraitsFromJSON(doc []byte, types map[string]sdk.TraitType) (map[string]sdk.Value, []string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(doc, &raw); err != nil {
		return nil, nil, fmt.Errorf("stored traits are not a JSON object: %w", err)
	}
	out := make(map[string]sdk.Value, len(raw))
	var bad []string
	for name, r := range raw {
		t, ok := types[name]
		if !ok || string(r) == "null" {
			continue
		}
		var v sdk.Value
		var err error
		switch t {
		case sdk.TypeString:
			v.Type = t
			err = json.Unmarshal(r, &v.Str)
		case sdk.TypeNumber:
			v.Type = t
			err = json.Unmarshal(r, &v.Num)
		case sdk.TypeBool:
			v.Type = t
			err = json.Unmarshal(r, &v.Bool)
		case sdk.TypeTime:
			var s string
			if err = json.Unmarshal(r, &s); err == nil {
				v.Type = t
				v.Time, err = time.Parse(time.RFC3339Nano, s)
			}
		case sdk.TypeStringList:
			v.Type = t
			err = json.Unmarshal(r, &v.List)
		default:
			continue
		}
		if err != nil {
			bad = append(bad, name)
			continue
		}
		out[name] = v
	}
	return out, bad, nil
}
