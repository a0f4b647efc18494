package sqlsource

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// cursorVersion is the cursor format; a cursor of another version is not
// resumed.
const cursorVersion = 1

// cursor is where a pull stands. Incremental loading: the (updated_at, id)
// of the last row sent; the next page reads the rows after it in that
// order. Full reload: the id of the last row sent in the current pass, or
// Done between passes. The host stores it as an opaque string.
type cursor struct {
	V int `json:"v"`
	// F is the config's fingerprint: a cursor made for other rows, order
	// or traits does not apply.
	F  string   `json:"f"`
	U  keyValue `json:"u,omitzero"`
	ID keyValue `json:"id,omitzero"`
	// Done marks the end of a full-reload pass.
	Done bool `json:"done,omitempty"`
}

func (c cursor) encode() string {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("sql source: cursor: %v", err)) // only strings and bools
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor parses s. A cursor that cannot be used (malformed, another
// version, another fingerprint) yields the start and a reason to log.
func decodeCursor(s, fp string) (cursor, string) {
	start := cursor{V: cursorVersion, F: fp}
	if s == "" {
		return start, ""
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return start, "the cursor is not this plugin's (not base64)"
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil {
		return start, "the cursor is not this plugin's (" + err.Error() + ")"
	}
	switch {
	case c.V != cursorVersion:
		return start, fmt.Sprintf("the cursor has format version %d, this plugin writes %d", c.V, cursorVersion)
	case c.F != fp:
		return start, "the config changed since the cursor was made (table, query, where, key columns or traits)"
	}
	return c, ""
}

// keyValue is a key column's value in the cursor, typed so that it goes
// back to the database as the same type: kind 't' time (RFC 3339, UTC), 'i'
// int64, 'u' uint64, 'f' float64, 's' text, 'b' bytes (base64).
type keyValue struct {
	kind byte
	text string
}

func (k keyValue) IsZero() bool { return k.kind == 0 }

func (k keyValue) MarshalText() ([]byte, error) {
	return append([]byte{k.kind, ':'}, k.text...), nil
}

func (k *keyValue) UnmarshalText(b []byte) error {
	if len(b) < 2 || b[1] != ':' {
		return fmt.Errorf("bad key value %q", b)
	}
	kv := keyValue{kind: b[0], text: string(b[2:])}
	if _, err := kv.arg(); err != nil {
		return err
	}
	*k = kv
	return nil
}

// arg is the value as a query argument.
func (k keyValue) arg() (any, error) {
	switch k.kind {
	case 't':
		return time.Parse(time.RFC3339Nano, k.text)
	case 'i':
		return strconv.ParseInt(k.text, 10, 64)
	case 'u':
		return strconv.ParseUint(k.text, 10, 64)
	case 'f':
		return strconv.ParseFloat(k.text, 64)
	case 's':
		return k.text, nil
	case 'b':
		return base64.StdEncoding.DecodeString(k.text)
	}
	return nil, fmt.Errorf("bad key value kind %q", k.kind)
}

// keyOf turns a scanned key column value into a keyValue. Digits from an
// integer column (MySQL returns large unsigned values as text) become
// numbers, so that they are compared as numbers.
func keyOf(v any, c class) (keyValue, error) {
	switch x := v.(type) {
	case time.Time:
		return keyValue{'t', x.UTC().Format(time.RFC3339Nano)}, nil
	case int64:
		return keyValue{'i', strconv.FormatInt(x, 10)}, nil
	case uint64:
		if x <= math.MaxInt64 {
			return keyValue{'i', strconv.FormatUint(x, 10)}, nil
		}
		return keyValue{'u', strconv.FormatUint(x, 10)}, nil
	case float64:
		return keyValue{'f', strconv.FormatFloat(x, 'g', -1, 64)}, nil
	case float32:
		return keyValue{'f', strconv.FormatFloat(float64(x), 'g', -1, 32)}, nil
	case []byte:
		if !utf8.Valid(x) {
			return keyValue{'b', base64.StdEncoding.EncodeToString(x)}, nil
		}
		return keyOf(string(x), c)
	case string:
		switch c {
		case classInt:
			if _, err := strconv.ParseInt(x, 10, 64); err == nil {
				return keyValue{'i', x}, nil
			}
			if _, err := strconv.ParseUint(x, 10, 64); err == nil {
				return keyValue{'u', x}, nil
			}
		case classFloat:
			if f, err := strconv.ParseFloat(x, 64); err == nil {
				return keyValue{'f', strconv.FormatFloat(f, 'g', -1, 64)}, nil
			}
		}
		return keyValue{'s', x}, nil
	}
	return keyValue{}, fmt.Errorf("a %T cannot be a key", v)
}
