package sdk

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode"

	"github.com/cohortd/cohort/sdk/strictyaml"
)

// DecodeConfig decodes a plugin's config block (ConfigureRequest.Config)
// into out, a non-nil pointer to a struct whose fields carry `yaml` tags,
// strictly: an unknown key (with a "did you mean" hint), a duplicate key or a
// value of the wrong type is an error, so that a typo in config.yaml fails
// Configure instead of being ignored. An empty block leaves out as it is, so
// set defaults before the call. ${VAR} references are not expanded: the
// daemon expands them before it sends the block.
//
// Fields may be structs, map[string]T, []T, pointers (nil when the key is
// absent or null, so a plugin can tell "not set" from a zero value),
// strings, bools (true/false, yes/no, on/off), ints, floats, time.Duration
// (a number with a unit, also 7d and 2w) and yaml.Node; a type may decode
// itself by implementing strictyaml.Unmarshaler.
//
// A decoding error is an *Error with Code InvalidConfig, Field the dotted
// path of the key at fault ("columns.plan.type", "write_keys[0]"; "" for the
// block as a whole) and Message "line L:C: " followed by what is wrong and
// what to write. Its Error() puts the field first unless the message already
// names it, so the daemon logs, for instance:
//
//	batch: line 5:8: expected a whole number, found "lots"
//	columns.plan.typ: line 7:5: unknown key "typ" in columns.plan (known keys: name, skip, type); did you mean "type"?
//
// The line and column count within the config block as the daemon sends it:
// re-encoded from config.yaml, with ${VAR} expanded and an indent of two
// spaces, so line 1 is the block's first key, not a line of config.yaml.
//
// An out that the decoder cannot fill (not a pointer, or a field of an
// unsupported type) is a bug in the plugin, reported with Code Internal.
func DecodeConfig(data []byte, out any) error {
	if v := reflect.ValueOf(out); v.Kind() != reflect.Pointer || v.IsNil() {
		return Errorf(Internal, "", "DecodeConfig: out must be a non-nil pointer, not %T", out)
	}
	err := strictyaml.Decode("config", data, out, strictyaml.Options{})
	if err == nil {
		return nil
	}
	var se *strictyaml.Error
	if !errors.As(err, &se) {
		return Errorf(Internal, "", "DecodeConfig: %v", err)
	}
	field := se.Path
	if field == "" {
		field = se.Key
	}
	msg := se.Msg
	if se.Line > 0 {
		msg = fmt.Sprintf("line %d:%d: %s", se.Line, se.Column, msg)
	}
	return &Error{Code: InvalidConfig, Field: field, Message: msg}
}

// TraitName turns a column name or header into a trait name in snake_case
// that rules can use: "customerID" -> "customer_id", "MonthlyCharges" ->
// "monthly_charges", "Total Charges" -> "total_charges", "HTTPServer" ->
// "http_server", "StreamingTV" -> "streaming_tv", "e-mail" -> "e_mail",
// "Prénom" -> "prénom"; "first_name" stays. Upper-case letters are
// lowered, starting a new word where the case changes; every run of
// characters that are neither letters nor digits (Unicode letters and digits
// are kept) becomes one "_", and none is kept at either end ("_score" ->
// "score", "Total Charges ($)" -> "total_charges").
//
// The result may still be unusable as a name, and the caller must check it:
// it is empty when the column has no letter or digit ("$$$"), it starts with
// a digit when the column does ("2fa" stays "2fa"), and it may be a word of
// the rule language ("in", "not"). Report those as config errors that ask
// for an explicit name.
func TraitName(column string) string {
	rs := []rune(column)
	var b strings.Builder
	b.Grow(len(column) + 4)
	sep := func() {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "_") {
			b.WriteByte('_')
		}
	}
	for i, r := range rs {
		switch {
		case unicode.IsUpper(r):
			if i > 0 {
				prev := rs[i-1]
				nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
				if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
					sep()
				}
			}
			b.WriteRune(unicode.ToLower(r))
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		default:
			sep()
		}
	}
	return strings.TrimSuffix(b.String(), "_")
}
