// Package strictyaml decodes YAML into Go structs strictly: unknown keys,
// duplicate keys and type mismatches are errors that carry the file, line and
// column of the offending node, and the dotted path of the field. ${VAR}
// references in scalar values can be expanded from the environment, with a
// missing variable reported at its position.
//
// It supports the shapes configuration and rule files use: structs (fields
// named by their `yaml` tag), map[string]T, []T, pointers, strings, bools,
// ints, floats, time.Duration, and yaml.Node (kept raw, for blocks passed on
// to someone else). A type may decode itself by implementing Unmarshaler.
//
// It is part of the SDK so that the daemon, the rule language and plugins
// (which may import only sdk/) share one decoder and one wording of its
// errors; plugins usually reach it through sdk.DecodeConfig. It imports
// nothing of this module.
package strictyaml

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is a decoding error at a position in a file.
type Error struct {
	File   string
	Line   int
	Column int
	// Path is the dotted path of the field, e.g. "http.listen".
	Path string
	// Key is the dotted path of an unknown key, e.g. "http.public_ulr".
	// Path is empty for that error, since Msg already says where the key
	// is; Key lets a caller that reports errors by field name it anyway.
	Key string
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errorf returns an *Error positioned at node n.
func Errorf(file string, n *yaml.Node, path, format string, args ...any) *Error {
	e := &Error{File: file, Path: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	return e
}

// Unmarshaler is implemented by types that decode themselves from a node.
type Unmarshaler interface {
	UnmarshalStrictYAML(d *Decoder, n *yaml.Node, path string) error
}

// Options control decoding.
type Options struct {
	// ExpandEnv expands ${VAR} in scalar values from LookupEnv; "$$" is a
	// literal "$". A reference to an unset variable is an error.
	ExpandEnv bool
	// LookupEnv defaults to os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Decoder decodes one document.
type Decoder struct {
	File string
	opts Options
}

// Parse parses data as a single YAML document and returns its root mapping
// node (nil for an empty document). Syntax errors carry file:line:col.
func Parse(file string, data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, syntaxError(file, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// syntaxError turns yaml.v3's "yaml: line N: msg" into a positioned Error.
func syntaxError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{File: file, Msg: "invalid YAML: " + msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.Index(rest, ":"); i > 0 {
			if n, convErr := strconv.Atoi(rest[:i]); convErr == nil {
				e.Line, e.Column = n, 1
				e.Msg = "invalid YAML: " + strings.TrimSpace(rest[i+1:])
			}
		}
	}
	return e
}

// Decode parses data and decodes it into out (a pointer to a struct).
func Decode(file string, data []byte, out any, opts Options) error {
	root, err := Parse(file, data)
	if err != nil {
		return err
	}
	d := NewDecoder(file, opts)
	if root == nil {
		return nil
	}
	return d.DecodeNode(root, "", reflect.ValueOf(out).Elem())
}

// NewDecoder returns a decoder for file.
func NewDecoder(file string, opts Options) *Decoder {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	return &Decoder{File: file, opts: opts}
}

var (
	durationType  = reflect.TypeOf(time.Duration(0))
	nodeType      = reflect.TypeOf(yaml.Node{})
	unmarshalType = reflect.TypeOf((*Unmarshaler)(nil)).Elem()
)

// DecodeNode decodes n into v, which must be settable.
func (d *Decoder) DecodeNode(n *yaml.Node, path string, v reflect.Value) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalType) {
		return v.Addr().Interface().(Unmarshaler).UnmarshalStrictYAML(d, n, path)
	}
	if v.Type() == nodeType {
		if d.opts.ExpandEnv {
			if err := d.expandTree(n, path); err != nil {
				return err
			}
		}
		v.Set(reflect.ValueOf(*n))
		return nil
	}
	if v.Kind() == reflect.Pointer {
		if isNull(n) {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		p := reflect.New(v.Type().Elem())
		if err := d.DecodeNode(n, path, p.Elem()); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.decodeStruct(n, path, v)
	case reflect.Map:
		return d.decodeMap(n, path, v)
	case reflect.Slice:
		return d.decodeSlice(n, path, v)
	default:
		return d.decodeScalar(n, path, v)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing (null)"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldKeys lists a struct type's yaml keys and their field indexes.
func fieldKeys(t reflect.Type) (map[string]int, []string) {
	m := map[string]int{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = i
		names = append(names, name)
	}
	return m, names
}

// Mapping checks that n is a mapping and calls fn for each key in order,
// rejecting duplicate keys.
func (d *Decoder) Mapping(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		if isNull(n) {
			return nil
		}
		return Errorf(d.File, n, path, "expected a mapping of keys to values, found %s", kindName(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return Errorf(d.File, k, path, "keys must be plain strings")
		}
		if seen[k.Value] {
			return Errorf(d.File, k, join(path, k.Value), "duplicate key %q", k.Value)
		}
		seen[k.Value] = true
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func (d *Decoder) decodeStruct(n *yaml.Node, path string, v reflect.Value) error {
	keys, names := fieldKeys(v.Type())
	return d.Mapping(n, path, func(key string, k, val *yaml.Node) error {
		i, ok := keys[key]
		if !ok {
			sorted := append([]string(nil), names...)
			sort.Strings(sorted)
			hint := ""
			if s := closest(key, sorted); s != "" {
				hint = fmt.Sprintf("; did you mean %q?", s)
			}
			where := "at the top level"
			if path != "" {
				where = "in " + path
			}
			e := Errorf(d.File, k, "", "unknown key %q %s (known keys: %s)%s", key, where, strings.Join(sorted, ", "), hint)
			e.Key = join(path, key)
			return e
		}
		return d.DecodeNode(val, join(path, key), v.Field(i))
	})
}

func (d *Decoder) decodeMap(n *yaml.Node, path string, v reflect.Value) error {
	if v.Type().Key().Kind() != reflect.String {
		return fmt.Errorf("strictyaml: unsupported map key type %s", v.Type().Key())
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	return d.Mapping(n, path, func(key string, _, val *yaml.Node) error {
		ev := reflect.New(v.Type().Elem()).Elem()
		if err := d.DecodeNode(val, join(path, key), ev); err != nil {
			return err
		}
		v.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), ev)
		return nil
	})
}

func (d *Decoder) decodeSlice(n *yaml.Node, path string, v reflect.Value) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return Errorf(d.File, n, path, "expected a list, found %s", kindName(n))
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		if err := d.DecodeNode(item, fmt.Sprintf("%s[%d]", path, i), s.Index(i)); err != nil {
			return err
		}
	}
	v.Set(s)
	return nil
}

// Scalar returns the value of scalar node n, with ${VAR} expanded if enabled.
func (d *Decoder) Scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", Errorf(d.File, n, path, "expected a single value, found %s", kindName(n))
	}
	if !d.opts.ExpandEnv || n.Tag == "!!null" {
		return n.Value, nil
	}
	return d.expand(n, path)
}

func (d *Decoder) expand(n *yaml.Node, path string) (string, error) {
	s := n.Value
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", Errorf(d.File, n, path, "unclosed ${ in %q: write ${NAME}, or $$ for a literal $", s)
			}
			name := s[i+2 : i+2+end]
			if !validEnvName(name) {
				return "", Errorf(d.File, n, path, "invalid environment variable name %q in ${...}", name)
			}
			val, ok := d.opts.LookupEnv(name)
			if !ok {
				return "", Errorf(d.File, n, path, "environment variable %s is not set; set it, or remove ${%s} from the value", name, name)
			}
			b.WriteString(val)
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// expandTree expands ${VAR} in every scalar of a raw subtree, in place.
func (d *Decoder) expandTree(n *yaml.Node, path string) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil
		}
		s, err := d.expand(n, path)
		if err != nil {
			return err
		}
		if s != n.Value {
			n.Value = s
			n.Style = yaml.DoubleQuotedStyle
			n.Tag = "!!str"
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := d.expandTree(n.Content[i+1], join(path, n.Content[i].Value)); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if err := d.expandTree(c, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *Decoder) decodeScalar(n *yaml.Node, path string, v reflect.Value) error {
	s, err := d.Scalar(n, path)
	if err != nil {
		return err
	}
	if v.Type() == durationType {
		dur, err := ParseDuration(s)
		if err != nil {
			return Errorf(d.File, n, path, "%q is not a duration: write a number with a unit, e.g. 30s, 5m, 2h, 7d", s)
		}
		v.SetInt(int64(dur))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		if isNull(n) {
			v.SetString("")
			return nil
		}
		v.SetString(s)
	case reflect.Bool:
		switch strings.ToLower(s) {
		case "true", "yes", "on":
			v.SetBool(true)
		case "false", "no", "off":
			v.SetBool(false)
		default:
			return Errorf(d.File, n, path, "expected true or false, found %q", s)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, v.Type().Bits())
		if err != nil {
			return Errorf(d.File, n, path, "expected a whole number, found %q", s)
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		i, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 0, v.Type().Bits())
		if err != nil {
			return Errorf(d.File, n, path, "expected a whole number of 0 or more, found %q", s)
		}
		v.SetUint(i)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), v.Type().Bits())
		if err != nil {
			return Errorf(d.File, n, path, "expected a number, found %q", s)
		}
		v.SetFloat(f)
	case reflect.Interface:
		if v.NumMethod() != 0 {
			return fmt.Errorf("strictyaml: unsupported interface type %s at %s", v.Type(), path)
		}
		var x any
		if err := n.Decode(&x); err != nil {
			return Errorf(d.File, n, path, "%v", err)
		}
		if n.Tag == "!!str" {
			x = s
		}
		v.Set(reflect.ValueOf(&x).Elem())
	default:
		return fmt.Errorf("strictyaml: unsupported type %s at %s", v.Type(), path)
	}
	return nil
}

// ParseDuration is time.ParseDuration that also accepts days ("7d") and
// weeks ("2w") as whole units.
func ParseDuration(s string) (time.Duration, error) {
	if n := len(s); n > 1 && (s[n-1] == 'd' || s[n-1] == 'w') {
		num, err := strconv.Atoi(s[:n-1])
		if err != nil || num < 0 {
			return 0, errors.New("invalid duration " + strconv.Quote(s))
		}
		day := 24 * time.Hour
		if s[n-1] == 'w' {
			day *= 7
		}
		return time.Duration(num) * day, nil
	}
	return time.ParseDuration(s)
}

// closest returns the candidate within edit distance 2 of s, if any.
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
