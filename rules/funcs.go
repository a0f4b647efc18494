package rules

import (
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/expr-lang/expr"
)

// stateVar is the hidden variable through which expr's VM reaches the row
// being evaluated: the VM versions of the functions take it first.
const stateVar = "__st"

// argKind says how a function argument must be written.
type argKind int

const (
	argValue   argKind = iota // any expression of the signature's type
	argEvent                  // a string literal naming a schema event
	argWindow                 // a string literal window: "90d", "2w"
	argTrait                  // a bare trait name (or rfm.r/f/m)
	argSegment                // a string literal naming a segment
)

// function is one entry of the rules function library.
type function struct {
	name string
	// sig is the signature rules are type-checked against.
	sig  any
	args []argKind
	doc  string
	// run is the implementation for expr's VM; args exclude the state.
	run func(st *vmState, args []any) (any, error)
	// stateless functions do not take the hidden state in the VM.
	stateless bool
}

// library is the rules function library (section 4 of DESIGN.md). The
// closure compiler implements the same functions over columns; both share
// the helpers below so they cannot drift.
var library = []function{
	{
		name: "events", sig: new(func(string, string) float64), args: []argKind{argEvent, argWindow},
		doc: `events(name, window): how many events of that name the customer had in the window, e.g. events("purchase", "90d")`,
		run: func(st *vmState, a []any) (any, error) {
			days, err := parseWindow(a[1].(string))
			if err != nil {
				return nil, err
			}
			return countWindow(st.b.event(a[0].(string)), st.row, st.today-int64(days)+1, st.today), nil
		},
	},
	{
		name: "total", sig: new(func(string, string) float64), args: []argKind{argEvent, argWindow},
		doc: `total(name, window): the sum of those events' values in the window`,
		run: func(st *vmState, a []any) (any, error) {
			days, err := parseWindow(a[1].(string))
			if err != nil {
				return nil, err
			}
			return sumWindow(st.b.event(a[0].(string)), st.row, st.today-int64(days)+1, st.today), nil
		},
	},
	{
		name: "first_time", sig: new(func(string) time.Time), args: []argKind{argEvent},
		doc: `first_time(name): when the customer first had that event (missing if never)`,
		run: func(st *vmState, a []any) (any, error) {
			e := st.b.event(a[0].(string))
			if e == nil || e.First[st.row] == 0 {
				return nil, nil
			}
			return DayTime(int64(e.First[st.row])), nil
		},
	},
	{
		name: "last_time", sig: new(func(string) time.Time), args: []argKind{argEvent},
		doc: `last_time(name): when the customer last had that event (missing if never)`,
		run: func(st *vmState, a []any) (any, error) {
			e := st.b.event(a[0].(string))
			if e == nil || e.First[st.row] == 0 {
				return nil, nil
			}
			return DayTime(int64(e.Last[st.row])), nil
		},
	},
	{
		name: "ever", sig: new(func(string) bool), args: []argKind{argEvent},
		doc: `ever(name): whether the customer ever had that event`,
		run: func(st *vmState, a []any) (any, error) {
			e := st.b.event(a[0].(string))
			return e != nil && e.First[st.row] != 0, nil
		},
	},
	{
		name: "days_since", sig: new(func(time.Time) float64), args: []argKind{argValue},
		doc: `days_since(t): UTC date of now minus UTC date of t, in days`,
		run: func(st *vmState, a []any) (any, error) {
			t, ok := a[0].(time.Time)
			if !ok {
				return nil, fmt.Errorf("days_since: expected a time, got %T", a[0])
			}
			return float64(st.today - Day(t)), nil
		},
	},
	{
		name: "has", sig: new(func(any) bool), args: []argKind{argTrait}, stateless: true,
		doc: `has(trait): whether the customer has a value for the trait`,
		run: func(_ *vmState, a []any) (any, error) { return a[0] != nil, nil },
	},
	{
		name: "in_segment", sig: new(func(string) bool), args: []argKind{argSegment},
		doc: `in_segment(name): whether the customer is currently in that segment`,
		run: func(st *vmState, a []any) (any, error) {
			i, ok := st.b.segIndex[a[0].(string)]
			if !ok {
				return nil, fmt.Errorf("in_segment: unknown segment %q", a[0])
			}
			return st.segs[i].Has(st.row), nil
		},
	},
}

