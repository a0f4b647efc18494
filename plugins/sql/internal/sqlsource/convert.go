package sqlsource

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cohortd/cohort/sdk"
)

// convert turns a scanned value (what database/sql gives an *any: nil,
// int64, uint64, float32/64, bool, []byte, string, time.Time) into a trait
// value of type typ. A missing value (NULL, an empty string for a
// non-string type, MySQL's zero date) returns ok with a null Value. A value
// that does not fit returns a problem, phrased without the value (which may
// be personal data).
func convert(v any, typ sdk.TraitType, c *column, pg *pgtype.Map) (val sdk.Value, problem string) {
	if v == nil {
		return sdk.Value{}, ""
	}
	switch typ {
	case sdk.TypeString:
		return toString(v, c)
	case sdk.TypeNumber:
		return toNumber(v, c)
	case sdk.TypeBool:
		return toBool(v, c)
	case sdk.TypeTime:
		return toTime(v)
	case sdk.TypeStringList:
		return toList(v, c, pg)
	}
	return sdk.Value{}, "has no type"
}

func toString(v any, c *column) (sdk.Value, string) {
	switch x := v.(type) {
	case string:
		if !utf8.ValidString(x) {
			return sdk.Value{}, "is not valid UTF-8 text"
		}
		return sdk.String(x), ""
	case []byte:
		if c.class == classBit {
			n, _ := bitsValue(x)
			return sdk.String(strconv.FormatUint(n, 10)), ""
		}
		if !utf8.Valid(x) {
			return sdk.Value{}, "is not valid UTF-8 text"
		}
		return sdk.String(string(x)), ""
	case int64:
		return sdk.String(strconv.FormatInt(x, 10)), ""
	case uint64:
		return sdk.String(strconv.FormatUint(x, 10)), ""
	case float64:
		if c.single {
			return sdk.String(strconv.FormatFloat(x, 'f', -1, 32)), ""
		}
		return sdk.String(strconv.FormatFloat(x, 'f', -1, 64)), ""
	case float32:
		return sdk.String(strconv.FormatFloat(float64(x), 'f', -1, 32)), ""
	case bool:
		return sdk.String(strconv.FormatBool(x)), ""
	case time.Time:
		if x.IsZero() {
			return sdk.Value{}, ""
		}
		return sdk.String(x.UTC().Format(time.RFC3339Nano)), ""
	}
	return sdk.Value{}, fmt.Sprintf("is a %T, which cannot be read as text", v)
}

func toNumber(v any, c *column) (sdk.Value, string) {
	var f float64
	switch x := v.(type) {
	case int64:
		f = float64(x)
	case uint64:
		f = float64(x)
	case float64:
		f = x
		if c.single { // PostgreSQL's driver widens real to float64
			f = shortest32(x)
		}
	case float32:
		f = shortest32(float64(x))
	case bool:
		if x {
			f = 1
		}
	case []byte:
		if c.class == classBit {
			n, ok := bitsValue(x)
			if !ok {
				return sdk.Value{}, "has more than 64 bits"
			}
			return sdk.Number(float64(n)), ""
		}
		return parseNumber(string(x))
	case string:
		return parseNumber(x)
	case time.Time:
		return sdk.Value{}, "is a time, not a number"
	default:
		return sdk.Value{}, fmt.Sprintf("is a %T, not a number", v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return sdk.Value{}, "is not a finite number"
	}
	return sdk.Number(f), ""
}

// shortest32 reads a single-precision float through its shortest decimal
// form: a real 0.1 is 0.1, not 0.10000000149011612.
func shortest32(f float64) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'g', -1, 32), 64)
	return r
}

func parseNumber(s string) (sdk.Value, string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return sdk.Value{}, ""
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		if err == nil || strings.Contains(err.Error(), "range") {
			return sdk.Value{}, "is not a finite number"
		}
		return sdk.Value{}, "is not a number"
	}
	return sdk.Number(f), ""
}

// bitsValue reads a MySQL BIT value (big-endian bytes).
func bitsValue(b []byte) (uint64, bool) {
	if len(b) > 8 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	return n, true
}

func toBool(v any, c *column) (sdk.Value, string) {
	switch x := v.(type) {
	case bool:
		return sdk.Bool(x), ""
	case int64:
		return numBool(float64(x))
	case uint64:
		return numBool(float64(x))
	case float64:
		return numBool(x)
	case float32:
		return numBool(float64(x))
	case []byte:
		if c.class == classBit || c.class == classBool && len(x) == 1 && x[0] <= 1 {
			n, _ := bitsValue(x)
			return numBool(float64(n))
		}
		return parseBool(string(x))
	case string:
		return parseBool(x)
	}
	return sdk.Value{}, fmt.Sprintf("is a %T, not a boolean", v)
}

