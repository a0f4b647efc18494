package rules

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser/lexer"

	"github.com/cohortd/cohort/sdk/strictyaml"
)

// exprError is an error at a rune offset of an expression.
type exprError struct {
	msg    string
	offset int
}

// program is one compiled `when`.
type program struct {
	src  string
	root ast.Node // expr's checked AST (Optimize(false))
	plan bplan
	// vmAll is the whole rule for expr's VM (the differential oracle).
	vmAll  *vmProg
	traits []string
	events []string
	rfm    bool
	deps   []string
}

// ruleCompiler compiles the `when` expressions of one load.
type ruleCompiler struct {
	cs       *compiledSchema
	opts     []expr.Option
	segments map[string]bool
	segList  []string
	src      string // the expression being translated
}

func newCompiler(cs *compiledSchema, segments []string) *ruleCompiler {
	c := &ruleCompiler{cs: cs, opts: checkOptions(cs), segments: map[string]bool{}}
	for _, s := range segments {
		c.segments[s] = true
	}
	c.segList = append(c.segList, segments...)
	sort.Strings(c.segList)
	return c
}

// compile compiles one expression.
func (c *ruleCompiler) compile(src string) (prog *program, xerr *exprError) {
	if strings.TrimSpace(src) == "" {
		return nil, &exprError{msg: "the rule is empty: write a condition, e.g. country == \"DE\""}
	}
	checked, err := safeCompile(src, c.opts)
	if err != nil {
		c.src = src
		return nil, c.translate(err)
	}
	root := checked.Node()
	prog = &program{src: src, root: root}
	v := &validator{c: c, prog: prog, traits: map[string]bool{}, events: map[string]bool{}, deps: map[string]bool{}}
	if e := v.walk(root); e != nil {
		return nil, e
	}
	prog.traits = sortedKeys(v.traits)
	prog.events = sortedKeys(v.events)
	prog.deps = sortedKeys(v.deps)
	if !isBoolType(root) {
		return nil, &exprError{msg: fmt.Sprintf("the rule must be true or false, but it is %s", typeName(root.Type().String()))}
	}
	defer func() {
		if r := recover(); r != nil {
			prog, xerr = nil, &exprError{msg: fmt.Sprintf("internal error compiling the rule: %v", r)}
		}
	}()
	pl := &planner{cs: c.cs, src: src}
	prog.plan = pl.boolPlan(root)
	if pl.err != nil {
		return nil, pl.err
	}
	vmAll, err := compileVM(c.cs, root, src, true)
	if err != nil {
		return nil, &exprError{msg: cleanMessage(err)}
	}
	prog.vmAll = vmAll
	return prog, nil
}

// safeCompile is expr.Compile, with a panic inside expr turned into an error.
func safeCompile(src string, opts []expr.Option) (p interface{ Node() ast.Node }, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("the expression could not be compiled: %v", r)
		}
	}()
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, err
	}
	return prog, nil
}

var unknownNameRE = regexp.MustCompile(`^unknown name (\S+)$`)