var (
	libraryNames  = map[string]bool{}
	libraryByName = map[string]*function{}
)

func init() {
	for i := range library {
		libraryNames[library[i].name] = true
		libraryByName[library[i].name] = &library[i]
	}
}

// checkOptions are the expr options rules are type-checked with.
func checkOptions(cs *compiledSchema) []expr.Option {
	opts := []expr.Option{expr.Env(cs.env), expr.AsBool(), expr.Optimize(false), expr.Timezone("UTC")}
	for _, f := range library {
		opts = append(opts, expr.Function(f.name, func(...any) (any, error) {
			return nil, fmt.Errorf("%s: called outside an evaluation", f.name)
		}, f.sig))
	}
	return opts
}

// vmOptions are the options of programs expr's VM runs (rewritten rules,
// fallback subtrees, constants): the library takes the hidden state first.
func vmOptions(cs *compiledSchema, asBool bool) []expr.Option {
	opts := []expr.Option{expr.Env(cs.vmEnv), expr.Optimize(false)}
	if asBool {
		opts = append(opts, expr.AsBool())
	} else {
		opts = append(opts, expr.AsAny())
	}
	for i := range library {
		f := &library[i]
		sig := reflect.TypeOf(f.sig).Elem()
		if f.stateless {
			opts = append(opts, expr.Function(f.name, func(a ...any) (any, error) { return f.run(nil, a) }, f.sig))
			continue
		}
		in := []reflect.Type{vmStateType}
		for j := 0; j < sig.NumIn(); j++ {
			in = append(in, sig.In(j))
		}
		out := []reflect.Type{sig.Out(0)}
		vt := reflect.New(reflect.FuncOf(in, out, false)).Interface()
		opts = append(opts, expr.Function(f.name, func(a ...any) (any, error) {
			st, ok := a[0].(*vmState)
			if !ok || st == nil {
				return nil, fmt.Errorf("%s: no evaluation state", f.name)
			}
			return f.run(st, a[1:])
		}, vt))
	}
	return opts
}

// parseWindow parses "90d" or "2w" into days.
func parseWindow(s string) (int, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("invalid window %q: write a number of days or weeks, e.g. \"90d\" or \"2w\"", s)
	}
	unit := s[len(s)-1]
	n, err := strconv.Atoi(s[:len(s)-1])
	if err != nil || (unit != 'd' && unit != 'w') || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("invalid window %q: write a number of days or weeks, e.g. \"90d\" or \"2w\"", s)
	}
	if unit == 'w' {
		n *= 7
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("invalid window %q: it must cover 1 to 65535 days", s)
	}
	return n, nil
}

// countWindow counts a row's events on days [lo, hi].
func countWindow(e *EventColumn, row uint32, lo, hi int64) float64 {
	if e == nil {
		return 0
	}
	s := e.Start[row]
	n := uint32(e.N[row])
	days := e.Days[s : s+n]
	counts := e.Counts[s : s+n]
	var c uint64
	for i := len(days) - 1; i >= 0; i-- {
		d := int64(days[i])
		if d > hi {
			continue
		}
		if d < lo {
			break
		}
		if x := counts[i]; x != OverflowCount {
			c += uint64(x)
		} else {
			c += uint64(e.Overflow[OverflowKey(row, days[i])])
		}
	}
	return float64(c)
}

// sumWindow sums a row's event values on days [lo, hi], latest day first.
func sumWindow(e *EventColumn, row uint32, lo, hi int64) float64 {
	if e == nil || e.Sums == nil {
		return 0
	}
	s := e.Start[row]
	n := uint32(e.N[row])
	days := e.Days[s : s+n]
	sums := e.Sums[s : s+n]
	var t float64
	for i := len(days) - 1; i >= 0; i-- {
		d := int64(days[i])
		if d > hi {
			continue
		}
		if d < lo {
			break
		}
		t += sums[i]
	}
	return t
}
