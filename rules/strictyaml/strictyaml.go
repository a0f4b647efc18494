// Package strictyaml forwards to github.com/cohortd/cohort/sdk/strictyaml,
// where the strict YAML decoder now lives so that plugins (which may import
// only sdk/) can use it too. It exists so that current importers keep
// compiling; import sdk/strictyaml in new code.
//
// Deprecated: use github.com/cohortd/cohort/sdk/strictyaml.
package strictyaml

import "github.com/cohortd/cohort/sdk/strictyaml"

type (
	// Error is strictyaml.Error.
	Error = strictyaml.Error
	// Decoder is strictyaml.Decoder.
	Decoder = strictyaml.Decoder
	// Options is strictyaml.Options.
	Options = strictyaml.Options
	// Unmarshaler is strictyaml.Unmarshaler.
	Unmarshaler = strictyaml.Unmarshaler
)

var (
	// Decode is strictyaml.Decode.
	Decode = strictyaml.Decode
	// Parse is strictyaml.Parse.
	Parse = strictyaml.Parse
	// NewDecoder is strictyaml.NewDecoder.
	NewDecoder = strictyaml.NewDecoder
	// Errorf is strictyaml.Errorf.
	Errorf = strictyaml.Errorf
	// ParseDuration is strictyaml.ParseDuration.
	ParseDuration = strictyaml.ParseDuration
	// Closest is strictyaml.Closest.
	Closest = strictyaml.Closest
)
