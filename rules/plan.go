package rules

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/cohortd/cohort/sdk"
)

// planner turns a checked AST into a plan for the closure compiler. What
// it does not support natively it hands to expr's VM, one subtree at a time.
type planner struct {
	cs  *compiledSchema
	src string
	err *exprError
}

func (p *planner) fail(n ast.Node, format string, args ...any) {
	if p.err == nil {
		p.err = &exprError{msg: fmt.Sprintf(format, args...), offset: n.Location().From}
	}
}

func kindOf(n ast.Node) reflect.Kind {
	t := n.Type()
	if t == nil {
		return reflect.Interface
	}
	return t.Kind()
}

func isNumKind(k reflect.Kind) bool {
	switch k {
	case reflect.Float64, reflect.Float32, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

func isFloatKind(k reflect.Kind) bool { return k == reflect.Float64 || k == reflect.Float32 }

func isTimeNode(n ast.Node) bool { return n.Type() == timeType }

// isConst reports whether n reads nothing of a customer or the clock.
func isConst(n ast.Node) bool {
	ok := true
	var walk func(n ast.Node, preds int)
	walk = func(n ast.Node, preds int) {
		if !ok {
			return
		}
		switch x := n.(type) {
		case *ast.IdentifierNode, *ast.CallNode, *ast.VariableDeclaratorNode:
			ok = false
			return
		case *ast.PointerNode:
			if preds == 0 {
				ok = false
			}
			return
		case *ast.BuiltinNode:
			if x.Name == "now" {
				ok = false
				return
			}
			for _, a := range x.Arguments {
				if pn, isPred := a.(*ast.PredicateNode); isPred {
					walk(pn.Node, preds+1)
				} else {
					walk(a, preds)
				}
			}
			return
		}
		for _, c := range children(n) {
			walk(c, preds)
		}
	}
	walk(n, 0)
	return ok
}

// constValue evaluates a constant subtree with expr's VM.
func (p *planner) constValue(n ast.Node) (any, bool) {
	prog, err := compileVM(p.cs, n, p.src, false)
	if err != nil {
		p.fail(n, "%v", cleanMessage(err))
		return nil, false
	}
	var m vm.VM
	out, err := m.Run(prog.prog, map[string]any{})
	if err != nil {
		p.fail(n, "%s cannot be computed: %v", n.String(), cleanMessage(err))
		return nil, false
	}
	return out, true
}

// cleanMessage strips expr's position snippet from an error.
func cleanMessage(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, " ("); i > 0 && strings.Contains(msg[i:], "\n") {
		msg = msg[:i]
	}
	return msg
}

func (p *planner) vmBool(n ast.Node) bplan {
	prog, err := compileVM(p.cs, n, p.src, true)
	if err != nil {
		p.fail(n, "%v", cleanMessage(err))
		return &pConst{false}
	}
	return &pVM{prog: prog}
}

func (p *planner) vmNum(n ast.Node) nplan {
	prog, err := compileVM(p.cs, n, p.src, false)
	if err != nil {
		p.fail(n, "%v", cleanMessage(err))
		return &nConst{0}
	}
	return &nVM{prog: prog}
}

// boolPlan plans a bool-typed node; it never fails to produce a plan.
func (p *planner) boolPlan(n ast.Node) bplan {
	if isConst(n) {
		v, ok := p.constValue(n)
		if !ok {
			return &pConst{false}
		}
		b, _ := v.(bool)
		return &pConst{b}
	}
	switch x := n.(type) {
	case *ast.BinaryNode:
		switch x.Operator {
		case "&&", "and":
			return p.andPlan(x)
		case "||", "or":
			return p.orPlan(x)
		case "==", "!=", "<", "<=", ">", ">=":
			return p.cmpPlan(x)
		case "in":
			return p.inPlan(x)
		case "matches", "contains", "startsWith", "endsWith":
			return p.strOpPlan(x)
		}
	case *ast.UnaryNode:
		if x.Operator == "!" || x.Operator == "not" {
			kid := p.boolPlan(x.Node)
			if c, ok := kid.(*pConst); ok {
				return &pConst{!c.v}
			}
			return &pNot{kid: kid}
		}
	case *ast.IdentifierNode:
		if p.cs.traits[x.Value] == sdk.TypeBool {
			return &pBoolTrait{name: x.Value, want: true}
		}
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok {
			switch id.Value {
			case "has":
				if m, ok := x.Arguments[0].(*ast.MemberNode); ok && isRFM(m) {
					return &pHas{rfm: true}
				}
				if a, ok := x.Arguments[0].(*ast.IdentifierNode); ok {
					return &pHas{name: a.Value}
				}
			case "ever":
				return &pEver{event: x.Arguments[0].(*ast.StringNode).Value}
			case "in_segment":
				return &pInSegment{name: x.Arguments[0].(*ast.StringNode).Value}
			}
		}
	case *ast.ConditionalNode:
		return &pTernary{c: p.boolPlan(x.Cond), a: p.boolPlan(x.Exp1), b: p.boolPlan(x.Exp2)}
	}
	return p.vmBool(n)
}

func flatten(n ast.Node, ops [2]string, out []ast.Node) []ast.Node {
	if b, ok := n.(*ast.BinaryNode); ok && (b.Operator == ops[0] || b.Operator == ops[1]) {
		out = flatten(b.Left, ops, out)
		return flatten(b.Right, ops, out)
	}
	return append(out, n)
}

func (p *planner) andPlan(n *ast.BinaryNode) bplan {
	var kids []bplan
	ranges := map[string]*pNumRange{}
	for _, c := range flatten(n, [2]string{"&&", "and"}, nil) {
		k := p.boolPlan(c)
		switch x := k.(type) {
		case *pConst:
			if !x.v {
				return &pConst{false}
			}
			continue
		case *pAnd:
			kids = append(kids, x.kids...)
			continue
		case *pNumRange:
			// Fuse ranges over the same value: age >= 25 && age <= 34.
			if !x.neg {
				if r := ranges[x.leaf.key()]; r != nil {
					r.lo, r.hi = max(r.lo, x.lo), min(r.hi, x.hi)
					continue
				}
				x = &pNumRange{leaf: x.leaf, lo: x.lo, hi: x.hi}
				ranges[x.leaf.key()] = x
				k = x
			}
		}
		kids = append(kids, k)
	}
	kids = fuseTables(kids, false)
	kids = fuseRFM(kids)
	kids = dropImpliedEver(kids)
	kids = fuseStrTables(kids)
	switch len(kids) {
	case 0:
		return &pConst{true}
	case 1:
		return kids[0]
	}
	// Cheap tests first; the order does not change the result.
	sort.SliceStable(kids, func(i, j int) bool { return kids[i].cost() < kids[j].cost() })
	return &pAnd{kids: kids}
}

func (p *planner) orPlan(n *ast.BinaryNode) bplan {
	var kids []bplan
	for _, c := range flatten(n, [2]string{"||", "or"}, nil) {
		k := p.boolPlan(c)
		switch x := k.(type) {
		case *pConst:
			if x.v {
				return &pConst{true}
			}
			continue
		case *pOr:
			kids = append(kids, x.kids...)
			continue
		}
		kids = append(kids, k)
	}
	kids = fuseTables(kids, true)
	switch len(kids) {
	case 0:
		return &pConst{false}
	case 1:
		return kids[0]
	}
	sort.SliceStable(kids, func(i, j int) bool { return kids[i].cost() < kids[j].cost() })
	return &pOr{kids: kids}
}

// fuseTables merges code-table predicates over the same column into one
// table: under || for strings and lists (an item matching any), under &&
// for strings only (a list's items may match different predicates).
func fuseTables(kids []bplan, or bool) []bplan {
	strs := map[string]*pStrTable{}
	lists := map[string]*pListTable{}
	combine := func(a, b func(string) bool) func(string) bool {
		if or {
			return func(s string) bool { return a(s) || b(s) }
		}
		return func(s string) bool { return a(s) && b(s) }
	}
	out := kids[:0]
	for _, k := range kids {
		switch x := k.(type) {
		case *pStrTable:
			if prev := strs[x.name]; prev != nil {
				prev.table = &codeTable{pred: combine(prev.table.pred, x.table.pred)}
				continue
			}
			x = &pStrTable{name: x.name, table: x.table}
			strs[x.name] = x
			k = x
		case *pListTable:
			if !or {
				break
			}
			if prev := lists[x.name]; prev != nil {
				prev.table = &codeTable{pred: combine(prev.table.pred, x.table.pred)}
				continue
			}
			x = &pListTable{name: x.name, table: x.table}
			lists[x.name] = x
			k = x
		}
		out = append(out, k)
	}
	return out
}

// dropImpliedEver removes ever(e) from a conjunction that also holds a
// range over first_time(e) or last_time(e): the range needs the event too.
func dropImpliedEver(kids []bplan) []bplan {
	implied := map[string]bool{}
	for _, k := range kids {
		var t tplan
		switch x := k.(type) {
		case *pNumRange:
			if d, ok := x.leaf.(*nDaysSince); ok && !x.neg {
				t = d.t
			}
		case *pDayRange:
			if !x.neg {
				t = x.t
			}
		}
		if e, ok := t.(*tEvent); ok {
			implied[e.event] = true
		}
	}
	out := kids[:0]
	for _, k := range kids {
		if e, ok := k.(*pEver); ok && implied[e.event] {
			continue
		}
		out = append(out, k)
	}
	return out
}

// fuseStrTables evaluates the string-table tests of a conjunction, over
// different columns, in one loop.
func fuseStrTables(kids []bplan) []bplan {
	var fused *pStrTables
	n := 0
	for _, k := range kids {
		if _, ok := k.(*pStrTable); ok {
			n++
		}
	}
	if n < 2 {
		return kids
	}
	out := kids[:0]
	for _, k := range kids {
		if x, ok := k.(*pStrTable); ok {
			if fused == nil {
				fused = &pStrTables{}
				out = append(out, fused)
			}
			fused.tests = append(fused.tests, x)
			continue
		}
		out = append(out, k)
	}
	return out
}

// fuseRFM merges && of ranges over rfm.r, rfm.f and rfm.m into one loop.
func fuseRFM(kids []bplan) []bplan {
	var fused *pRFM
	out := kids[:0]
	for _, k := range kids {
		if x, ok := k.(*pNumRange); ok {
			if q, ok := x.leaf.(*nRFM); ok {
				if fused == nil {
					fused = newPRFM()
					out = append(out, fused)
				}
				fused.and(q.which, x.lo, x.hi, x.neg)
				continue
			}
		}
		out = append(out, k)
	}
	return out
}

var flipOp = map[string]string{"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

// numRange turns x op c into lo <= x <= hi (negated for !=).
func numRange(op string, c float64) (lo, hi float64, neg bool) {
	empty := func() (float64, float64, bool) { return 1, 0, false }
	if math.IsNaN(c) {
		if op == "!=" {
			return 1, 0, true
		}
		return empty()
	}
	switch op {
	case "==":
		return c, c, false
	case "!=":
		return c, c, true
	case ">":
		if math.IsInf(c, 1) {
			return empty()
		}
		return math.Nextafter(c, math.Inf(1)), math.Inf(1), false
	case ">=":
		return c, math.Inf(1), false
	case "<":
		if math.IsInf(c, -1) {
			return empty()
		}
		return math.Inf(-1), math.Nextafter(c, math.Inf(-1)), false
	case "<=":
		return math.Inf(-1), c, false
	}
	panic("rules: unknown comparison " + op)
}

func (p *planner) cmpPlan(n *ast.BinaryNode) bplan {
	op, l, r := n.Operator, n.Left, n.Right
	lk, rk := kindOf(l), kindOf(r)
	switch {
	case isNumKind(lk) && isNumKind(rk):
		if isConst(l) {
			op, l, r = flipOp[op], r, l
		}
		if isConst(r) {
			v, ok := p.constValue(r)
			if !ok {
				return &pConst{false}
			}
			c, _ := toFloat(v)
			if leaf, ok := p.numPlan(l).(leafPlan); ok {
				lo, hi, neg := numRange(op, c)
				return &pNumRange{leaf: leaf, lo: lo, hi: hi, neg: neg}
			}
			return &pNumCmp{op: op, l: p.numPlan(l), r: &nConst{c}}
		}
		return &pNumCmp{op: op, l: p.numPlan(l), r: p.numPlan(r)}
	case lk == reflect.String && rk == reflect.String:
		if isConst(l) {
			op, l, r = flipOp[op], r, l
		}
		if id, ok := l.(*ast.IdentifierNode); ok && p.cs.traits[id.Value] == sdk.TypeString && isConst(r) {
			v, ok := p.constValue(r)
			if !ok {
				return &pConst{false}
			}
			c, _ := v.(string)
			var pred func(string) bool
			switch op {
			case "==":
				pred = func(s string) bool { return s == c }
			case "!=":
				pred = func(s string) bool { return s != c }
			case "<":
				pred = func(s string) bool { return s < c }
			case "<=":
				pred = func(s string) bool { return s <= c }
			case ">":
				pred = func(s string) bool { return s > c }
			case ">=":
				pred = func(s string) bool { return s >= c }
			}
			return &pStrTable{name: id.Value, table: &codeTable{pred: pred}}
		}
	case isTimeNode(l) && isTimeNode(r):
		if isConst(l) {
			op, l, r = flipOp[op], r, l
		}
		tl := p.timePlan(l)
		if tl == nil {
			break
		}
		if isConst(r) {
			v, ok := p.constValue(r)
			if !ok {
				return &pConst{false}
			}
			t, _ := v.(time.Time)
			lo, hi, neg := dayRange(op, t)
			return &pDayRange{t: tl, lo: lo, hi: hi, neg: neg}
		}
		if tr := p.timePlan(r); tr != nil {
			return &pDayCmp{op: op, l: tl, r: tr}
		}
	case lk == reflect.Bool && rk == reflect.Bool && (op == "==" || op == "!="):
		if isConst(l) {
			l, r = r, l
		}
		if id, ok := l.(*ast.IdentifierNode); ok && p.cs.traits[id.Value] == sdk.TypeBool && isConst(r) {
			v, ok := p.constValue(r)
			if !ok {
				return &pConst{false}
			}
			c, _ := v.(bool)
			return &pBoolTrait{name: id.Value, want: c == (op == "==")}
		}
	}
	return p.vmBool(n)
}

// dayRange turns midnight(day) op t into a range of days: a time trait is
// the UTC midnight of its day, compared with t to the nanosecond.
func dayRange(op string, t time.Time) (lo, hi int64, neg bool) {
	cd := Day(t)
	frac := !DayTime(cd).Equal(t) // t is after midnight of its day
	switch op {
	case ">":
		return cd + 1, math.MaxInt64, false
	case ">=":
		if frac {
			return cd + 1, math.MaxInt64, false
		}
		return cd, math.MaxInt64, false
	case "<":
		if frac {
			return math.MinInt64, cd, false
		}
		return math.MinInt64, cd - 1, false
	case "<=":
		return math.MinInt64, cd, false
	case "==":
		if frac {
			return 1, 0, false
		}
		return cd, cd, false
	case "!=":
		if frac {
			return 1, 0, true
		}
		return cd, cd, true
	}
	panic("rules: unknown comparison " + op)
}

func (p *planner) inPlan(n *ast.BinaryNode) bplan {
	l, r := n.Left, n.Right
	if isConst(r) {
		v, ok := p.constValue(r)
		if !ok {
			return &pConst{false}
		}
		rv := reflect.ValueOf(v)
		if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
			return p.vmBool(n)
		}
		var strs []string
		var nums []float64
		for i := 0; i < rv.Len(); i++ {
			e := rv.Index(i).Interface()
			if s, ok := e.(string); ok {
				strs = append(strs, s)
			} else if f, ok := toFloat(e); ok {
				nums = append(nums, f)
			}
		}
		if id, ok := l.(*ast.IdentifierNode); ok && p.cs.traits[id.Value] == sdk.TypeString {
			set := map[string]bool{}
			for _, s := range strs {
				set[s] = true
			}
			return &pStrTable{name: id.Value, table: &codeTable{pred: func(s string) bool { return set[s] }}}
		}
		if isNumKind(kindOf(l)) {
			x := p.numPlan(l)
			if leaf, ok := x.(leafPlan); ok && len(nums) == 1 {
				lo, hi, neg := numRange("==", nums[0])
				return &pNumRange{leaf: leaf, lo: lo, hi: hi, neg: neg}
			}
			return &pNumIn{x: x, set: nums}
		}
		return p.vmBool(n)
	}
	if id, ok := r.(*ast.IdentifierNode); ok && p.cs.traits[id.Value] == sdk.TypeStringList && isConst(l) && kindOf(l) == reflect.String {
		v, ok := p.constValue(l)
		if !ok {
			return &pConst{false}
		}
		c, _ := v.(string)
		return &pListTable{name: id.Value, table: &codeTable{pred: func(s string) bool { return s == c }}}
	}
	return p.vmBool(n)
}

func (p *planner) strOpPlan(n *ast.BinaryNode) bplan {
	op, l, r := n.Operator, n.Left, n.Right
	if kindOf(l) != reflect.String || kindOf(r) != reflect.String {
		return p.vmBool(n)
	}
	id, isID := l.(*ast.IdentifierNode)
	if isID && p.cs.traits[id.Value] == sdk.TypeString && isConst(r) {
		v, ok := p.constValue(r)
		if !ok {
			return &pConst{false}
		}
		c, _ := v.(string)
		var pred func(string) bool
		switch op {
		case "matches":
			re, err := regexp.Compile(c)
			if err != nil {
				p.fail(r, "invalid regular expression %q: %v", c, err)
				return &pConst{false}
			}
			pred = re.MatchString
		case "contains":
			pred = func(s string) bool { return strings.Contains(s, c) }
		case "startsWith":
			pred = func(s string) bool { return strings.HasPrefix(s, c) }
		case "endsWith":
			pred = func(s string) bool { return strings.HasSuffix(s, c) }
		}
		return &pStrTable{name: id.Value, table: &codeTable{pred: pred}}
	}
	if op == "matches" && isConst(r) {
		// Report a bad pattern at load even when the VM evaluates the match.
		if v, ok := p.constValue(r); ok {
			if s, _ := v.(string); s != "" {
				if _, err := regexp.Compile(s); err != nil {
					p.fail(r, "invalid regular expression %q: %v", s, err)
					return &pConst{false}
				}
			}
		}
	}
	return p.vmBool(n)
}

// numPlan plans a number-typed node.
func (p *planner) numPlan(n ast.Node) nplan {
	if isConst(n) {
		v, ok := p.constValue(n)
		if !ok {
			return &nConst{0}
		}
		f, _ := toFloat(v)
		return &nConst{f}
	}
	k := kindOf(n)
	switch x := n.(type) {
	case *ast.IdentifierNode:
		if p.cs.traits[x.Value] == sdk.TypeNumber {
			return &nCol{name: x.Value}
		}
	case *ast.MemberNode:
		if isRFM(x) {
			return &nRFM{which: x.Property.(*ast.StringNode).Value[0]}
		}
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok {
			switch id.Value {
			case "events", "total":
				days, _ := parseWindow(x.Arguments[1].(*ast.StringNode).Value)
				return &nEvents{event: x.Arguments[0].(*ast.StringNode).Value, days: days, sum: id.Value == "total"}
			case "days_since":
				if t := p.timePlan(x.Arguments[0]); t != nil {
					return &nDaysSince{t: t}
				}
			}
		}
	case *ast.BuiltinNode:
		if x.Name == "len" && len(x.Arguments) == 1 {
			if id, ok := x.Arguments[0].(*ast.IdentifierNode); ok && p.cs.traits[id.Value] == sdk.TypeStringList {
				return &nLen{name: id.Value}
			}
		}
	case *ast.BinaryNode:
		if !isFloatKind(k) || !isNumKind(kindOf(x.Left)) || !isNumKind(kindOf(x.Right)) {
			break
		}
		switch x.Operator {
		case "+", "-", "*", "/", "**", "^":
			return &nArith{op: x.Operator, l: p.numPlan(x.Left), r: p.numPlan(x.Right)}
		case "??":
			return &nCoalesce{l: p.numPlan(x.Left), r: p.numPlan(x.Right)}
		}
	case *ast.UnaryNode:
		if isFloatKind(k) && isNumKind(kindOf(x.Node)) {
			switch x.Operator {
			case "-":
				return &nNeg{x: p.numPlan(x.Node)}
			case "+":
				return p.numPlan(x.Node)
			}
		}
	case *ast.ConditionalNode:
		if isFloatKind(k) && isNumKind(kindOf(x.Exp1)) && isNumKind(kindOf(x.Exp2)) {
			return &nTernary{c: p.boolPlan(x.Cond), a: p.numPlan(x.Exp1), b: p.numPlan(x.Exp2)}
		}
	}
	return p.vmNum(n)
}

// timePlan plans a time-typed node; nil if the closures do not support it.
func (p *planner) timePlan(n ast.Node) tplan {
	if !isTimeNode(n) {
		return nil
	}
	if isConst(n) {
		v, ok := p.constValue(n)
		if !ok {
			return &tConst{}
		}
		t, _ := v.(time.Time)
		return &tConst{day: Day(t)}
	}
	switch x := n.(type) {
	case *ast.IdentifierNode:
		if p.cs.traits[x.Value] == sdk.TypeTime {
			return &tCol{name: x.Value}
		}
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok && (id.Value == "first_time" || id.Value == "last_time") {
			return &tEvent{event: x.Arguments[0].(*ast.StringNode).Value, last: id.Value == "last_time"}
		}
	}
	return nil
}
