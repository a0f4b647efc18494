package rules

import (
	"errors"
	"fmt"
	"reflect"
	"sort"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/cohortd/cohort/sdk"
)

// Missing values in expr's VM
//
// The VM evaluates rewritten expressions. In its environment a missing trait
// is nil (and rfm is nil when the customer has no quintiles); the rewrite
// makes every operation that could touch a nil guard itself first, so the
// VM never sees one and computes exactly the semantics of DESIGN.md
// section 4, the same the closure compiler implements:
//
//	B(n)  the definite boolean of a bool-typed node (missing counts as false)
//	P(n)  whether a value node is present (nil: always)
//	V(n)  its value, safe to evaluate whenever P(n) holds
//
//	trait x                 P = has(x)                V = x
//	rfm.r                   P = has(rfm)              V = rfm.r
//	first_time/last_time(e) P = ever(e)               V = the call
//	a + b, f(a, b), ...     P = P(a) && P(b)          V = V(a) + V(b)  (strict)
//	a ?? b                  P = P(a) || P(b)          V = P(a) ? V(a) : V(b)
//	c ? a : b               P = B(c) ? P(a) : P(b)    V = B(c) ? V(a) : V(b)
//	a < b (any comparison)  B = P(a) && P(b) && V(a) < V(b)
//	!a, a && b, a || b      B = !B(a), B(a) && B(b), B(a) || B(b)
//	has(x)                  B = P(x)
//	bool trait x            B = has(x) && x
//
// A predicate body of a value-typed builtin (map, sum, sortBy, ...) is
// missing whenever a trait it reads is missing.

// rewriter builds the rewritten AST. Nodes are cloned, never shared.
type rewriter struct {
	cs   *compiledSchema
	size int
}

// maxRewriteNodes bounds the rewritten tree (guards repeat subtrees).
const maxRewriteNodes = 100000

var errTooComplex = errors.New("expression too complex")

func (rw *rewriter) node(n ast.Node) ast.Node {
	rw.size++
	if rw.size > maxRewriteNodes {
		panic(errTooComplex)
	}
	return n
}

func (rw *rewriter) ident(name string) ast.Node {
	return rw.node(&ast.IdentifierNode{Value: name})
}

func (rw *rewriter) boolLit(v bool) ast.Node { return rw.node(&ast.BoolNode{Value: v}) }

func (rw *rewriter) call(name string, args ...ast.Node) ast.Node {
	f := libraryByName[name]
	if f != nil && !f.stateless {
		args = append([]ast.Node{rw.ident(stateVar)}, args...)
	}
	return rw.node(&ast.CallNode{Callee: rw.ident(name), Arguments: args})
}

func (rw *rewriter) and(ns ...ast.Node) ast.Node {
	var out ast.Node
	for _, n := range ns {
		if n == nil {
			continue
		}
		if out == nil {
			out = n
			continue
		}
		out = rw.node(&ast.BinaryNode{Operator: "&&", Left: out, Right: n})
	}
	return out
}

func (rw *rewriter) orTrue(n ast.Node) ast.Node {
	if n == nil {
		return rw.boolLit(true)
	}
	return n
}

func (rw *rewriter) cond(c, a, b ast.Node) ast.Node {
	return rw.node(&ast.ConditionalNode{Ternary: true, Cond: c, Exp1: a, Exp2: b})
}

func isComparison(op string) bool {
	switch op {
	case "==", "!=", "<", "<=", ">", ">=", "in", "matches", "contains", "startsWith", "endsWith":
		return true
	}
	return false
}

func isLogical(op string) bool {
	switch op {
	case "&&", "and", "||", "or":
		return true
	}
	return false
}

func isBoolType(n ast.Node) bool {
	t := n.Type()
	return t != nil && t.Kind() == reflect.Bool
}

// structural reports whether n is a bool node that is never missing, whose
// B form is built from its parts.
func structural(n ast.Node) bool {
	switch x := n.(type) {
	case *ast.BoolNode:
		return true
	case *ast.UnaryNode:
		return x.Operator == "!" || x.Operator == "not"
	case *ast.BinaryNode:
		return isLogical(x.Operator) || isComparison(x.Operator)
	case *ast.ConditionalNode:
		return isBoolType(x)
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok {
			switch id.Value {
			case "has", "ever", "in_segment":
				return true
			}
		}
	}
	return false
}

