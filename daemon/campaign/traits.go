package campaign

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
)

// storedTraits reads a customer's stored traits (a JSON object) with the
// schema's types, as ingest.TraitsFromJSON does. The dispatcher reads every
// recipient's traits, so the common document (a flat object of strings,
// numbers, booleans and nulls without escapes) is read here directly; any
// other document goes to ingest.TraitsFromJSON, which gives the same result
// for the documents read here.
func storedTraits(doc []byte, types map[string]sdk.TraitType) (map[string]sdk.Value, error) {
	if out, ok := flatTraits(doc, types); ok {
		return out, nil
	}
	vals, _, err := ingest.TraitsFromJSON(doc, types)
	return vals, err
}

// flatTraits reads a flat JSON object; ok is false for anything it does
// not read exactly as encoding/json would (escapes, arrays, nested objects,
// invalid UTF-8, numbers out of range, malformed JSON).
func flatTraits(doc []byte, types map[string]sdk.TraitType) (map[string]sdk.Value, bool) {
	p := flatParser{b: doc}
	p.space()
	if !p.byte('{') {
		return nil, false
	}
	out := make(map[string]sdk.Value, len(types))
	p.space()
	if p.byte('}') {
		return out, p.end()
	}
	for {
		p.space()
		name, ok := p.str()
		if !ok {
			return nil, false
		}
		p.space()
		if !p.byte(':') {
			return nil, false
		}
		p.space()
		if p.i >= len(p.b) {
			return nil, false
		}
		t, known := types[name]
		var (
			v     sdk.Value
			valid = true // whether v holds a value of type t
		)
		switch c := p.b[p.i]; {
		case c == '"':
			s, ok := p.str()
			if !ok {
				return nil, false
			}
			switch t {
			case sdk.TypeString:
				v = sdk.Value{Type: t, Str: s}
			case sdk.TypeTime:
				tm, err := time.Parse(time.RFC3339Nano, s)
				v, valid = sdk.Value{Type: t, Time: tm}, err == nil
			default:
				valid = false
			}
		case c == 't' || c == 'f':
			b, ok := p.literalBool()
			if !ok {
				return nil, false
			}
			v, valid = sdk.Value{Type: t, Bool: b}, t == sdk.TypeBool
		case c == 'n':
			if !p.literal("null") {
				return nil, false
			}
			valid = false // a null trait is absent
		case c == '-' || c >= '0' && c <= '9':
			f, ok := p.number()
			if !ok {
				return nil, false
			}
			v, valid = sdk.Value{Type: t, Num: f}, t == sdk.TypeNumber
		default:
			return nil, false
		}
		if known && valid {
			out[name] = v
		} else if known {
			// A later duplicate of the name that is null or of another
			// type leaves the name without a value, as encoding/json's
			// last-wins map does.
			delete(out, name)
		}
		p.space()
		if p.byte(',') {
			continue
		}
		if p.byte('}') {
			return out, p.end()
		}
		return nil, false
	}
}

type flatParser struct {
	b []byte
	i int
}

func (p *flatParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *flatParser) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (p *flatParser) end() bool {
	p.space()
	return p.i == len(p.b)
}

// str reads a string without escapes or control characters, in valid UTF-8.
func (p *flatParser) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start, ascii := p.i, true
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !ascii && !utf8.Valid(s) {
				return "", false
			}
			return string(s), true
		case c == '\\' || c < 0x20:
			return "", false
		case c >= 0x80:
			ascii = false
		}
	}
	return "", false
}

func (p *flatParser) literal(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *flatParser) literalBool() (bool, bool) {
	if p.literal("true") {
		return true, true
	}
	if p.literal("false") {
		return false, true
	}
	return false, false
}

// number reads a JSON number (RFC 8259 grammar) as encoding/json would
// into a float64.
func (p *flatParser) number() (float64, bool) {
	start := p.i
	p.byte('-')
	switch {
	case p.byte('0'):
	case p.i < len(p.b) && p.b[p.i] >= '1' && p.b[p.i] <= '9':
		p.digits()
	default:
		return 0, false
	}
	if p.byte('.') {
		if p.digits() == 0 {
			return 0, false
		}
	}
	if p.byte('e') || p.byte('E') {
		if !p.byte('+') {
			p.byte('-')
		}
		if p.digits() == 0 {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(string(p.b[start:p.i]), 64)
	return f, err == nil
}

func (p *flatParser) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}
