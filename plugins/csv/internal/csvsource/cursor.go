package csvsource

import (
	"strconv"
	"strings"
)

// cursor says how far the host has committed: the SHA-256 of a version of
// the customers file (its content, after a fingerprint of the config that
// decides what is sent for it) and, while that version is being streamed,
// the byte offset just past the last row sent; then, when an events file is
// configured, the same for it. Written as text:
//
//	csv1 sha256=<hex>                      the whole version is committed
//	csv1 sha256=<hex> at=<offset>          rows up to offset are committed
//	csv1 sha256=<hex> at=<offset> prev=<hex>
//
// prev is the last version committed in full before this one: the
// baseline for delete_missing when a stream is resumed. The events part
// follows:
//
//	... ev=<hex> ev_size=<size>            the whole events version is committed
//	... ev=<hex> ev_at=<offset>            events rows up to offset are committed
//
// ev_size (the version's length in bytes) is left out when the version did
// not end cleanly (a broken last row): it lets a later version that only
// appends rows to this one be sent from there (see planEvents).
type cursor struct {
	hash    string
	partial bool
	offset  int64
	prev    string
	ev      evCursor
}

// evCursor is the events file's part of a cursor; the zero value means no
// version of it is committed.
type evCursor struct {
	hash    string
	partial bool
	offset  int64 // partial: rows ending at or before offset are committed
	size    int64 // complete: the version's length; 0 = unknown
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
	if c.ev.hash != "" {
		b.WriteString(" ev=" + c.ev.hash)
		switch {
		case c.ev.partial:
			b.WriteString(" ev_at=" + strconv.FormatInt(c.ev.offset, 10))
		case c.ev.size > 0:
			b.WriteString(" ev_size=" + strconv.FormatInt(c.ev.size, 10))
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
	evSize := false
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "sha256", "prev", "ev":
			if !isHexHash(v) {
				return cursor{}, false
			}
			switch k {
			case "sha256":
				c.hash = v
			case "prev":
				c.prev = v
			default:
				c.ev.hash = v
			}
		case "at", "ev_at", "ev_size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return cursor{}, false
			}
			switch k {
			case "at":
				c.partial, c.offset = true, n
			case "ev_at":
				c.ev.partial, c.ev.offset = true, n
			default:
				if n == 0 {
					return cursor{}, false
				}
				evSize, c.ev.size = true, n
			}
		default:
			return cursor{}, false
		}
	}
	if c.hash == "" || (c.prev != "" && !c.partial) {
		return cursor{}, false
	}
	if (c.ev.partial || evSize) && (c.ev.hash == "" || (c.ev.partial && evSize)) {
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

// mark is the offset in the events file at which the hash and line count
// are needed to resume (see planEvents); 0 if none.
func (e evCursor) mark() int64 {
	switch {
	case e.hash == "":
		return 0
	case e.partial:
		return e.offset
	}
	return e.size
}