// B returns the definite boolean of n.
func (rw *rewriter) B(n ast.Node) ast.Node {
	switch x := n.(type) {
	case *ast.BoolNode:
		return rw.boolLit(x.Value)
	case *ast.UnaryNode:
		if x.Operator == "!" || x.Operator == "not" {
			return rw.node(&ast.UnaryNode{Operator: "!", Node: rw.B(x.Node)})
		}
	case *ast.BinaryNode:
		switch {
		case isLogical(x.Operator):
			return rw.node(&ast.BinaryNode{Operator: x.Operator, Left: rw.B(x.Left), Right: rw.B(x.Right)})
		case isComparison(x.Operator):
			cmp := rw.node(&ast.BinaryNode{Operator: x.Operator, Left: rw.V(x.Left), Right: rw.V(x.Right)})
			return rw.and(rw.P(x.Left), rw.P(x.Right), cmp)
		}
	case *ast.ConditionalNode:
		if isBoolType(x) {
			return rw.cond(rw.B(x.Cond), rw.B(x.Exp1), rw.B(x.Exp2))
		}
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok {
			switch id.Value {
			case "has":
				return rw.orTrue(rw.P(x.Arguments[0]))
			case "ever", "in_segment":
				return rw.call(id.Value, rw.clone(x.Arguments[0]))
			}
		}
	}
	return rw.orTrue(rw.and(rw.P(n), rw.V(n)))
}

// P returns the presence condition of n, nil when n is never missing.
func (rw *rewriter) P(n ast.Node) ast.Node {
	if structural(n) {
		return nil
	}
	switch x := n.(type) {
	case *ast.IdentifierNode:
		if _, ok := rw.cs.traits[x.Value]; ok {
			return rw.call("has", rw.ident(x.Value))
		}
		return nil
	case *ast.MemberNode:
		if isRFM(x) {
			return rw.call("has", rw.ident("rfm"))
		}
		return rw.and(rw.P(x.Node), rw.P(x.Property))
	case *ast.CallNode:
		id, _ := x.Callee.(*ast.IdentifierNode)
		if id == nil {
			return nil
		}
		switch id.Value {
		case "first_time", "last_time":
			return rw.call("ever", rw.clone(x.Arguments[0]))
		case "days_since":
			return rw.P(x.Arguments[0])
		}
		return nil
	case *ast.BinaryNode:
		if x.Operator == "??" {
			pl, pr := rw.P(x.Left), rw.P(x.Right)
			if pl == nil || pr == nil {
				return nil
			}
			return rw.node(&ast.BinaryNode{Operator: "||", Left: pl, Right: pr})
		}
		return rw.and(rw.P(x.Left), rw.P(x.Right))
	case *ast.UnaryNode:
		return rw.P(x.Node)
	case *ast.ConditionalNode:
		pa, pb := rw.P(x.Exp1), rw.P(x.Exp2)
		if pa == nil && pb == nil {
			return nil
		}
		return rw.cond(rw.B(x.Cond), rw.orTrue(pa), rw.orTrue(pb))
	case *ast.BuiltinNode:
		var ps []ast.Node
		for _, a := range x.Arguments {
			if pn, ok := a.(*ast.PredicateNode); ok {
				if !isBoolType(pn.Node) {
					ps = append(ps, rw.leafPresence(pn.Node))
				}
				continue
			}
			ps = append(ps, rw.P(a))
		}
		return rw.and(ps...)
	case *ast.ArrayNode:
		var ps []ast.Node
		for _, e := range x.Nodes {
			ps = append(ps, rw.P(e))
		}
		return rw.and(ps...)
	case *ast.MapNode:
		var ps []ast.Node
		for _, p := range x.Pairs {
			ps = append(ps, rw.P(p))
		}
		return rw.and(ps...)
	case *ast.PairNode:
		return rw.and(rw.P(x.Key), rw.P(x.Value))
	case *ast.SliceNode:
		var ps []ast.Node
		ps = append(ps, rw.P(x.Node))
		if x.From != nil {
			ps = append(ps, rw.P(x.From))
		}
		if x.To != nil {
			ps = append(ps, rw.P(x.To))
		}
		return rw.and(ps...)
	}
	return nil
}

