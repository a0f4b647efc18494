package message

import (
	htemplate "html/template"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/rules"
)

// benchHTML is a typical ~2 KB campaign email: layout, a few traits, a
// list, links and the footer with the unsubscribe link and postal address.
const benchHTML = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{campaign}}</title>
<style>body{font-family:sans-serif;color:#222}a{color:#0b57d0}.foot{font-size:12px;color:#666}</style>
</head>
<body>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0">
<tr><td style="padding:24px">
<h1>We miss you, {{trait "first_name" "friend"}}!</h1>
<p>It has been a while since your last visit. Since {{date "January 2006" .signed_up_at}} you have placed
{{.orders}} orders with us, and we have been busy: new arrivals every week, faster delivery and a
loyalty programme that rewards every purchase.</p>
<p>Here is <strong>20% off</strong> your next order, valid for seven days. Your lifetime savings so far:
{{number 2 .ltv}} EUR.</p>
{{if .vip}}<p>As a VIP member you also get free express shipping on everything.</p>{{end}}
<p>Picked for you, based on what you like:</p>
<ul>{{range .interests}}
<li><a href="https://shop.example.com/c/{{.}}">{{title .}}</a></li>{{end}}
</ul>
<p style="text-align:center"><a href="https://shop.example.com/?c={{campaign}}&v={{variant}}&u={{customer_id}}"
style="display:inline-block;padding:12px 24px;background:#0b57d0;color:#fff;text-decoration:none;border-radius:4px">Shop now</a></p>
<p>New this season: hand-picked loose-leaf teas from small farms, linen tea towels, a pocket guide to
brewing and our best-selling stoneware cups, made to order in Portugal and shipped in recycled packaging.
Everything arrives within three working days, and returns are free for thirty days, no questions asked.</p>
<p>Questions? Reply to this email or visit our <a href="https://shop.example.com/help">help centre</a>; we answer
within one working day, in English, French and German.</p>
</td></tr>
<tr><td class="foot" style="padding:24px">
<p>You receive this email because you have an account with Example Shop.
<a href="{{unsubscribe_url}}">Unsubscribe</a> with one click at any time.</p>
<p>{{postal_address}}</p>
</td></tr>
</table>
</body>
</html>
`

func benchSet(b *testing.B, withText bool) *Set {
	b.Helper()
	dir := b.TempDir()
	require.NoError(b, os.WriteFile(filepath.Join(dir, "a.html"), []byte(benchHTML), 0o644))
	v := rules.Variant{Name: "a", Weight: 100, Pos: rules.Pos{File: "c.yaml", Line: 1, Column: 1},
		Subject: `We miss you, {{trait "first_name" "friend"}}: 20% off`, HTML: "a.html"}
	s, err := Compile(dir, []*rules.Campaign{{Name: "winback", Variants: []rules.Variant{v}}}, testSchema())
	require.NoError(b, err)
	if !withText {
		// Drop the derived text part to time HTML and subject alone.
		v := s.variants[variantKey{"winback", "a"}]
		v.text, v.textDerived = nil, false
		// A fresh pool: the one Compile filled holds renderers with text.
		v.pool = sync.Pool{New: func() any {
			r, _ := v.newRenderer()
			return r
		}}
	}
	return s
}

func benchData() Data {
	return Data{
		CustomerID:     "cust-000123",
		UnsubscribeURL: "https://mail.example.com/unsubscribe?t=AQCAgICAAQpjdXN0LTAwMDEyMwVlbWFpbAd3aW5iYWNrq83v",
		PostalAddress:  "Example Shop Ltd, 1 Example Street, 12345 Springfield",
		Traits: map[string]any{
			"first_name":   "Zoë",
			"orders":       12.0,
			"ltv":          431.5,
			"vip":          true,
			"signed_up_at": time.Date(2023, 5, 4, 0, 0, 0, 0, time.UTC),
			"interests":    []string{"tea", "books", "garden"},
		},
	}
}

// BenchmarkRender times one message of a ~2 KB HTML template. The
// baseline is html/template executing the same template with the same
// data and constant functions (no per-message binding): the floor for
// rendering this template with Go's escaping.
func BenchmarkRender(b *testing.B) {
	require.Greater(b, len(benchHTML), 1900)
	require.Less(b, len(benchHTML), 2300)
	d := benchData()

	b.Run("baseline_html_template", func(b *testing.B) {
		r := &renderer{cur: &d}
		t := htemplate.Must(htemplate.New("a").Option("missingkey=error").Funcs(r.funcMap()).Parse(benchHTML))
		require.NoError(b, t.Execute(io.Discard, d.Traits))
		b.ReportAllocs()
		for b.Loop() {
			var sb strings.Builder
			if err := t.Execute(&sb, d.Traits); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("subject+html", func(b *testing.B) {
		s := benchSet(b, false)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Render("winback", "a", d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("subject+html+derived_text", func(b *testing.B) {
		s := benchSet(b, true)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Render("winback", "a", d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("subject+html+derived_text/parallel", func(b *testing.B) {
		s := benchSet(b, true)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Render("winback", "a", d); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// TestBenchTemplateRenders keeps the benchmark's template honest: it
// compiles, renders what it should and derives a sensible text part.
func TestBenchTemplateRenders(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.html"), []byte(benchHTML), 0o644))
	s, err := Compile(dir, []*rules.Campaign{{Name: "winback", Variants: []rules.Variant{
		{Name: "a", Weight: 100, Subject: "x", HTML: "a.html"}}}}, testSchema())
	require.NoError(t, err)
	c, err := s.Render("winback", "a", benchData())
	require.NoError(t, err)
	require.Contains(t, c.HTML, `<a href="https://mail.example.com/unsubscribe?t=AQCAgICAAQpjdXN0LTAwMDEyMwVlbWFpbAd3aW5iYWNrq83v">Unsubscribe</a>`)
	require.Contains(t, c.HTML, "since your last visit. Since May 2023 you have placed\n12 orders")
	require.Contains(t, c.HTML, `<a href="https://shop.example.com/c/books">Books</a>`)
	require.Contains(t, c.Text, "We miss you, Zoë!\n\nIt has been a while")
	require.Contains(t, c.Text, "- Tea (https://shop.example.com/c/tea)\n- Books (https://shop.example.com/c/books)\n- Garden (https://shop.example.com/c/garden)")
	require.Contains(t, c.Text, "Unsubscribe (https://mail.example.com/unsubscribe?t=AQCAgICAAQpjdXN0LTAwMDEyMwVlbWFpbAd3aW5iYWNrq83v) with one click")
	require.NotContains(t, c.Text, "font-family", "the style is dropped")
	require.NotContains(t, c.Text, "{{")
}
