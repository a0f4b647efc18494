package tracksource

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// JSON values are decoded with UseNumber: nil, bool, json.Number, string,
// []any or map[string]any.

// lookup walks path through nested objects. ok is false when a key is
// absent or a step is not an object; a JSON null is found (ok) as nil.
func lookup(m map[string]any, path []string) (any, bool) {
	var v any = m
	for _, key := range path {
		obj, isObj := v.(map[string]any)
		if !isObj {
			return nil, false
		}
		if v, isObj = obj[key]; !isObj {
			return nil, false
		}
	}
	return v, true
}

// kind describes a JSON value for messages, without its content (which may
// be personal data).
func kind(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		if v == "" {
			return "an empty string"
		}
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return "an unknown value"
}

// toValue converts a JSON value to a trait of type typ. A JSON null is the
// null Value (the trait is removed). problem says why v does not fit; it
// never quotes v.
func toValue(v any, typ sdk.TraitType) (val sdk.Value, problem string) {
	if v == nil {
		return sdk.Value{}, ""
	}
	switch typ {
	case sdk.TypeString:
		switch v := v.(type) {
		case string:
			return sdk.String(v), ""
		case json.Number:
			// A zip code or an account number sent as a JSON number.
			return sdk.String(v.String()), ""
		}
	case sdk.TypeNumber:
		switch v := v.(type) {
		case json.Number:
			if f, ok := parseNumber(v.String()); ok {
				return sdk.Number(f), ""
			}
			return sdk.Value{}, "is a number out of range"
		case string:
			if f, ok := parseNumber(strings.TrimSpace(v)); ok {
				return sdk.Number(f), ""
			}
			return sdk.Value{}, "is " + kind(v) + " that is not a number"
		}
	case sdk.TypeBool:
		switch v := v.(type) {
		case bool:
			return sdk.Bool(v), ""
		case string:
			if b, ok := parseBool(v); ok {
				return sdk.Bool(b), ""
			}
			return sdk.Value{}, "is " + kind(v) + " that is not true or false"
		}
	case sdk.TypeTime:
		if s, ok := v.(string); ok {
			if t, ok := parseTime(s); ok {
				return sdk.Time(t), ""
			}
			return sdk.Value{}, "is " + kind(v) + " that is not an ISO 8601 time"
		}
	case sdk.TypeStringList:
		if l, ok := v.([]any); ok {
			out := make([]string, 0, len(l))
			for _, e := range l {
				switch e := e.(type) {
				case string:
					out = append(out, e)
				case json.Number:
					out = append(out, e.String())
				default:
					return sdk.Value{}, "is a list holding " + kind(e) + "; a list trait holds strings"
				}
			}
			return sdk.List(out...), ""
		}
	}
	return sdk.Value{}, "is " + kind(v) + ", not a " + typ.String()
}

// parseNumber parses a finite decimal number.
func parseNumber(s string) (float64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		// ParseFloat also takes "Inf", "NaN", hex and underscores.
		if c := s[i]; !(c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E') {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// parseBool accepts the strings analytics code sends for booleans.
func parseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "1":
		return true, true
	case "false", "no", "0":
		return false, true
	}
	return false, false
}

// timeLayouts are the ISO 8601 forms accepted for timestamps and time
// traits. Layouts without a zone are read as UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04",
	"2006-01-02",
}

// parseTime parses an ISO 8601 time as analytics SDKs send it.
func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// maxPropertyDepth bounds how deep nested property objects are flattened;
// deeper objects are kept as JSON text.
const maxPropertyDepth = 4

// properties converts an event's properties to Values. Nested objects are
// flattened with dotted keys ("product.sku"); lists of strings and numbers
// become string lists; other lists (such as ecommerce "products", a list of
// objects) and objects nested too deep are kept as compact JSON text; nulls
// are left out.
func properties(m map[string]any) map[string]sdk.Value {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]sdk.Value, len(m))
	flatten(out, "", m, 0)
	return out
}

func flatten(out map[string]sdk.Value, prefix string, m map[string]any, depth int) {
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		switch v := v.(type) {
		case nil:
		case string:
			out[key] = sdk.String(v)
		case bool:
			out[key] = sdk.Bool(v)
		case json.Number:
			if f, ok := parseNumber(v.String()); ok {
				out[key] = sdk.Number(f)
			} else {
				out[key] = sdk.String(v.String())
			}
		case []any:
			if l, problem := toValue(v, sdk.TypeStringList); problem == "" {
				out[key] = l
			} else {
				out[key] = sdk.String(compactJSON(v))
			}
		case map[string]any:
			if depth+1 >= maxPropertyDepth {
				out[key] = sdk.String(compactJSON(v))
			} else {
				flatten(out, key, v, depth+1)
			}
		}
	}
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// stringID reads a userId or anonymousId: a non-empty string, or a number
// (some backends send numeric ids), as text.
func stringID(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		if strings.TrimSpace(v) == "" {
			return "", false
		}
		return v, true
	case json.Number:
		return v.String(), true
	}
	return "", false
}