// leafPresence is the conjunction of the presence of every missing-capable
// leaf in n (the conservative rule for value-typed predicate bodies).
func (rw *rewriter) leafPresence(n ast.Node) ast.Node {
	var ps []ast.Node
	seen := map[string]bool{}
	var walk func(n ast.Node)
	walk = func(n ast.Node) {
		switch x := n.(type) {
		case *ast.IdentifierNode:
			if _, ok := rw.cs.traits[x.Value]; ok && !seen[x.Value] {
				seen[x.Value] = true
				ps = append(ps, rw.call("has", rw.ident(x.Value)))
			}
			return
		case *ast.MemberNode:
			if isRFM(x) {
				if !seen["rfm"] {
					seen["rfm"] = true
					ps = append(ps, rw.call("has", rw.ident("rfm")))
				}
				return
			}
		case *ast.CallNode:
			if id, ok := x.Callee.(*ast.IdentifierNode); ok && (id.Value == "first_time" || id.Value == "last_time") {
				if s, ok := x.Arguments[0].(*ast.StringNode); ok && !seen["ever:"+s.Value] {
					seen["ever:"+s.Value] = true
					ps = append(ps, rw.call("ever", rw.clone(s)))
				}
				return
			}
		}
		for _, c := range children(n) {
			walk(c)
		}
	}
	walk(n)
	return rw.and(ps...)
}

// V returns the value of n, to be evaluated only where P(n) holds.
func (rw *rewriter) V(n ast.Node) ast.Node {
	if structural(n) {
		return rw.B(n)
	}
	switch x := n.(type) {
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok && libraryNames[id.Value] {
			args := make([]ast.Node, len(x.Arguments))
			for i, a := range x.Arguments {
				args[i] = rw.V(a)
			}
			return rw.call(id.Value, args...)
		}
	case *ast.BinaryNode:
		if x.Operator == "??" {
			pl := rw.P(x.Left)
			if pl == nil {
				return rw.V(x.Left)
			}
			return rw.cond(pl, rw.V(x.Left), rw.V(x.Right))
		}
		return rw.node(&ast.BinaryNode{Operator: x.Operator, Left: rw.V(x.Left), Right: rw.V(x.Right)})
	case *ast.UnaryNode:
		return rw.node(&ast.UnaryNode{Operator: x.Operator, Node: rw.V(x.Node)})
	case *ast.ConditionalNode:
		return rw.cond(rw.B(x.Cond), rw.V(x.Exp1), rw.V(x.Exp2))
	case *ast.BuiltinNode:
		args := make([]ast.Node, len(x.Arguments))
		for i, a := range x.Arguments {
			if pn, ok := a.(*ast.PredicateNode); ok {
				var body ast.Node
				if isBoolType(pn.Node) {
					body = rw.B(pn.Node)
				} else {
					body = rw.V(pn.Node)
				}
				args[i] = rw.node(&ast.PredicateNode{Node: body})
				continue
			}
			args[i] = rw.V(a)
		}
		return rw.node(&ast.BuiltinNode{Name: x.Name, Arguments: args})
	case *ast.ArrayNode:
		ns := make([]ast.Node, len(x.Nodes))
		for i, e := range x.Nodes {
			ns[i] = rw.V(e)
		}
		return rw.node(&ast.ArrayNode{Nodes: ns})
	case *ast.MapNode:
		ps := make([]ast.Node, len(x.Pairs))
		for i, p := range x.Pairs {
			ps[i] = rw.V(p)
		}
		return rw.node(&ast.MapNode{Pairs: ps})
	case *ast.PairNode:
		return rw.node(&ast.PairNode{Key: rw.V(x.Key), Value: rw.V(x.Value)})
	}
	return rw.clone(n)
}

