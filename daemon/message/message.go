package message

import (
	"errors"
	"fmt"
	htemplate "html/template"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	ttemplate "text/template"
	"time"

	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/strictyaml"
)

// Part names a message part.
const (
	PartSubject = "subject"
	PartHTML    = "html"
	PartText    = "text"
)

// Data is what one message is rendered with.
type Data struct {
	CustomerID string
	// Campaign and Variant default to the names Render is given.
	Campaign string
	Variant  string
	// Traits is the dot: trait name -> string, float64, bool, time.Time or
	// []string. A trait the customer lacks is absent.
	Traits         map[string]any
	UnsubscribeURL string
	PostalAddress  string
}

// Content is a rendered message. A part the variant does not have is "".
type Content struct {
	Subject string
	Text    string
	HTML    string
}

// Set holds every campaign variant's compiled templates. It is immutable
// and safe for concurrent use.
type Set struct {
	variants map[variantKey]*variant
}

type variantKey struct{ campaign, variant string }

// variant keeps pristine, never executed templates (html/template cannot
// be cloned once executed) and a pool of renderers cloned from them.
type variant struct {
	campaign, name string
	subject        *ttemplate.Template
	html           *htemplate.Template
	text           *ttemplate.Template
	// srcs and names locate the parts' sources for error positions.
	srcs  map[string]string
	names map[string]string
	// sizeHint is a starting buffer size per part.
	sizeHint map[string]int
	// textDerived: the text part was derived from the HTML; its output is
	// trimmed (the HTML around {{end}} may leave blank lines at the ends).
	textDerived bool
	pool        sync.Pool
}

// renderer is one clone of a variant's templates whose per-message
// functions (unsubscribe_url, customer_id, ...) read cur. A renderer is
// used by one Render at a time; the pool hands them out. This is how
// per-message values reach the templates without re-parsing: the clone
// and its html/template escaping are paid once per renderer, not per
// message.
type renderer struct {
	cur     *Data
	subject *ttemplate.Template
	html    *htemplate.Template
	text    *ttemplate.Template
}

