package rules

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"time"

	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/types"

	"github.com/cohortd/cohort/sdk"
)

// Schema is what rules compile against: the traits the sources declare, the
// event names they send, and the event RFM quintiles are computed from.
type Schema struct {
	Traits map[string]sdk.TraitType
	Events []string
	// RFMEvent is config rfm.event; rfm.r/f/m are rejected when empty.
	RFMEvent string
}

// identRE is what a trait name must look like to be usable in a rule.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// keywords are expr's reserved words.
var keywords = map[string]bool{
	"true": true, "false": true, "nil": true, "in": true, "not": true, "and": true, "or": true,
	"matches": true, "contains": true, "startsWith": true, "endsWith": true, "let": true,
	"if": true, "else": true,
}

// builtinNames are expr's builtin functions: rule names never shadow them.
var builtinNames = func() map[string]bool {
	m := map[string]bool{}
	for _, f := range builtin.Builtins {
		m[f.Name] = true
	}
	return m
}()

// rfmEnv is the type rfm has in expressions.
type rfmEnv struct {
	R float64 `expr:"r"`
	F float64 `expr:"f"`
	M float64 `expr:"m"`
}

var (
	timeType    = reflect.TypeOf(time.Time{})
	listType    = reflect.TypeOf([]string{})
	rfmType     = reflect.TypeOf(&rfmEnv{})
	vmStateType = reflect.TypeOf(&vmState{})
)

// compiledSchema is a Schema prepared for compiling rules.
type compiledSchema struct {
	Schema
	traits map[string]sdk.TraitType // usable in expressions
	hidden map[string]string        // trait name -> why it cannot be used
	events map[string]bool
	names  []string // traits, functions and events, for "did you mean"
	env    types.Map
	vmEnv  types.Map
}

func prepareSchema(s Schema) *compiledSchema {
	cs := &compiledSchema{
		Schema: s,
		traits: map[string]sdk.TraitType{},
		hidden: map[string]string{},
		events: map[string]bool{},
		env:    types.Map{},
		vmEnv:  types.Map{},
	}
	for name, t := range s.Traits {
		if why := hiddenReason(name); why != "" {
			cs.hidden[name] = why
			continue
		}
		et := envType(t)
		if et == nil {
			cs.hidden[name] = fmt.Sprintf("its type %s is not supported", t)
			continue
		}
		cs.traits[name] = t
		cs.env[name] = et
		cs.vmEnv[name] = et
		cs.names = append(cs.names, name)
	}
	for _, e := range s.Events {
		cs.events[e] = true
	}
	if s.RFMEvent != "" {
		cs.env["rfm"] = types.TypeOf(&rfmEnv{})
	}
	cs.vmEnv["rfm"] = types.TypeOf(&rfmEnv{})
	cs.vmEnv[stateVar] = types.TypeOf(&vmState{})
	for _, f := range library {
		cs.names = append(cs.names, f.name)
	}
	sort.Strings(cs.names)
	return cs
}

func envType(t sdk.TraitType) types.Type {
	switch t {
	case sdk.TypeString:
		return types.String
	case sdk.TypeNumber:
		return types.Float64
	case sdk.TypeBool:
		return types.Bool
	case sdk.TypeTime:
		return types.TypeOf(time.Time{})
	case sdk.TypeStringList:
		return types.TypeOf([]string{})
	}
	return nil
}

// hiddenReason says why a trait name cannot be used as an identifier in a
// rule ("" if it can).
func hiddenReason(name string) string {
	switch {
	case !identRE.MatchString(name):
		return "it is not an identifier (letters, digits and _, not starting with a digit)"
	case keywords[name]:
		return "it is an expr keyword"
	case builtinNames[name]:
		return "it is the name of an expr builtin function"
	case libraryNames[name]:
		return "it is the name of a rules function"
	case name == "rfm":
		return "rfm is reserved for RFM quintiles"
	case len(name) >= 2 && name[:2] == "__":
		return "names starting with __ are reserved"
	}
	return ""
}