// clone deep-copies n without type information.
func (rw *rewriter) clone(n ast.Node) ast.Node {
	switch x := n.(type) {
	case nil:
		return nil
	case *ast.NilNode:
		return rw.node(&ast.NilNode{})
	case *ast.IdentifierNode:
		return rw.ident(x.Value)
	case *ast.IntegerNode:
		return rw.node(&ast.IntegerNode{Value: x.Value})
	case *ast.FloatNode:
		return rw.node(&ast.FloatNode{Value: x.Value})
	case *ast.BoolNode:
		return rw.boolLit(x.Value)
	case *ast.StringNode:
		return rw.node(&ast.StringNode{Value: x.Value})
	case *ast.BytesNode:
		return rw.node(&ast.BytesNode{Value: x.Value})
	case *ast.ConstantNode:
		return rw.node(&ast.ConstantNode{Value: x.Value})
	case *ast.UnaryNode:
		return rw.node(&ast.UnaryNode{Operator: x.Operator, Node: rw.clone(x.Node)})
	case *ast.BinaryNode:
		return rw.node(&ast.BinaryNode{Operator: x.Operator, Left: rw.clone(x.Left), Right: rw.clone(x.Right)})
	case *ast.ChainNode:
		return rw.node(&ast.ChainNode{Node: rw.clone(x.Node)})
	case *ast.MemberNode:
		return rw.node(&ast.MemberNode{Node: rw.clone(x.Node), Property: rw.clone(x.Property), Optional: x.Optional, Method: x.Method})
	case *ast.SliceNode:
		return rw.node(&ast.SliceNode{Node: rw.clone(x.Node), From: rw.clone(x.From), To: rw.clone(x.To)})
	case *ast.CallNode:
		args := make([]ast.Node, len(x.Arguments))
		for i, a := range x.Arguments {
			args[i] = rw.clone(a)
		}
		return rw.node(&ast.CallNode{Callee: rw.clone(x.Callee), Arguments: args})
	case *ast.BuiltinNode:
		args := make([]ast.Node, len(x.Arguments))
		for i, a := range x.Arguments {
			args[i] = rw.clone(a)
		}
		return rw.node(&ast.BuiltinNode{Name: x.Name, Arguments: args})
	case *ast.PredicateNode:
		return rw.node(&ast.PredicateNode{Node: rw.clone(x.Node)})
	case *ast.PointerNode:
		return rw.node(&ast.PointerNode{Name: x.Name})
	case *ast.ConditionalNode:
		return rw.node(&ast.ConditionalNode{Ternary: x.Ternary, Cond: rw.clone(x.Cond), Exp1: rw.clone(x.Exp1), Exp2: rw.clone(x.Exp2)})
	case *ast.ArrayNode:
		ns := make([]ast.Node, len(x.Nodes))
		for i, e := range x.Nodes {
			ns[i] = rw.clone(e)
		}
		return rw.node(&ast.ArrayNode{Nodes: ns})
	case *ast.MapNode:
		ps := make([]ast.Node, len(x.Pairs))
		for i, p := range x.Pairs {
			ps[i] = rw.clone(p)
		}
		return rw.node(&ast.MapNode{Pairs: ps})
	case *ast.PairNode:
		return rw.node(&ast.PairNode{Key: rw.clone(x.Key), Value: rw.clone(x.Value)})
	case *ast.VariableDeclaratorNode:
		return rw.node(&ast.VariableDeclaratorNode{Name: x.Name, Value: rw.clone(x.Value), Expr: rw.clone(x.Expr)})
	case *ast.SequenceNode:
		ns := make([]ast.Node, len(x.Nodes))
		for i, e := range x.Nodes {
			ns[i] = rw.clone(e)
		}
		return rw.node(&ast.SequenceNode{Nodes: ns})
	}
	panic(fmt.Errorf("rules: cannot clone %T", n))
}

// children lists the sub-nodes of n in source order.
func children(n ast.Node) []ast.Node {
	var out []ast.Node
	add := func(ns ...ast.Node) {
		for _, c := range ns {
			if c != nil {
				out = append(out, c)
			}
		}
	}
	switch x := n.(type) {
	case *ast.UnaryNode:
		add(x.Node)
	case *ast.BinaryNode:
		add(x.Left, x.Right)
	case *ast.ChainNode:
		add(x.Node)
	case *ast.MemberNode:
		add(x.Node, x.Property)
	case *ast.SliceNode:
		add(x.Node, x.From, x.To)
	case *ast.CallNode:
		add(x.Callee)
		add(x.Arguments...)
	case *ast.BuiltinNode:
		add(x.Arguments...)
	case *ast.PredicateNode:
		add(x.Node)
	case *ast.ConditionalNode:
		add(x.Cond, x.Exp1, x.Exp2)
	case *ast.ArrayNode:
		add(x.Nodes...)
	case *ast.MapNode:
		add(x.Pairs...)
	case *ast.PairNode:
		add(x.Key, x.Value)
	case *ast.VariableDeclaratorNode:
		add(x.Value, x.Expr)
	case *ast.SequenceNode:
		add(x.Nodes...)
	}
	return out
}

func isRFM(m *ast.MemberNode) bool {
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok || id.Value != "rfm" {
		return false
	}
	s, ok := m.Property.(*ast.StringNode)
	return ok && (s.Value == "r" || s.Value == "f" || s.Value == "m")
}

// vmProg is a rewritten expression compiled for expr's VM.
type vmProg struct {
	prog *vm.Program
	// traits the program reads, and whether it reads rfm.
	traits []string
	rfm    bool
	asBool bool
}