// Compile compiles every variant's subject (an inline text/template), html
// (an html/template file) and text (a text/template file) relative to
// rulesDir, with missingkey=error and the function set of the package
// documentation. A variant with html and no text gets a text part derived
// from the HTML template. Every field a template names is checked against
// schema and each template is executed once against a profile holding
// every trait, so type and escaping errors show up here. All problems are
// returned, joined, each an *Error.
func Compile(rulesDir string, campaigns []*rules.Campaign, schema map[string]sdk.TraitType) (*Set, error) {
	s := &Set{variants: map[variantKey]*variant{}}
	var errs []error
	for _, c := range campaigns {
		for i := range c.Variants {
			v, verrs := compileVariant(rulesDir, c, &c.Variants[i], schema)
			errs = append(errs, verrs...)
			if v != nil {
				s.variants[variantKey{c.Name, v.name}] = v
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// Error is a template problem found by Compile.
type Error struct {
	// Pos is the template file and the line:col in it; for a subject (an
	// inline template) it is the variant in the rules file, and Line and
	// Column are the position inside the subject.
	Pos          rules.Pos
	Campaign     string
	Variant      string
	Part         string
	Line, Column int
	Msg          string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: campaign %q: variant %q: %s", e.Pos, e.Campaign, e.Variant, e.Part)
	if e.Line > 0 {
		fmt.Fprintf(&b, " %d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

type compiler struct {
	c      *rules.Campaign
	v      *rules.Variant
	schema map[string]sdk.TraitType
	errs   []error
}

// errorAt records a problem at byte offset off of a part's source (off < 0:
// the part as a whole).
func (cc *compiler) errorAt(part, file, src string, off int, msg string) {
	e := &Error{Campaign: cc.c.Name, Variant: cc.v.Name, Part: part, Msg: msg}
	line, col := lineCol(src, off)
	if part == PartSubject {
		e.Pos = cc.v.Pos
		e.Line, e.Column = line, col
	} else {
		e.Pos = rules.Pos{File: file, Line: line, Column: col}
	}
	cc.errs = append(cc.errs, e)
}

func compileVariant(rulesDir string, c *rules.Campaign, rv *rules.Variant, schema map[string]sdk.TraitType) (*variant, []error) {
	cc := &compiler{c: c, v: rv, schema: schema}
	v := &variant{
		campaign: c.Name,
		name:     rv.Name,
		srcs:     map[string]string{},
		names:    map[string]string{},
		sizeHint: map[string]int{},
	}
	if rv.Subject != "" {
		v.subject = cc.parseText(PartSubject, PartSubject, rv.Subject)
		v.srcs[PartSubject], v.names[PartSubject] = rv.Subject, PartSubject
	}
	var htmlSrc string
	if rv.HTML != "" {
		file := filepath.Join(rulesDir, rv.HTML)
		if src, ok := cc.readFile(PartHTML, file); ok {
			htmlSrc = src
			v.html = cc.parseHTML(file, src)
			v.srcs[PartHTML], v.names[PartHTML] = src, file
		}
	}
	switch {
	case rv.Text != "":
		file := filepath.Join(rulesDir, rv.Text)
		if src, ok := cc.readFile(PartText, file); ok {
			v.text = cc.parseText(PartText, file, src)
			v.srcs[PartText], v.names[PartText] = src, file
		}
	case v.html != nil:
		// The derived part's actions are the HTML's, already checked:
		// only the rewrite of direct prints is wanted.
		src := deriveTextSource(htmlSrc)
		name := v.names[PartHTML] + " (text derived from html)"
		t, err := newText(name).Parse(src)
		if err != nil {
			cc.errorAt(PartHTML, v.names[PartHTML], htmlSrc, -1,
				fmt.Sprintf("cannot derive a text part from this HTML (%s): add text: with a text template file to the variant",
					strings.TrimPrefix(err.Error(), "template: ")))
			break
		}
		ch := newChecker(schema, src, false)
		for _, tt := range t.Templates() {
			ch.tree(tt.Tree)
		}
		v.text, v.textDerived = t, true
		v.srcs[PartText], v.names[PartText] = src, name
	}
	if len(cc.errs) > 0 {
		return nil, cc.errs
	}
	for part, src := range v.srcs {
		v.sizeHint[part] = len(src) + len(src)/4 + 64
	}
	v.pool.New = func() any {
		r, err := v.newRenderer()
		if err != nil {
			return nil
		}
		return r
	}
	cc.dryRun(v)
	if len(cc.errs) > 0 {
		return nil, cc.errs
	}
	return v, nil
}

func (cc *compiler) readFile(part, file string) (string, bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		msg := fmt.Sprintf("cannot read the template file: %v", err)
		if errors.Is(err, fs.ErrNotExist) {
			msg = fmt.Sprintf("template file not found (%s: is set at %s; the path is relative to the rules directory)", part, cc.v.Pos)
		}
		cc.errs = append(cc.errs, &Error{Pos: rules.Pos{File: file}, Campaign: cc.c.Name, Variant: cc.v.Name, Part: part, Msg: msg})
		return "", false
	}
	return string(data), true
}

func newText(name string) *ttemplate.Template {
	return ttemplate.New(name).Option("missingkey=error").Funcs(parseFuncs())
}

func newHTML(name string) *htemplate.Template {
	return htemplate.New(name).Option("missingkey=error").Funcs(parseFuncs())
}

func (cc *compiler) parseText(part, name, src string) *ttemplate.Template {
	t, err := newText(name).Parse(src)
	if err != nil {
		cc.parseError(part, name, src, err)
		return nil
	}
	ch := newChecker(cc.schema, src, true)
	for _, tt := range t.Templates() {
		ch.tree(tt.Tree)
	}
	cc.problems(part, name, src, ch.probs)
	return t
}

func (cc *compiler) parseHTML(name, src string) *htemplate.Template {
	t, err := newHTML(name).Parse(src)
	if err != nil {
		cc.parseError(PartHTML, name, src, err)
		return nil
	}
	ch := newChecker(cc.schema, src, true)
	for _, tt := range t.Templates() {
		ch.tree(tt.Tree)
	}
	cc.problems(PartHTML, name, src, ch.probs)
	return t
}

func (cc *compiler) problems(part, name, src string, probs []problem) {
	for _, p := range probs {
		cc.errorAt(part, name, src, p.off, p.msg)
	}
}

var (
	parseErrRE = regexp.MustCompile(`(?s)^template: (.*?):(\d+): (.*)$`)
	funcErrRE  = regexp.MustCompile(`^function "([^"]*)" not defined$`)
)

// parseError reports a template syntax error at its line and, since
// text/template gives only the line, at the column of the action on that
// line that does not parse on its own (else the line's first action).
func (cc *compiler) parseError(part, name, src string, err error) {
	msg := err.Error()
	line := 0
	if m := parseErrRE.FindStringSubmatch(msg); m != nil && m[1] == name {
		line, _ = strconv.Atoi(m[2])
		msg = m[3]
	}
	if msg == "unexpected EOF" {
		msg += ": an {{if}}, {{range}}, {{with}}, {{block}} or {{define}} is missing its {{end}}"
	}
	if m := funcErrRE.FindStringSubmatch(msg); m != nil {
		names := funcNames()
		if s := strictyaml.Closest(m[1], names); s != "" {
			msg += fmt.Sprintf(": did you mean %s?", s)
		} else {
			msg += ": the functions are " + strings.Join(names, ", ")
		}
	}
	off := -1
	if line > 0 {
		off = actionOffset(src, line)
	}
	cc.errorAt(part, name, src, off, msg)
}

// controlWords start actions that do not parse alone.
var controlWords = []string{"if", "else", "end", "range", "with", "define", "block", "template", "break", "continue"}

// actionOffset finds where the syntax error on line (1-based) is: the
// first action starting on that line that fails to parse alone; else the
// first action on it; else the line's start.
func actionOffset(src string, line int) int {
	lineStart := 0
	for i := 1; i < line; i++ {
		j := strings.IndexByte(src[lineStart:], '\n')
		if j < 0 {
			return lineStart
		}
		lineStart += j + 1
	}
	lineEnd := len(src)
	if j := strings.IndexByte(src[lineStart:], '\n'); j >= 0 {
		lineEnd = lineStart + j
	}
	first := -1
	pos := lineStart
	for pos < lineEnd {
		start, end, ok := nextAction(src[pos:])
		if !ok {
			// An unterminated action: where it opens is the place.
			if i := strings.Index(src[pos:lineEnd], "{{"); i >= 0 {
				if first < 0 {
					return pos + i
				}
			}
			break
		}
		start, end = start+pos, end+pos
		if start >= lineEnd {
			break
		}
		if first < 0 {
			first = start
		}
		body := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(src[start:end], "{{"), "}}"))
		body = strings.TrimSpace(strings.TrimPrefix(body, "-"))
		word, _, _ := strings.Cut(body, " ")
		control := false
		for _, w := range controlWords {
			control = control || word == w
		}
		if !control && !strings.HasPrefix(body, "/*") {
			if _, err := newText("action").Parse(src[start:end]); err != nil {
				return start
			}
		}
		pos = end
	}
	if first >= 0 {
		return first
	}
	return lineStart
}

// sampleTraits holds every schema trait with a value of its type.
func sampleTraits(schema map[string]sdk.TraitType) map[string]any {
	m := make(map[string]any, len(schema))
	for name, typ := range schema {
		switch typ {
		case sdk.TypeString:
			m[name] = "x"
		case sdk.TypeNumber:
			m[name] = 1.0
		case sdk.TypeBool:
			m[name] = true
		case sdk.TypeTime:
			m[name] = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		case sdk.TypeStringList:
			m[name] = []string{"a", "b", "c"}
		default:
			m[name] = "x"
		}
	}
	return m
}

// dryRun renders the variant once with every trait present: html/template
// escapes (and reports context errors) and type errors such as
// {{date "2006" .first_name}} show at load.
func (cc *compiler) dryRun(v *variant) {
	d := Data{
		CustomerID: "check", Campaign: v.campaign, Variant: v.name,
		Traits:         sampleTraits(cc.schema),
		UnsubscribeURL: "https://example.com/unsubscribe?t=check",
		PostalAddress:  "1 Example Street, Example City",
	}
	r, err := v.newRenderer()
	if err != nil {
		cc.errs = append(cc.errs, &Error{Pos: cc.v.Pos, Campaign: cc.c.Name, Variant: cc.v.Name, Part: "templates", Msg: err.Error()})
		return
	}
	htmlFailed := false
	for _, part := range []string{PartSubject, PartHTML, PartText} {
		if part == PartText && v.textDerived && htmlFailed {
			continue // the same actions as the HTML, already reported
		}
		_, err := r.part(part, &d, 0)
		if err == nil {
			continue
		}
		htmlFailed = part == PartHTML
		var re *RenderError
		if !errors.As(v.renderError(part, "", err), &re) {
			cc.errs = append(cc.errs, &Error{Pos: cc.v.Pos, Campaign: cc.c.Name, Variant: cc.v.Name, Part: part, Msg: err.Error()})
			continue
		}
		msg := re.Msg
		if re.Trait != "" {
			msg = "missing trait " + re.Trait
		}
		if !re.escape {
			msg += " (rendering with every trait present)"
		}
		e := &Error{Campaign: cc.c.Name, Variant: cc.v.Name, Part: part, Msg: msg}
		if part == PartSubject {
			e.Pos, e.Line, e.Column = cc.v.Pos, re.Line, re.Column
		} else {
			e.Pos = rules.Pos{File: re.Template, Line: re.Line, Column: re.Column}
		}
		cc.errs = append(cc.errs, e)
	}
	v.pool.Put(r)
}

func (v *variant) newRenderer() (*renderer, error) {
	r := &renderer{}
	fm := r.funcMap()
	if v.subject != nil {
		t, err := v.subject.Clone()
		if err != nil {
			return nil, fmt.Errorf("campaign %q: variant %q: subject: %w", v.campaign, v.name, err)
		}
		r.subject = t.Funcs(fm)
	}
	if v.html != nil {
		t, err := v.html.Clone()
		if err != nil {
			return nil, fmt.Errorf("campaign %q: variant %q: html: %w", v.campaign, v.name, err)
		}
		r.html = t.Funcs(fm)
	}
	if v.text != nil {
		t, err := v.text.Clone()
		if err != nil {
			return nil, fmt.Errorf("campaign %q: variant %q: text: %w", v.campaign, v.name, err)
		}
		r.text = t.Funcs(fm)
	}
	return r, nil
}

// RenderError is a message that could not be rendered: typically the
// customer lacks a trait the template prints unguarded. It names the
// campaign, variant, template and trait, never a trait's value.
type RenderError struct {
	Campaign   string
	Variant    string
	CustomerID string
	Part       string
	// Template is the template file, or "subject".
	Template     string
	Line, Column int
	// Trait is the trait the customer lacks, when that is the failure.
	Trait string
	Msg   string
	// escape: html/template could not escape the template (not a data
	// problem; Compile reports it).
	escape bool
}

func (e *RenderError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "campaign %q: variant %q: ", e.Campaign, e.Variant)
	if e.Template != "" && e.Template != e.Part {
		fmt.Fprintf(&b, "%s %s", e.Part, e.Template)
	} else {
		b.WriteString(e.Part)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	if e.CustomerID != "" {
		fmt.Fprintf(&b, ": customer %q", e.CustomerID)
	}
	if e.Trait != "" {
		fmt.Fprintf(&b, ": missing trait %s (the customer has no value; write {{trait %q \"...\"}} to give a fallback)", e.Trait, e.Trait)
	} else {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	return b.String()
}

// Render renders one message of a campaign's variant. It never re-parses a
// template; it is safe for concurrent use. An error is a *RenderError.
func (s *Set) Render(campaign, variant string, d Data) (Content, error) {
	v := s.variants[variantKey{campaign, variant}]
	if v == nil {
		return Content{}, fmt.Errorf("campaign %q: variant %q: no compiled templates (is it in the rules Compile was given?)", campaign, variant)
	}
	if d.Campaign == "" {
		d.Campaign = campaign
	}
	if d.Variant == "" {
		d.Variant = variant
	}
	r, _ := v.pool.Get().(*renderer)
	if r == nil {
		var err error
		if r, err = v.newRenderer(); err != nil {
			return Content{}, err
		}
	}
	defer func() {
		r.cur = nil
		v.pool.Put(r)
	}()
	var c Content
	var err error
	if c.Subject, err = r.part(PartSubject, &d, v.sizeHint[PartSubject]); err != nil {
		return Content{}, v.renderError(PartSubject, d.CustomerID, err)
	}
	c.Subject = oneLine(c.Subject)
	if c.HTML, err = r.part(PartHTML, &d, v.sizeHint[PartHTML]); err != nil {
		return Content{}, v.renderError(PartHTML, d.CustomerID, err)
	}
	if c.Text, err = r.part(PartText, &d, v.sizeHint[PartText]); err != nil {
		return Content{}, v.renderError(PartText, d.CustomerID, err)
	}
	if v.textDerived {
		c.Text = strings.TrimSpace(c.Text)
	}
	return c, nil
}

type executor interface {
	Execute(w io.Writer, data any) error
}

// part executes one part; "" when the variant has no such part. Errors
// are *RenderError without campaign, variant or customer (the caller adds
// them).
func (r *renderer) part(part string, d *Data, hint int) (string, error) {
	var t executor
	switch part {
	case PartSubject:
		if r.subject != nil {
			t = r.subject
		}
	case PartHTML:
		if r.html != nil {
			t = r.html
		}
	case PartText:
		if r.text != nil {
			t = r.text
		}
	}
	if t == nil {
		return "", nil
	}
	r.cur = d
	var b strings.Builder
	b.Grow(hint)
	if err := t.Execute(&b, d.Traits); err != nil {
		return "", execError(part, err)
	}
	return b.String(), nil
}

var (
	execErrRE    = regexp.MustCompile(`(?s)^template: (.*?):(\d+):(\d+): executing "[^"]*" at <(.*?)>: (.*)$`)
	missingKeyRE = regexp.MustCompile(`map has no entry for key "([^"]*)"`)
)

// execError turns a text/template execution error into a *RenderError
// with the template's position; the Go messages name keys and types, not
// values.
func execError(part string, err error) *RenderError {
	e := &RenderError{Part: part, Msg: err.Error()}
	var he *htemplate.Error
	if errors.As(err, &he) {
		e.Template, e.Line, e.Msg, e.escape = he.Name, he.Line, he.Description, true
		if he.ErrorCode == htemplate.ErrEndContext {
			e.Msg = "the template ends inside a tag, a quoted attribute, a comment or a script: close it (look for a missing quote or >)"
		}
		return e
	}
	m := execErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		return e
	}
	e.Template = m[1]
	e.Line, _ = strconv.Atoi(m[2])
	e.Column, _ = strconv.Atoi(m[3]) // a byte offset in the line; fixed by the variant
	e.Column++
	e.Msg = fmt.Sprintf("at <%s>: %s", m[4], m[5])
	if k := missingKeyRE.FindStringSubmatch(m[5]); k != nil {
		e.Trait = k[1]
	}
	return e
}

// renderError completes a part's error with the variant and customer and
// turns the byte column into a character column.
func (v *variant) renderError(part, customer string, err error) error {
	var re *RenderError
	if !errors.As(err, &re) {
		return fmt.Errorf("campaign %q: variant %q: %s: customer %q: %w", v.campaign, v.name, part, customer, err)
	}
	re.Campaign, re.Variant, re.CustomerID = v.campaign, v.name, customer
	if re.Template == "" {
		re.Template = v.names[part]
	}
	if re.Line > 0 && re.Column > 0 {
		re.Column = charColumn(v.srcs[part], re.Line, re.Column-1)
	}
	return re
}

// charColumn turns a 0-based byte offset within a line into a 1-based
// character column.
func charColumn(src string, line, byteOff int) int {
	lines := strings.SplitN(src, "\n", line+1)
	if line-1 >= len(lines) {
		return byteOff + 1
	}
	l := lines[line-1]
	if byteOff > len(l) {
		return byteOff + 1
	}
	return 1 + len([]rune(l[:byteOff]))
}

// oneLine keeps a subject on one header line: a trait value with a line
// break must not add a header.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(strings.NewReplacer("\r", " ", "\n", " ").Replace(s)), " ")
}

// Profile is a customer to render every variant for, such as a fixture
// customer.
type Profile struct {
	ID string
	// Pos is where the profile is defined (for a fixture); shown in
	// failures when set.
	Pos    rules.Pos
	Traits map[string]any
}

// ProfileError is a variant that failed to render for a profile.
type ProfileError struct {
	Pos rules.Pos
	Err *RenderError
}

func (e *ProfileError) Error() string {
	if e.Pos.File == "" {
		return e.Err.Error()
	}
	return e.Pos.String() + ": " + e.Err.Error()
}

func (e *ProfileError) Unwrap() error { return e.Err }

// CheckProfiles renders every variant for each profile, as `cohort check`
// does with the fixture customers, and returns every failure, joined, each
// a *ProfileError (nil when all render). base supplies the per-message
// values other than the customer and traits (UnsubscribeURL,
// PostalAddress); empty ones get example values.
func (s *Set) CheckProfiles(profiles []Profile, base Data) error {
	if base.UnsubscribeURL == "" {
		base.UnsubscribeURL = "https://example.com/unsubscribe?t=check"
	}
	if base.PostalAddress == "" {
		base.PostalAddress = "1 Example Street, Example City"
	}
	keys := make([]variantKey, 0, len(s.variants))
	for k := range s.variants {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].campaign != keys[j].campaign {
			return keys[i].campaign < keys[j].campaign
		}
		return keys[i].variant < keys[j].variant
	})
	var errs []error
	for _, p := range profiles {
		for _, k := range keys {
			d := base
			d.CustomerID, d.Traits, d.Campaign, d.Variant = p.ID, p.Traits, k.campaign, k.variant
			if _, err := s.Render(k.campaign, k.variant, d); err != nil {
				var re *RenderError
				if !errors.As(err, &re) {
					errs = append(errs, err)
					continue
				}
				errs = append(errs, &ProfileError{Pos: p.Pos, Err: re})
			}
		}
	}
	return errors.Join(errs...)
}

// Traits converts typed trait values (as sources and fixtures hold them)
// into template data; null values are left out, so they are missing.
func Traits(values map[string]sdk.Value) map[string]any {
	m := make(map[string]any, len(values))
	for name, v := range values {
		switch v.Type {
		case sdk.TypeString:
			m[name] = v.Str
		case sdk.TypeNumber:
			m[name] = v.Num
		case sdk.TypeBool:
			m[name] = v.Bool
		case sdk.TypeTime:
			m[name] = v.Time
		case sdk.TypeStringList:
			m[name] = v.List
		}
	}
	return m
}
