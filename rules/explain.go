package rules

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr/ast"
)

// Explanation says why a customer is in a segment or not: the rule and the
// value each of its sub-expressions had for the customer.
type Explanation struct {
	Segment string
	When    string
	Pos     Pos
	In      bool
	Root    *ExplainNode
}

// ExplainNode is one sub-expression and the value it had. Literals are left
// out; Value is "missing" for a missing value.
type ExplainNode struct {
	Expr     string
	Value    string
	Children []*ExplainNode
}

// String renders the explanation as an indented tree.
func (e *Explanation) String() string {
	var b strings.Builder
	in := "not in"
	if e.In {
		in = "in"
	}
	fmt.Fprintf(&b, "segment %q: %s (%s)\n", e.Segment, in, e.Pos)
	if e.Root != nil {
		e.Root.write(&b, 1)
	}
	return b.String()
}

func (n *ExplainNode) write(b *strings.Builder, depth int) {
	fmt.Fprintf(b, "%s%s = %s\n", strings.Repeat("  ", depth), n.Expr, n.Value)
	for _, c := range n.Children {
		c.write(b, depth+1)
	}
}

// Explain evaluates every segment for one row, in dependency order (so
// in_segment reads this row's results), and reports each sub-expression's
// value. Membership comes from the compiled closures, sub-expression values
// from expr's VM; the differential tests keep the two in agreement.
func (s *Set) Explain(t Table, row uint32, now time.Time) ([]*Explanation, error) {
	if int(row) >= t.Len() {
		return nil, fmt.Errorf("row %d is not in the table (%d rows)", row, t.Len())
	}
	members := map[string]Bitmap{}
	var out []*Explanation
	for _, seg := range s.segments {
		b, err := seg.bound(t)
		if err != nil {
			return nil, err
		}
		c, err := b.newCtx(Env{Now: now, Members: members})
		if err != nil {
			return nil, err
		}
		in := []bool{false}
		if err := b.evalRows(c, b.root, []uint32{row}, in); err != nil {
			return nil, err
		}
		m := NewBitmap(int(row) + 1)
		if in[0] {
			m.Set(row)
		}
		members[seg.Name] = m
		e := &Explanation{Segment: seg.Name, When: seg.When, Pos: seg.WhenPos, In: in[0]}
		if t.Live().Has(row) {
			e.Root = explainNode(seg, c, seg.prog.root, row)
		}
		out = append(out, e)
	}
	return out, nil
}

func explainNode(seg *Segment, c *evalCtx, n ast.Node, row uint32) *ExplainNode {
	en := &ExplainNode{Expr: n.String()}
	prog, err := compileVM(seg.cs, n, seg.prog.src, structural(n))
	if err != nil {
		en.Value = "error: " + cleanMessage(err)
	} else if v, err := c.runner().run(prog, row); err != nil {
		en.Value = "error: " + cleanMessage(err)
	} else {
		en.Value = formatValue(v)
	}
	for _, ch := range explainChildren(n) {
		en.Children = append(en.Children, explainNode(seg, c, ch, row))
	}
	return en
}

// explainChildren are the sub-expressions worth showing: not literals, not
// predicate bodies (they run once per list item).
func explainChildren(n ast.Node) []ast.Node {
	var cs []ast.Node
	switch x := n.(type) {
	case *ast.CallNode:
		cs = x.Arguments
	case *ast.MemberNode:
		if isRFM(x) {
			return nil
		}
		cs = children(n)
	default:
		cs = children(n)
	}
	var out []ast.Node
	for _, c := range cs {
		if _, ok := c.(*ast.PredicateNode); ok || isConst(c) {
			continue
		}
		out = append(out, c)
	}
	return out
}

func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "missing"
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case int:
		return strconv.Itoa(x)
	case string:
		return strconv.Quote(x)
	case time.Time:
		if x.Equal(DayTime(Day(x))) {
			return x.UTC().Format("2006-01-02")
		}
		return x.UTC().Format(time.RFC3339Nano)
	case []string:
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case *rfmEnv:
		return fmt.Sprintf("{r: %g, f: %g, m: %g}", x.R, x.F, x.M)
	}
	return fmt.Sprintf("%v", v)
}