// translate turns an expr compile error into a positioned message in the
// rule language's terms.
func (c *ruleCompiler) translate(err error) *exprError {
	if x := c.hiddenUse(); x != nil {
		return x
	}
	var fe *file.Error
	if !errors.As(err, &fe) {
		return &exprError{msg: ruleMessage(err.Error())}
	}
	msg := fe.Message
	if m := unknownNameRE.FindStringSubmatch(msg); m != nil {
		name := m[1]
		msg = fmt.Sprintf("unknown name %q", name)
		switch {
		case c.cs.hidden[name] != "":
			msg += fmt.Sprintf(": the trait %q cannot be used in rules because %s", name, c.cs.hidden[name])
		case name == "rfm":
			msg += ": rfm.r, rfm.f and rfm.m need the RFM event; set rfm.event in config.yaml"
		case c.cs.events[name]:
			msg += fmt.Sprintf(": %q is an event; use it through a function, e.g. ever(%q)", name, name)
		default:
			if s := strictyaml.Closest(name, c.cs.names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
		}
	} else {
		msg = ruleMessage(msg)
	}
	return &exprError{msg: msg, offset: fe.From}
}

var notBoolRE = regexp.MustCompile(`^expected bool, but got (.+)$`)

// ruleMessage rewrites expr's checker messages in the rule language's terms.
func ruleMessage(msg string) string {
	switch {
	case notBoolRE.MatchString(msg):
		return fmt.Sprintf("the rule must be true or false, but it is a %s", typeName(notBoolRE.FindStringSubmatch(msg)[1]))
	case strings.Contains(msg, "rfmEnv has no field"):
		return "rfm has r, f and m (quintiles 1 to 5), e.g. rfm.r >= 4"
	case strings.HasPrefix(msg, "invalid operation: in ("):
		return typeNames(msg) + `: in needs a list on its right, e.g. country in ["DE", "AT"] or "running" in interests`
	}
	return typeNames(msg)
}

// hiddenUse finds a hidden trait used as a bare name (say a trait called
// count, which is expr's count builtin): expr reports something confusing
// about the builtin, so say what happened instead.
func (c *ruleCompiler) hiddenUse() *exprError {
	if c.src == "" || len(c.cs.hidden) == 0 {
		return nil
	}
	toks, err := lexer.Lex(file.NewSource(c.src))
	if err != nil {
		return nil
	}
	for i, tok := range toks {
		why := c.cs.hidden[tok.Value]
		if tok.Kind != lexer.Identifier || why == "" {
			continue
		}
		if i+1 < len(toks) && toks[i+1].Value == "(" {
			continue // a call of the builtin
		}
		if i > 0 && toks[i-1].Value == "." {
			continue // a field
		}
		return &exprError{msg: fmt.Sprintf("the trait %q cannot be used in rules because %s", tok.Value, why), offset: tok.From}
	}
	return nil
}

var typeNameRE = regexp.MustCompile(`\*rules\.rfmEnv|time\.Time|\[\]string|\[\]interface \{\}|interface \{\}|\bfloat64\b|\bint\b`)

// typeNames renames Go types in expr's messages after the rule types.
func typeNames(msg string) string {
	return typeNameRE.ReplaceAllStringFunc(msg, typeName)
}

func typeName(t string) string {
	switch t {
	case "*rules.rfmEnv":
		return "rfm"
	case "time.Time":
		return "time"
	case "[]string":
		return "list"
	case "[]interface {}":
		return "array"
	case "interface {}":
		return "any"
	case "float64", "int":
		return "number"
	case "bool":
		return "bool"
	case "string":
		return "string"
	}
	return t
}

// validator enforces what the rule language adds to expr's checks.
type validator struct {
	c      *ruleCompiler
	prog   *program
	traits map[string]bool
	events map[string]bool
	deps   map[string]bool
}

func at(n ast.Node, format string, args ...any) *exprError {
	return &exprError{msg: fmt.Sprintf(format, args...), offset: n.Location().From}
}

func (v *validator) walk(n ast.Node) *exprError {
	switch x := n.(type) {
	case *ast.NilNode:
		return at(n, "nil is not allowed in rules: a missing value is never nil; test presence with has(trait)")
	case *ast.VariableDeclaratorNode:
		return at(n, "let is not supported in rules")
	case *ast.SequenceNode:
		return at(n, "';' is not supported in rules: write one condition")
	case *ast.ChainNode:
		return at(n, "?. is not supported in rules: test presence with has(trait)")
	case *ast.SliceNode:
		return at(n, "slicing is not supported in rules")
	case *ast.MemberNode:
		if isRFM(x) {
			v.prog.rfm = true
			return nil
		}
		if id, ok := x.Node.(*ast.IdentifierNode); ok && id.Value == "rfm" {
			return at(x.Property, "rfm has r, f and m (quintiles 1 to 5), e.g. rfm.r >= 4")
		}
		if _, ok := x.Node.(*ast.PointerNode); !ok {
			return at(n, "indexing (x[i], x.y) is not supported in rules")
		}
	case *ast.IdentifierNode:
		if x.Value == "$env" {
			return at(n, "$env is not supported in rules")
		}
		if _, ok := v.c.cs.traits[x.Value]; ok {
			v.traits[x.Value] = true
		}
	case *ast.BuiltinNode:
		if x.Name == "now" {
			return at(n, "now() is not available in rules: a pass uses one injected time; use days_since(t)")
		}
	case *ast.CallNode:
		id, ok := x.Callee.(*ast.IdentifierNode)
		if !ok {
			return at(n, "only the rules functions can be called")
		}
		f := libraryByName[id.Value]
		if f == nil {
			return at(n, "unknown function %q", id.Value)
		}
		if len(x.Arguments) != len(f.args) {
			return at(n, "%s takes %d argument(s): %s", f.name, len(f.args), f.doc)
		}
		for i, a := range x.Arguments {
			if e := v.arg(f, a, f.args[i]); e != nil {
				return e
			}
		}
		return nil
	}
	for _, ch := range children(n) {
		if e := v.walk(ch); e != nil {
			return e
		}
	}
	return nil
}

func (v *validator) arg(f *function, a ast.Node, kind argKind) *exprError {
	lit := func(what, example string) (string, *exprError) {
		s, ok := a.(*ast.StringNode)
		if !ok {
			return "", at(a, "%s: the %s must be a string literal, e.g. %s", f.name, what, example)
		}
		return s.Value, nil
	}
	switch kind {
	case argEvent:
		name, e := lit("event name", fmt.Sprintf(`%s("purchase"...)`, f.name))
		if e != nil {
			return e
		}
		if !v.c.cs.events[name] {
			msg := fmt.Sprintf("unknown event name %q", name)
			if s := strictyaml.Closest(name, v.c.cs.Events); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else if len(v.c.cs.Events) > 0 {
				msg += fmt.Sprintf(" (the sources send: %s)", strings.Join(sortedCopy(v.c.cs.Events), ", "))
			} else {
				msg += " (no source declares any event)"
			}
			return at(a, "%s", msg)
		}
		v.events[name] = true
	case argWindow:
		w, e := lit("window", `"90d" or "2w"`)
		if e != nil {
			return e
		}
		if _, err := parseWindow(w); err != nil {
			return at(a, "%s: %v", f.name, err)
		}
	case argSegment:
		name, e := lit("segment name", `in_segment("champions")`)
		if e != nil {
			return e
		}
		if !v.c.segments[name] {
			msg := fmt.Sprintf("unknown segment %q", name)
			if s := strictyaml.Closest(name, v.c.segList); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			return at(a, "%s", msg)
		}
		v.deps[name] = true
	case argTrait:
		switch x := a.(type) {
		case *ast.IdentifierNode:
			if _, ok := v.c.cs.traits[x.Value]; ok {
				v.traits[x.Value] = true
				return nil
			}
		case *ast.MemberNode:
			if isRFM(x) {
				v.prog.rfm = true
				return nil
			}
		}
		return at(a, "%s takes a trait name, e.g. has(age)", f.name)
	default:
		return v.walk(a)
	}
	return nil
}

// CompileError is a `when` that does not compile: where the value is, the
// message, and the expression with a caret under the column expr reports.
type CompileError struct {
	Pos     Pos
	Segment string
	Msg     string
	Expr    string
	// Line (1-based) and Column (0-based, in characters) inside Expr.
	Line, Column int
}

func (e *CompileError) Error() string {
	lines := strings.Split(e.Expr, "\n")
	line := ""
	if e.Line >= 1 && e.Line <= len(lines) {
		line = strings.ReplaceAll(lines[e.Line-1], "\t", " ")
	}
	return fmt.Sprintf("%s: segment %q: %s\n    %s\n    %s^", e.Pos, e.Segment, e.Msg, line, strings.Repeat(" ", e.Column))
}

// newCompileError positions x inside src.
func newCompileError(pos Pos, segment, src string, x *exprError) *CompileError {
	line, col := 1, 0
	i := 0
	for _, r := range src {
		if i == x.offset {
			break
		}
		if r == '\n' {
			line++
			col = 0
		} else {
			col++
		}
		i++
	}
	if !utf8.ValidString(src) {
		col = min(col, len(src))
	}
	return &CompileError{Pos: pos, Segment: segment, Msg: x.msg, Expr: src, Line: line, Column: col}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
