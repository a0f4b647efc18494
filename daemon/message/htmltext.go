package message

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// HTMLToText turns an HTML body into a plain-text part: paragraphs and
// headings become blank-line separated blocks, <br>, <div>, <tr> and list
// items start new lines (items with "- "), links read "text (url)" (just
// the url when the text is the url), images their alt text, entities are
// decoded, whitespace collapses as a browser would (except in <pre>), and
// <head>, <script>, <style>, <template> and comments are dropped.
func HTMLToText(s string) string {
	var w textWriter
	z := html.NewTokenizer(strings.NewReader(s))
	var (
		skip    int // depth inside elements whose content is dropped
		pre     int
		lists   int // depth of ul/ol
		links   []link
		skipTag []atom.Atom
	)
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return w.String()
		case html.TextToken:
			if skip > 0 {
				continue
			}
			text := string(z.Text())
			if len(links) > 0 {
				links[len(links)-1].text.WriteString(text)
			}
			w.text(text, pre > 0)
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			a := atom.Lookup(name)
			if skip > 0 {
				if tt == html.StartTagToken && dropped(a) {
					skipTag = append(skipTag, a)
					skip++
				}
				continue
			}
			switch a {
			case atom.Head, atom.Script, atom.Style, atom.Template, atom.Noscript, atom.Title:
				if tt == html.StartTagToken {
					skipTag = append(skipTag, a)
					skip++
				}
			case atom.Br:
				w.lineBreak()
			case atom.Hr:
				w.block(2)
			case atom.Pre:
				w.block(2)
				if tt == html.StartTagToken {
					pre++
				}
			case atom.Li:
				w.block(1)
				w.raw(strings.Repeat("  ", max(lists-1, 0)) + "- ")
			case atom.Ul, atom.Ol:
				w.block(listBreak(lists))
				if tt == html.StartTagToken {
					lists++
				}
			case atom.Td, atom.Th:
				w.cell()
			case atom.Img:
				if alt := attr(z, hasAttr, "alt"); alt != "" {
					w.text(alt, false)
					if len(links) > 0 {
						links[len(links)-1].text.WriteString(alt)
					}
				}
			case atom.A:
				if tt == html.StartTagToken {
					links = append(links, link{href: attr(z, hasAttr, "href")})
				}
			default:
				if n := blockBreak(a); n > 0 {
					w.block(n)
				}
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			a := atom.Lookup(name)
			if skip > 0 {
				if a == skipTag[len(skipTag)-1] {
					skipTag = skipTag[:len(skipTag)-1]
					skip--
				}
				continue
			}
			switch a {
			case atom.A:
				if len(links) > 0 {
					l := links[len(links)-1]
					links = links[:len(links)-1]
					w.link(strings.TrimSpace(collapse(l.text.String())), strings.TrimSpace(l.href))
				}
			case atom.Pre:
				if pre > 0 {
					pre--
				}
				w.block(2)
			case atom.Li:
				w.block(1)
			case atom.Ul, atom.Ol:
				if lists > 0 {
					lists--
				}
				w.block(listBreak(lists))
			default:
				if n := blockBreak(a); n > 0 {
					w.block(n)
				}
			}
		}
	}
}

type link struct {
	href string
	text strings.Builder
}

func dropped(a atom.Atom) bool {
	switch a {
	case atom.Head, atom.Script, atom.Style, atom.Template, atom.Noscript, atom.Title:
		return true
	}
	return false
}

// listBreak is the break around a list: a paragraph's, or a line's for a
// list inside a list.
func listBreak(depth int) int {
	if depth > 0 {
		return 1
	}
	return 2
}

// blockBreak is how many line breaks an element's start and end make.
func blockBreak(a atom.Atom) int {
	switch a {
	case atom.P, atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6, atom.Table, atom.Blockquote, atom.Dl:
		return 2
	case atom.Div, atom.Tr, atom.Section, atom.Article, atom.Header, atom.Footer, atom.Main,
		atom.Nav, atom.Aside, atom.Figure, atom.Figcaption, atom.Address, atom.Dt, atom.Dd,
		atom.Center, atom.Tbody, atom.Thead, atom.Tfoot, atom.Caption, atom.Body, atom.Html:
		return 1
	}
	return 0
}