// compileVM rewrites n and compiles it. asBool: the program yields B(n);
// otherwise it yields V(n), or nil where n is missing.
func compileVM(cs *compiledSchema, n ast.Node, src string, asBool bool) (p *vmProg, err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok && errors.Is(e, errTooComplex) {
				err = e
				return
			}
			err = fmt.Errorf("internal error compiling for expr's VM: %v", r)
		}
	}()
	rw := &rewriter{cs: cs}
	var root ast.Node
	if asBool {
		root = rw.B(n)
	} else if pn := rw.P(n); pn != nil {
		root = rw.cond(pn, rw.V(n), rw.node(&ast.NilNode{}))
	} else {
		root = rw.V(n)
	}
	prog, err := compileTree(root, src, vmOptions(cs, asBool))
	if err != nil {
		return nil, err
	}
	p = &vmProg{prog: prog, asBool: asBool}
	refs := map[string]bool{}
	var walk func(ast.Node)
	walk = func(n ast.Node) {
		switch x := n.(type) {
		case *ast.IdentifierNode:
			if _, ok := cs.traits[x.Value]; ok {
				refs[x.Value] = true
			}
			if x.Value == "rfm" {
				p.rfm = true
			}
		}
		for _, c := range children(n) {
			walk(c)
		}
	}
	walk(n)
	for t := range refs {
		p.traits = append(p.traits, t)
	}
	sort.Strings(p.traits)
	return p, nil
}

// compileTree type-checks and compiles an AST built by the rewriter.
func compileTree(root ast.Node, src string, opts []expr.Option) (*vm.Program, error) {
	config := conf.CreateNew()
	for _, op := range opts {
		op(config)
	}
	for name := range config.Disabled {
		delete(config.Builtins, name)
	}
	config.Check()
	tree := &parser.Tree{Node: root, Source: file.NewSource(src)}
	if _, err := checker.Check(tree, config); err != nil {
		return nil, err
	}
	return compiler.Compile(tree, config)
}

// vmState is what the VM versions of the library functions read.
type vmState struct {
	b     *binding
	row   uint32
	today int64
	segs  []Bitmap
}

// vmRunner evaluates vmProgs row by row; one per evaluation goroutine.
type vmRunner struct {
	m   vm.VM
	st  vmState
	env map[string]any
}

func newVMRunner(b *binding, c *evalCtx) *vmRunner {
	return &vmRunner{st: vmState{b: b, today: c.today, segs: c.segs}, env: map[string]any{}}
}

// run evaluates p for row.
func (r *vmRunner) run(p *vmProg, row uint32) (any, error) {
	r.st.row = row
	for _, name := range p.traits {
		r.env[name] = r.st.b.traitValue(name, row)
	}
	if p.rfm {
		r.env["rfm"] = r.st.b.rfmValue(row)
	}
	r.env[stateVar] = &r.st
	return r.m.Run(p.prog, r.env)
}

// traitValue is a trait's value for the VM: nil when missing.
func (b *binding) traitValue(name string, row uint32) any {
	switch b.cs.traits[name] {
	case sdk.TypeNumber:
		c := b.nums[name]
		if !c.Present.Has(row) {
			return nil
		}
		return c.Values[row]
	case sdk.TypeString:
		c := b.strs[name]
		code := c.Codes[row]
		if code == 0 || int(code) >= len(c.Dict) {
			return nil
		}
		return c.Dict[code]
	case sdk.TypeBool:
		c := b.bools[name]
		if !c.Present.Has(row) {
			return nil
		}
		return c.Values.Has(row)
	case sdk.TypeTime:
		c := b.times[name]
		if !c.Present.Has(row) {
			return nil
		}
		return DayTime(int64(c.Days[row]))
	case sdk.TypeStringList:
		c := b.lists[name]
		if !c.Present.Has(row) {
			return nil
		}
		s, n := c.Start[row], uint32(c.N[row])
		out := make([]string, 0, n)
		for _, code := range c.Codes[s : s+n] {
			if int(code) < len(c.Dict) {
				out = append(out, c.Dict[code])
			}
		}
		return out
	}
	return nil
}

// rfmValue is rfm for the VM: nil when the row has no quintiles.
func (b *binding) rfmValue(row uint32) any {
	if !b.hasRFM || b.rfm.R[row] == 0 {
		return nil
	}
	return &rfmEnv{R: float64(b.rfm.R[row]), F: float64(b.rfm.F[row]), M: float64(b.rfm.M[row])}
}
