package message

import (
	"fmt"
	"sort"
	"strings"
	"text/template/parse"
	"unicode/utf8"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/strictyaml"
)

// checker checks the fields a parsed template refers to against the trait
// schema and rewrites direct prints of number, time and list traits to go
// through printFunc. Problems are collected with their byte offset in src.
type checker struct {
	schema map[string]sdk.TraitType
	names  []string // schema trait names, sorted
	src    string
	report bool
	probs  []problem
}

type problem struct {
	off int // byte offset in the template source; -1 when unknown
	msg string
}

func newChecker(schema map[string]sdk.TraitType, src string, report bool) *checker {
	names := make([]string, 0, len(schema))
	for n := range schema {
		names = append(names, n)
	}
	sort.Strings(names)
	return &checker{schema: schema, names: names, src: src, report: report}
}

func (c *checker) problemf(n parse.Node, format string, args ...any) {
	if c.report {
		c.probs = append(c.probs, problem{off: int(n.Position()), msg: fmt.Sprintf(format, args...)})
	}
}

// tree walks one parsed template (the file's main body or a {{define}}),
// whose dot is the customer's traits.
func (c *checker) tree(t *parse.Tree) {
	if t == nil || t.Root == nil {
		return
	}
	c.list(t, t.Root, true)
}

// list walks a list; root reports whether the dot is the customer's traits
// (false inside range and with, where it is the current item).
func (c *checker) list(t *parse.Tree, l *parse.ListNode, root bool) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		c.node(t, n, root)
	}
}

func (c *checker) node(t *parse.Tree, n parse.Node, root bool) {
	switch n := n.(type) {
	case *parse.ActionNode:
		c.pipe(n.Pipe, root)
		c.rewritePrint(t, n, root)
	case *parse.IfNode:
		c.pipe(n.Pipe, root)
		c.list(t, n.List, root)
		c.list(t, n.ElseList, root)
	case *parse.RangeNode:
		c.pipe(n.Pipe, root)
		c.list(t, n.List, false)
		c.list(t, n.ElseList, root)
	case *parse.WithNode:
		c.pipe(n.Pipe, root)
		c.list(t, n.List, false)
		c.list(t, n.ElseList, root)
	case *parse.TemplateNode:
		c.pipe(n.Pipe, root)
	case *parse.ListNode:
		c.list(t, n, root)
	}
}

func (c *checker) pipe(p *parse.PipeNode, root bool) {
	if p == nil {
		return
	}
	for _, cmd := range p.Cmds {
		for i, arg := range cmd.Args {
			c.arg(arg, root)
			if id, ok := arg.(*parse.IdentifierNode); ok && i == 0 && id.Ident == "trait" && len(cmd.Args) > 1 {
				if s, ok := cmd.Args[1].(*parse.StringNode); ok {
					c.traitName(s)
				}
			}
		}
	}
}

func (c *checker) arg(n parse.Node, root bool) {
	switch n := n.(type) {
	case *parse.FieldNode:
		c.field(n, n.Ident, root)
	case *parse.VariableNode:
		if len(n.Ident) > 1 && n.Ident[0] == "$" {
			c.field(n, n.Ident[1:], true)
		}
	case *parse.ChainNode:
		c.arg(n.Node, root)
	case *parse.PipeNode:
		c.pipe(n, root)
	}
}

// field checks .a(.b...) evaluated against the dot.
func (c *checker) field(n parse.Node, ident []string, root bool) {
	name := ident[0]
	typ, known := c.schema[name]
	if !root {
		if known {
			c.problemf(n, "inside {{range}} or {{with}} the dot is the current item, not the customer: write $.%s for the trait %s", name, name)
		} else {
			c.problemf(n, "inside {{range}} or {{with}} the dot is the current item, not the customer, and %s", c.unknown(name))
		}
		return
	}
	if !known {
		c.problemf(n, "%s", c.unknown(name))
		return
	}
	if len(ident) > 1 {
		c.problemf(n, "trait %s is a %s and has no field .%s: remove .%s", name, typ, ident[1], strings.Join(ident[1:], "."))
	}
}

func (c *checker) traitName(s *parse.StringNode) {
	if _, ok := c.schema[s.Text]; ok {
		return
	}
	msg := fmt.Sprintf("trait %q is not in the schema: %s", s.Text, c.schemaList())
	if m := strictyaml.Closest(s.Text, c.names); m != "" {
		msg += fmt.Sprintf("; did you mean %q?", m)
	}
	c.problemf(s, "%s", msg)
}

// unknown says what to change for an unknown field.
func (c *checker) unknown(name string) string {
	for _, f := range funcTable {
		if f.name == name && f.name != printFunc {
			return fmt.Sprintf("unknown field .%s: %s is a function, write {{%s}} without the dot", name, name, name)
		}
	}
	msg := fmt.Sprintf("unknown field .%s: %s", name, c.schemaList())
	if m := strictyaml.Closest(name, c.names); m != "" {
		msg += fmt.Sprintf(", did you mean %s?", m)
	}
	return msg
}

// schemaList names the schema's traits (at most 12; the rest counted).
func (c *checker) schemaList() string {
	switch {
	case len(c.names) == 0:
		return "the schema has no traits"
	case len(c.names) <= 12:
		return "the schema has " + strings.Join(c.names, ", ")
	}
	return fmt.Sprintf("the schema has %s and %d more", strings.Join(c.names[:12], ", "), len(c.names)-12)
}

// rewritePrint turns {{.orders}} for a number, time or list trait into
// {{_value .orders}}, so it prints readably. Templates are rewritten
// before html/template escapes them, so the escaper sees the call.
func (c *checker) rewritePrint(t *parse.Tree, a *parse.ActionNode, root bool) {
	p := a.Pipe
	if p == nil || len(p.Decl) > 0 || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return
	}
	var name string
	switch f := p.Cmds[0].Args[0].(type) {
	case *parse.FieldNode:
		if !root || len(f.Ident) != 1 {
			return
		}
		name = f.Ident[0]
	case *parse.VariableNode:
		if len(f.Ident) != 2 || f.Ident[0] != "$" {
			return
		}
		name = f.Ident[1]
	default:
		return
	}
	switch c.schema[name] {
	case sdk.TypeNumber, sdk.TypeTime, sdk.TypeStringList:
	default:
		return
	}
	cmd := p.Cmds[0]
	fn := parse.NewIdentifier(printFunc).SetTree(t).SetPos(cmd.Args[0].Position())
	cmd.Args = []parse.Node{fn, cmd.Args[0]}
}

// lineCol turns a byte offset in src into a 1-based line and a 1-based
// column counted in characters.
func lineCol(src string, off int) (line, col int) {
	if off < 0 || off > len(src) {
		return 0, 0
	}
	before := src[:off]
	line = 1 + strings.Count(before, "\n")
	lineStart := strings.LastIndexByte(before, '\n') + 1
	return line, 1 + utf8.RuneCountInString(before[lineStart:])
}