func attr(z *html.Tokenizer, more bool, name string) string {
	for more {
		var k, v []byte
		k, v, more = z.TagAttr()
		if string(k) == name {
			return string(v)
		}
	}
	return ""
}

// collapse turns runs of white space into one space.
func collapse(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	if space && b.Len() > 0 {
		b.WriteByte(' ')
	}
	return b.String()
}

// textWriter assembles the text part. Line breaks are wanted, not
// written, until text follows, so leading, trailing and repeated breaks
// collapse; spaces likewise, so no line ends in one. Control placeholders
// (an {{if}}, {{range}} or {{end}} of a template being derived) are
// written where they fall but are not text: a break wanted before them is
// written first, and after them the writer is still at the line start, so
// a {{range}} body reads "- item\n" rather than gaining blank lines.
type textWriter struct {
	b       strings.Builder
	want    int  // line breaks wanted before the next text
	nl      int  // newlines at the end of b, not counting control placeholders
	space   bool // a space wanted before the next word
	started bool // text was written
}

func (w *textWriter) flush() {
	if !w.started {
		w.want, w.space = 0, false
		return
	}
	if w.want > 0 {
		for ; w.nl < w.want; w.nl++ {
			w.b.WriteByte('\n')
		}
		w.want, w.space = 0, false
		return
	}
	if w.space && w.nl == 0 {
		w.b.WriteByte(' ')
	}
	w.space = false
}

func (w *textWriter) atLineStart() bool {
	return !w.started || w.want > 0 || w.nl > 0
}

// text writes s, splitting out control placeholders.
func (w *textWriter) text(s string, pre bool) {
	for {
		i := strings.Index(s, controlOpen)
		if i < 0 {
			w.plain(s, pre)
			return
		}
		j := strings.Index(s[i:], placeholderClose)
		if j < 0 {
			w.plain(s, pre)
			return
		}
		w.plain(s[:i], pre)
		w.flush()
		w.b.WriteString(s[i : i+j+len(placeholderClose)])
		s = s[i+j+len(placeholderClose):]
	}
}

func (w *textWriter) plain(s string, pre bool) {
	if pre {
		if s == "" {
			return
		}
		w.flush()
		w.b.WriteString(s)
		w.started = true
		if t := strings.TrimRight(s, "\n"); t == "" {
			w.nl += len(s)
		} else {
			w.nl = len(s) - len(t)
		}
		return
	}
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		if unicode.IsSpace(r) {
			if !w.atLineStart() {
				w.space = true
			}
			s = s[size:]
			continue
		}
		end := strings.IndexFunc(s, unicode.IsSpace)
		if end < 0 {
			end = len(s)
		}
		w.word(s[:end])
		s = s[end:]
	}
}

func (w *textWriter) word(s string) {
	w.flush()
	w.b.WriteString(s)
	w.started = true
	w.nl = 0
}

// raw writes s after any wanted breaks, as is.
func (w *textWriter) raw(s string) {
	w.started = true
	w.flush()
	w.b.WriteString(s)
	w.nl = 0
}

func (w *textWriter) block(n int) {
	if w.started && n > w.want {
		w.want = n
	}
	w.space = false
}

func (w *textWriter) lineBreak() {
	if !w.started {
		return
	}
	w.flush()
	w.b.WriteByte('\n')
	w.nl++
	w.space = false
}

func (w *textWriter) cell() {
	if !w.atLineStart() {
		w.space = true
	}
}

func (w *textWriter) link(text, href string) {
	if href == "" || strings.HasPrefix(href, "#") || strings.HasPrefix(strings.ToLower(href), "javascript:") {
		return
	}
	shown := strings.TrimPrefix(href, "mailto:")
	switch text {
	case href, shown:
		return
	case "":
		w.text(shown, false)
		return
	}
	w.space = true
	w.text("("+shown+")", false)
}