func numBool(f float64) (sdk.Value, string) {
	switch f {
	case 0:
		return sdk.Bool(false), ""
	case 1:
		return sdk.Bool(true), ""
	}
	return sdk.Value{}, "is a number other than 0 or 1, not a boolean"
}

func parseBool(s string) (sdk.Value, string) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return sdk.Value{}, ""
	case "t", "true", "y", "yes", "on", "1":
		return sdk.Bool(true), ""
	case "f", "false", "n", "no", "off", "0":
		return sdk.Bool(false), ""
	}
	return sdk.Value{}, "is not a boolean (true/false, yes/no, 1/0)"
}

// timeLayouts are the text forms of times read from text columns, tried in
// order; a layout without a zone is UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

func toTime(v any) (sdk.Value, string) {
	switch x := v.(type) {
	case time.Time:
		if x.IsZero() { // MySQL's 0000-00-00: no date
			return sdk.Value{}, ""
		}
		return sdk.Time(x.UTC()), ""
	case []byte:
		return parseTime(string(x))
	case string:
		return parseTime(x)
	case int64, uint64, float64, float32:
		return sdk.Value{}, "is a number, not a time (in query, convert it, e.g. to_timestamp(col) or FROM_UNIXTIME(col))"
	}
	return sdk.Value{}, fmt.Sprintf("is a %T, not a time", v)
}

func parseTime(s string) (sdk.Value, string) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return sdk.Value{}, ""
	case "infinity", "-infinity":
		return sdk.Value{}, "is " + s + ", not a time"
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return sdk.Time(t.UTC()), ""
		}
	}
	return sdk.Value{}, "is not a time (RFC 3339, or YYYY-MM-DD[ hh:mm:ss])"
}

// toList reads a PostgreSQL array (a multi-dimensional one flattened), a
// MySQL SET or a JSON array.
func toList(v any, c *column, pg *pgtype.Map) (sdk.Value, string) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case []byte:
		s = string(x)
	default:
		return sdk.Value{}, fmt.Sprintf("is a %T, not a list", v)
	}
	if !utf8.ValidString(s) {
		return sdk.Value{}, "is not valid UTF-8 text"
	}
	switch {
	case c.class == classSet:
		if s == "" {
			return sdk.List(), ""
		}
		return sdk.List(strings.Split(s, ",")...), ""
	case c.class == classArray && pg != nil:
		var elems []*string
		if err := pg.SQLScanner(&elems).Scan(s); err != nil {
			return sdk.Value{}, "is not an array"
		}
		list := make([]string, 0, len(elems))
		for _, e := range elems {
			if e != nil {
				list = append(list, *e)
			}
		}
		return sdk.List(list...), ""
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return sdk.Value{}, ""
	}
	if !strings.HasPrefix(t, "[") {
		return sdk.Value{}, "is not a JSON array"
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(t)))
	dec.UseNumber()
	var elems []any
	if err := dec.Decode(&elems); err != nil || dec.More() {
		return sdk.Value{}, "is not a JSON array"
	}
	list := make([]string, 0, len(elems))
	for _, e := range elems {
		switch x := e.(type) {
		case nil:
		case string:
			list = append(list, x)
		case json.Number:
			list = append(list, x.String())
		case bool:
			list = append(list, strconv.FormatBool(x))
		default:
			return sdk.Value{}, "is a JSON array holding arrays or objects; elements must be strings, numbers or booleans"
		}
	}
	return sdk.List(list...), ""
}

// idString turns a scanned id into the customer id.
func idString(v any, c *column) (string, string) {
	val, problem := toString(v, c)
	if problem != "" {
		return "", problem
	}
	if val.Null() || val.Str == "" {
		return "", "is empty"
	}
	return val.Str, ""
}

// isDeleted reads the deleted_column: a boolean, a number (non-zero is
// deleted) or a timestamp (set is deleted). NULL is not deleted.
func isDeleted(v any, c *column) (bool, string) {
	switch x := v.(type) {
	case nil:
		return false, ""
	case bool:
		return x, ""
	case int64:
		return x != 0, ""
	case uint64:
		return x != 0, ""
	case float64:
		return x != 0, ""
	case float32:
		return x != 0, ""
	case time.Time:
		return !x.IsZero(), ""
	case []byte:
		if c.class == classBit || c.class == classBool {
			n, _ := bitsValue(x)
			return n != 0, ""
		}
		if c.class == classInt {
			n, err := strconv.ParseFloat(string(x), 64)
			return err == nil && n != 0, ""
		}
		return len(x) > 0, ""
	case string:
		// PostgreSQL's 'infinity' timestamps arrive as text: set, so deleted.
		return x != "", ""
	}
	return false, fmt.Sprintf("is a %T, which cannot say whether the row is deleted", v)
}
