package message

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHTMLToText(t *testing.T) {
	cases := []struct {
		name, html, want string
	}{
		{"empty", "", ""},
		{"plain text", "hello", "hello"},
		{"paragraphs", "<p>One</p><p>Two</p>\n\n\n<p>Three</p>", "One\n\nTwo\n\nThree"},
		{"line breaks", "a<br>b<br/>c<br><br>d", "a\nb\nc\n\nd"},
		{"whitespace collapses", "<p>  lots \n\t of   space  </p>", "lots of space"},
		{"headings", "<h1>Title</h1>Body text", "Title\n\nBody text"},
		{"divs", "<div>a</div><div>b</div>", "a\nb"},
		{"link", `<p>Read <a href="https://example.com/x">the post</a>.</p>`, "Read the post (https://example.com/x)."},
		{"link text is the url", `<a href="https://example.com">https://example.com</a>`, "https://example.com"},
		{"link without text", `<a href="https://example.com/u"></a>`, "https://example.com/u"},
		{"image link", `<a href="https://example.com/s"><img src="x.png" alt="Shop"></a>`, "Shop (https://example.com/s)"},
		{"mailto", `<a href="mailto:help@example.com">help@example.com</a> or <a href="mailto:help@example.com">write</a>`,
			"help@example.com or write (help@example.com)"},
		{"anchor and javascript links show no url", `<a href="#top">Top</a> <a href="javascript:void(0)">x</a>`, "Top x"},
		{"entities decoded", "<p>Fish &amp; chips &lt;3 &eacute;t&eacute; &#8364;5&nbsp;off &quot;now&quot;</p>",
			"Fish & chips <3 été €5 off \"now\""},
		{"scripts styles head dropped", `<html><head><title>T</title><style>p{color:red}</style></head>` +
			`<body><script>var a = "<p>x</p>";</script><p>Shown</p><noscript>n</noscript></body></html>`, "Shown"},
		{"comments dropped", "a<!-- hidden <p>x</p> -->b", "ab"},
		{"lists", "<p>Picks:</p><ul><li>Tea</li><li>Coffee\n</li></ul><p>End</p>", "Picks:\n\n- Tea\n- Coffee\n\nEnd"},
		{"nested list", "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>", "- a\n  - b\n- c"},
		{"table", "<table><tr><th>Item</th><th>Price</th></tr><tr><td>Tea</td><td>€3</td></tr></table>",
			"Item Price\nTea €3"},
		{"pre keeps spacing", "<p>Code:</p><pre>a  b\n  c</pre><p>after</p>", "Code:\n\na  b\n  c\n\nafter"},
		{"unicode", "<p>Zoë 日本 🎉</p>", "Zoë 日本 🎉"},
		{"hr", "a<hr>b", "a\n\nb"},
		{"unclosed tags", "<p>a<p>b", "a\n\nb"},
		{"inline elements", "<p>a <b>bold</b> and <i>it</i>alic</p>", "a bold and italic"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, HTMLToText(tc.html)); d != "" {
				t.Errorf("HTMLToText(%q) (-want +got):\n%s", tc.html, d)
			}
		})
	}
}

func TestDeriveTextSource(t *testing.T) {
	cases := []struct {
		name, html, want string
	}{
		{"actions kept", `<p>Hi {{.first_name}},</p><p>{{trait "x" "<b>a</b>"}}</p>`,
			`Hi {{.first_name}},` + "\n\n" + `{{trait "x" "<b>a</b>"}}`},
		{"link url action", `<a href="{{unsubscribe_url}}">Unsubscribe</a>`, `Unsubscribe ({{unsubscribe_url}})`},
		{"range over items", "<ul>\n{{range .interests}}\n  <li>{{.}}</li>\n{{end}}\n</ul><p>after</p>",
			"{{range .interests}}- {{.}}\n{{end}}\nafter"},
		{"if around a paragraph", "<p>a</p>{{if .vip}}<p>VIP</p>{{end}}<p>b</p>",
			"a\n\n{{if .vip}}VIP\n\n{{end}}b"},
		{"comment action", "<p>{{/* note }} */}}x</p>", "{{/* note }} */}}x"},
		{"an entity making {{ is quoted", "<p>&#123;&#123;not an action}}</p>", `{{"{{"}}not an action}}`},
		{"actions in dropped attributes vanish", `<p class="{{.first_name}}">x</p>`, "x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, deriveTextSource(tc.html)); d != "" {
				t.Errorf("deriveTextSource(%q) (-want +got):\n%s", tc.html, d)
			}
		})
	}
}

func TestIsControl(t *testing.T) {
	for action, want := range map[string]bool{
		"{{if .x}}": true, "{{- else -}}": true, "{{end}}": true, "{{range $i, $v := .l}}": true,
		"{{with .x}}": true, "{{/* c */}}": true, "{{$x := .a}}": true, "{{break}}": true,
		"{{.x}}": false, "{{template \"t\" .}}": false, "{{$x}}": false, "{{trait \"if\" \"\"}}": false,
	} {
		if got := isControl(action); got != want {
			t.Errorf("isControl(%q) = %v, want %v", action, got, want)
		}
	}
}