func (w *textWriter) String() string {
	lines := strings.Split(w.b.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// deriveTextSource turns an HTML template's source into a text template's
// source: template actions are kept as they are (set aside while the HTML
// is converted, so the converter never sees them), and a literal "{{" the
// conversion produces (from an entity) is quoted.
func deriveTextSource(src string) string {
	var actions []string
	var protected strings.Builder
	rest := src
	for {
		start, end, ok := nextAction(rest)
		if !ok {
			protected.WriteString(rest)
			break
		}
		protected.WriteString(rest[:start])
		open := placeholderOpen
		if isControl(rest[start:end]) {
			open = controlOpen
		}
		protected.WriteString(open + strconv.Itoa(len(actions)) + placeholderClose)
		actions = append(actions, rest[start:end])
		rest = rest[end:]
	}
	text := HTMLToText(protected.String())
	text = strings.ReplaceAll(text, "{{", `{{"{{"}}`)
	var out strings.Builder
	for {
		i := strings.IndexAny(text, placeholderOpen+controlOpen)
		if i < 0 {
			out.WriteString(text)
			break
		}
		const openLen = len(placeholderOpen) // == len(controlOpen)
		j := strings.Index(text[i:], placeholderClose)
		n, err := strconv.Atoi(text[i+openLen : i+max(j, openLen)])
		if j < 0 || err != nil || n >= len(actions) {
			out.WriteString(text[:i+openLen])
			text = text[i+openLen:]
			continue
		}
		out.WriteString(text[:i])
		out.WriteString(actions[n])
		text = text[i+j+len(placeholderClose):]
	}
	return out.String()
}

// isControl reports whether an action writes nothing itself: if, else,
// end, range, with, define, block, break, continue, a comment or a
// variable declaration.
func isControl(action string) bool {
	body := strings.TrimPrefix(action, "{{")
	body = strings.TrimSpace(strings.TrimPrefix(body, "-"))
	if strings.HasPrefix(body, "/*") {
		return true
	}
	word, _, _ := strings.Cut(body, " ")
	word = strings.TrimSuffix(strings.TrimSuffix(word, "}}"), "-")
	for _, w := range controlWords {
		if word == w && w != "template" {
			return true
		}
	}
	if strings.HasPrefix(body, "$") {
		decl, _, _ := strings.Cut(body, "|")
		return strings.Contains(decl, ":=") || strings.Contains(decl, " = ")
	}
	return false
}

// Placeholders use private-use characters: not white space, not markup,
// untouched by the HTML tokenizer and the whitespace collapsing.
const (
	placeholderOpen  = "\uE000" // an action that writes
	controlOpen      = "\uE002" // an action that writes nothing ({{if}}, {{end}}, ...)
	placeholderClose = "\uE001"
)

// nextAction finds the next {{...}} action in s, skipping quoted strings,
// raw strings, character constants and comments inside it.
func nextAction(s string) (start, end int, ok bool) {
	start = strings.Index(s, "{{")
	if start < 0 {
		return 0, 0, false
	}
	i := start + 2
	if strings.HasPrefix(s[i:], "/*") || strings.HasPrefix(s[i:], "- /*") {
		c := strings.Index(s[i:], "*/")
		if c < 0 {
			return 0, 0, false
		}
		i += c + 2
	}
	for i < len(s) {
		switch s[i] {
		case '"', '\'':
			q := s[i]
			i++
			for i < len(s) && s[i] != q && s[i] != '\n' {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			i++
		case '`':
			c := strings.IndexByte(s[i+1:], '`')
			if c < 0 {
				return 0, 0, false
			}
			i += c + 2
		case '}':
			if strings.HasPrefix(s[i:], "}}") {
				return start, i + 2, true
			}
			i++
		default:
			i++
		}
	}
	return 0, 0, false
}
