// Package ingest turns what source plugins send into stored profiles.
package ingest

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// Customers converts plugin customers to storage rows: traits become one JSON
// object with keys in sorted order; a null Value becomes JSON null, which
// removes the trait on upsert. Times are RFC 3339 UTC strings with
// millisecond precision. This is on the import hot path, so it writes JSON
// directly rather than through reflection.
func Customers(cs []sdk.Customer) ([]storage.Customer, error) {
	out := make([]storage.Customer, 0, len(cs))
	var (
		buf  []byte
		keys []string
	)
	for _, c := range cs {
		if c.ID == "" {
			return nil, fmt.Errorf("a customer without an id")
		}
		keys = keys[:0]
		for k := range c.Traits {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		start := len(buf)
		buf = append(buf, '{')
		for i, k := range keys {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, k)
			buf = append(buf, ':')
			v := c.Traits[k]
			buf = appendTrait(buf, &v)
		}
		buf = append(buf, '}')
		out = append(out, storage.Customer{ID: c.ID, Traits: buf[start:len(buf):len(buf)]})
	}
	return out, nil
}

// appendTrait appends the JSON form of a trait value.
func appendTrait(b []byte, v *sdk.Value) []byte {
	switch v.Type {
	case sdk.TypeString:
		return appendString(b, v.Str)
	case sdk.TypeNumber:
		if math.IsNaN(v.Num) || math.IsInf(v.Num, 0) {
			return append(b, "null"...)
		}
		return strconv.AppendFloat(b, v.Num, 'g', -1, 64)
	case sdk.TypeBool:
		return strconv.AppendBool(b, v.Bool)
	case sdk.TypeTime:
		b = append(b, '"')
		b = v.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
		return append(b, '"')
	case sdk.TypeStringList:
		b = append(b, '[')
		for i, s := range v.List {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, s)
		}
		return append(b, ']')
	}
	return append(b, "null"...)
}

// appendString appends s as a JSON string, escaping as encoding/json does.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
