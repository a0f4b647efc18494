package csvsource

import (
	"strconv"
	"strings"
)

// cursor says how far the host has committed: the SHA-256 of a version of
// the file (its content, after a fingerprint of the config that decides
// what is sent for it) and, while that version is being streamed, the byte
// offset just past the last row sent. Written as text:
//
//	csv1 sha256=<hex>                      the whole version is committed
//	csv1 sha256=<hex> at=<offset>          rows up to offset are committed
//	csv1 sha256=<hex> at=<offset> prev=<hex>
//
// prev is the last version committed in full before this one: the
// baseline for delete_missing when a stream is resumed.
type cursor struct {
	hash    string
	partial bool
	offset  int64
	prev    string
}

const cursorPrefix = "csv1"

func (c cursor) String() string {
	if c.hash == "" {
		return ""
	}
	var b strings.Builder
	b.WriteString(cursorPrefix + " sha256=" + c.hash)
	if c.partial {
		b.WriteString(" at=" + strconv.FormatInt(c.offset, 10))
		if c.prev != "" {
			b.WriteString(" prev=" + c.prev)
		}
	}
	return b.String()
}

// parseCursor parses String's output; ok is false for anything else.
func parseCursor(s string) (cursor, bool) {
	f := strings.Fields(s)
	if len(f) < 2 || f[0] != cursorPrefix {
		return cursor{}, false
	}
	var c cursor
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "sha256":
			if !isHexHash(v) {
				return cursor{}, false
			}
			c.hash = v
		case "at":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return cursor{}, false
			}
			c.partial, c.offset = true, n
		case "prev":
			if !isHexHash(v) {
				return cursor{}, false
			}
			c.prev = v
		default:
			return cursor{}, false
		}
	}
	if c.hash == "" || (c.prev != "" && !c.partial) {
		return cursor{}, false
	}
	return c, true
}

func isHexHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isDigit(c) || (c >= 'a' && c <= 'f')) {
			return false
		}
	}
	return true
}

// committed is the hash of the last version committed in full, "" if none.
func (c cursor) committed() string {
	if c.partial {
		return c.prev
	}
	return c.hash
}
