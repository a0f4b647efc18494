package message

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

func testSchema() map[string]sdk.TraitType {
	return map[string]sdk.TraitType{
		"first_name":   sdk.TypeString,
		"last_name":    sdk.TypeString,
		"email":        sdk.TypeString,
		"orders":       sdk.TypeNumber,
		"ltv":          sdk.TypeNumber,
		"vip":          sdk.TypeBool,
		"signed_up_at": sdk.TypeTime,
		"interests":    sdk.TypeStringList,
	}
}

// TestCompileErrors loads each testdata/errors/<case> as a rules directory
// and compares Compile's errors with want.txt (go test -update rewrites it).
func TestCompileErrors(t *testing.T) {
	dirs, err := filepath.Glob("testdata/errors/*")
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	schema := testSchema()
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			set, err := rules.LoadDir(dir, rules.LoadOptions{Schema: rules.Schema{Traits: schema}})
			require.NoError(t, err)
			_, err = Compile(dir, set.Campaigns(), schema)
			require.Error(t, err)
			var e *Error
			require.ErrorAs(t, err, &e)
			got := err.Error() + "\n"
			golden := filepath.Join(dir, "want.txt")
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			if d := cmp.Diff(string(want), got); d != "" {
				t.Errorf("errors differ from %s (-want +got):\n%s", golden, d)
			}
		})
	}
}

// compileFiles writes files into a fresh rules directory and compiles one
// campaign "c" whose variants are given.
func compileFiles(t *testing.T, files map[string]string, variants ...rules.Variant) (*Set, error) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	}
	for i := range variants {
		if variants[i].Pos.File == "" {
			variants[i].Pos = rules.Pos{File: filepath.Join(dir, "campaigns.yaml"), Line: 10 + i, Column: 7}
		}
	}
	return Compile(dir, []*rules.Campaign{{Name: "c", Variants: variants}}, testSchema())
}

func mustCompile(t *testing.T, files map[string]string, variants ...rules.Variant) *Set {
	t.Helper()
	s, err := compileFiles(t, files, variants...)
	require.NoError(t, err)
	return s
}

func customer() Data {
	return Data{
		CustomerID:     "cust-1",
		UnsubscribeURL: "https://example.com/unsubscribe?t=abc_-123",
		PostalAddress:  "1 Example Street, Springfield",
		Traits: map[string]any{
			"first_name":   "Zoë",
			"last_name":    "O'Brien",
			"email":        "zoe@example.com",
			"orders":       1250000.0,
			"ltv":          19.999,
			"vip":          true,
			"signed_up_at": time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC),
			"interests":    []string{"tea", "b&w film", "日本"},
		},
	}
}

func TestRender(t *testing.T) {
	cases := []struct {
		name    string
		subject string
		html    string
		text    string // a text template file; "" derives it from html
		traits  map[string]any
		want    Content
	}{
		{
			name:    "html escaping of trait values",
			subject: "Hi {{.first_name}}",
			html:    `<p>Hi {{.first_name}}</p><a href="https://example.com/?n={{.first_name}}">x</a>`,
			traits:  map[string]any{"first_name": `<script>alert("x")</script>&`},
			want: Content{
				Subject: `Hi <script>alert("x")</script>&`,
				HTML:    `<p>Hi &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;</p><a href="https://example.com/?n=%3cscript%3ealert%28%22x%22%29%3c%2fscript%3e%26">x</a>`,
				Text:    "Hi <script>alert(\"x\")</script>&\n\nx (https://example.com/?n=<script>alert(\"x\")</script>&)",
			},
		},
		{
			name:    "unicode",
			subject: "{{upper .first_name}} — {{title .last_name}} 🎉",
			html:    `<p>{{.first_name}} {{lower "ÀÉÎ"}} {{title "élan vital"}}</p>`,
			traits:  map[string]any{"first_name": "Zoë 日本", "last_name": "ñandú o'brien"},
			want: Content{
				Subject: "ZOË 日本 — Ñandú O'brien 🎉",
				HTML:    "<p>Zoë 日本 àéî Élan Vital</p>",
				Text:    "Zoë 日本 àéî Élan Vital",
			},
		},
		{
			name:    "lists",
			subject: "{{len .interests}} interests: {{.interests}}",
			html:    `<ul>{{range .interests}}<li>{{.}} ({{$.first_name}})</li>{{end}}</ul><p>{{join " / " .interests}}</p><p>{{.interests}}</p>`,
			traits:  map[string]any{"first_name": "Ann", "interests": []string{"tea", "b&w film", "日本"}},
			want: Content{
				Subject: "3 interests: tea, b&w film, 日本",
				HTML:    "<ul><li>tea (Ann)</li><li>b&amp;w film (Ann)</li><li>日本 (Ann)</li></ul><p>tea / b&amp;w film / 日本</p><p>tea, b&amp;w film, 日本</p>",
				Text:    "- tea (Ann)\n- b&w film (Ann)\n- 日本 (Ann)\n\ntea / b&w film / 日本\n\ntea, b&w film, 日本",
			},
		},
		{
			name:    "numbers, times and bools",
			subject: "{{.orders}} orders, {{number 2 .ltv}} {{if .vip}}VIP{{end}}",
			html:    `<p>Since {{.signed_up_at}} ({{date "2 January 2006" .signed_up_at}}), {{$.ltv}}</p>`,
			traits: map[string]any{"orders": 1250000.0, "ltv": 19.999, "vip": true,
				"signed_up_at": time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)},
			want: Content{
				Subject: "1250000 orders, 20.00 VIP",
				HTML:    "<p>Since 2025-03-01 (1 March 2025), 19.999</p>",
				Text:    "Since 2025-03-01 (1 March 2025), 19.999",
			},
		},
		{
			name:    "functions and fallbacks",
			subject: `{{trait "first_name" "there"}}, {{.last_name | default "friend"}}`,
			html: `<p>{{customer_id}} {{campaign}}/{{variant}}</p>` +
				`<p><a href="{{unsubscribe_url}}">Unsubscribe</a> · {{postal_address}}</p>`,
			traits: map[string]any{"last_name": ""},
			want: Content{
				Subject: "there, friend",
				HTML:    `<p>cust-1 c/a</p><p><a href="https://example.com/unsubscribe?t=abc_-123">Unsubscribe</a> · 1 Example Street, Springfield</p>`,
				Text:    "cust-1 c/a\n\nUnsubscribe (https://example.com/unsubscribe?t=abc_-123) · 1 Example Street, Springfield",
			},
		},
		{
			name:    "a text template file is used as is",
			subject: "{{.first_name}}",
			html:    "<p>{{.first_name}}</p>",
			text:    "Hello {{.first_name}} <b>&amp;</b>\n{{unsubscribe_url}}\n",
			traits:  map[string]any{"first_name": "<Ann>"},
			want: Content{
				Subject: "<Ann>",
				HTML:    "<p>&lt;Ann&gt;</p>",
				Text:    "Hello <Ann> <b>&amp;</b>\nhttps://example.com/unsubscribe?t=abc_-123\n",
			},
		},
		{
			name:    "a line break in a trait does not add a header line",
			subject: "Hi {{.first_name}}!",
			html:    "<p>{{.first_name}}</p>",
			traits:  map[string]any{"first_name": "Ann\r\nBcc: victim@example.com"},
			want: Content{
				Subject: "Hi Ann Bcc: victim@example.com!",
				HTML:    "<p>Ann\r\nBcc: victim@example.com</p>",
				// The text part is a body, not a header: it keeps the break.
				Text: "Ann\r\nBcc: victim@example.com",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"t/a.html": tc.html}
			v := rules.Variant{Name: "a", Weight: 100, Subject: tc.subject, HTML: "t/a.html"}
			if tc.text != "" {
				files["t/a.txt"] = tc.text
				v.Text = "t/a.txt"
			}
			s := mustCompile(t, files, v)
			d := customer()
			d.Traits = tc.traits
			got, err := s.Render("c", "a", d)
			require.NoError(t, err)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("content differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderSMSText(t *testing.T) {
	s := mustCompile(t, map[string]string{"sms.txt": "{{trait \"first_name\" \"Hi\"}}: 20% off today. STOP to opt out"},
		rules.Variant{Name: "a", Weight: 100, Text: "sms.txt"})
	got, err := s.Render("c", "a", Data{CustomerID: "x", Traits: map[string]any{}})
	require.NoError(t, err)
	require.Equal(t, Content{Text: "Hi: 20% off today. STOP to opt out"}, got)
}

func TestRenderMissingTrait(t *testing.T) {
	s := mustCompile(t, map[string]string{"t/a.html": "<p>Hello\n  {{.first_name}} {{.last_name}}</p>"},
		rules.Variant{Name: "a", Weight: 100, Subject: "Hi {{.last_name}}", HTML: "t/a.html"})
	d := customer()
	delete(d.Traits, "first_name")
	_, err := s.Render("c", "a", d)
	var re *RenderError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "first_name", re.Trait)
	require.Equal(t, PartHTML, re.Part)
	require.Equal(t, "cust-1", re.CustomerID)
	require.Equal(t, 2, re.Line)
	require.Equal(t, 5, re.Column, "the column of .first_name")
	msg := err.Error()
	require.True(t, strings.HasPrefix(msg, `campaign "c": variant "a": html `), msg)
	require.Contains(t, msg, `t/a.html:2:5: customer "cust-1": missing trait first_name`)
	require.Contains(t, msg, `{{trait "first_name" "..."}}`)
	// No PII beyond the customer id: none of the customer's values.
	for _, v := range []string{"O'Brien", "zoe@example.com", "Zoë"} {
		require.NotContains(t, msg, v)
	}

	// In the subject, the error says subject and the position in it.
	delete(d.Traits, "last_name")
	_, err = s.Render("c", "a", d)
	require.EqualError(t, err, `campaign "c": variant "a": subject:1:6: customer "cust-1": missing trait last_name (the customer has no value; write {{trait "last_name" "..."}} to give a fallback)`)

}

func TestRenderUnknownVariant(t *testing.T) {
	s := mustCompile(t, map[string]string{"a.txt": "x"}, rules.Variant{Name: "a", Weight: 100, Text: "a.txt"})
	_, err := s.Render("c", "b", customer())
	require.EqualError(t, err, `campaign "c": variant "b": no compiled templates (is it in the rules Compile was given?)`)
	_, err = s.Render("other", "a", customer())
	require.Error(t, err)
}

func TestRenderFunctionErrorsHaveNoValues(t *testing.T) {
	// Compile checks types with every trait present; a customer whose
	// value has another Go type (a source bug) still fails cleanly.
	s := mustCompile(t, map[string]string{"a.txt": `{{number 2 .ltv}}`}, rules.Variant{Name: "a", Weight: 100, Text: "a.txt"})
	_, err := s.Render("c", "a", Data{CustomerID: "x", Traits: map[string]any{"ltv": "secret-value"}})
	require.Error(t, err)
	require.Contains(t, err.Error(), "expected a number trait, got a string")
	require.NotContains(t, err.Error(), "secret-value")
}

func TestCompileCollectsAcrossCampaigns(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ok.html"), []byte("<p>{{.first_name}}</p>"), 0o644))
	pos := rules.Pos{File: "campaigns.yaml", Line: 3, Column: 5}
	campaigns := []*rules.Campaign{
		{Name: "one", Variants: []rules.Variant{{Name: "a", Pos: pos, Subject: "{{.nope}}", HTML: "ok.html"}}},
		{Name: "two", Variants: []rules.Variant{{Name: "a", Pos: pos, HTML: "missing.html"}, {Name: "b", Pos: pos, Subject: "{{.first_nam}}"}}},
	}
	_, err := Compile(dir, campaigns, testSchema())
	require.Error(t, err)
	var errs []*Error
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var te *Error
		require.ErrorAs(t, e, &te)
		errs = append(errs, te)
	}
	require.Len(t, errs, 3)
	require.Equal(t, []string{"one/a", "two/a", "two/b"}, []string{
		errs[0].Campaign + "/" + errs[0].Variant, errs[1].Campaign + "/" + errs[1].Variant, errs[2].Campaign + "/" + errs[2].Variant})
	require.Contains(t, errs[2].Msg, "did you mean first_name?")
}

func TestCompileEmptySchema(t *testing.T) {
	_, err := compileFiles(t, nil, rules.Variant{Name: "a", Subject: "{{.first_name}}"})
	require.NoError(t, err)
	_, err = Compile(t.TempDir(), []*rules.Campaign{{Name: "c", Variants: []rules.Variant{{Name: "a", Subject: "{{.x}}"}}}}, nil)
	require.ErrorContains(t, err, "unknown field .x: the schema has no traits")
}

func TestCheckProfiles(t *testing.T) {
	s := mustCompile(t, map[string]string{"a.html": "<p>{{.first_name}} {{trait \"last_name\" \"\"}}</p>"},
		rules.Variant{Name: "a", Weight: 50, Subject: "Hi", HTML: "a.html"},
		rules.Variant{Name: "b", Weight: 50, Subject: "{{.email}}"})
	profiles := []Profile{
		{ID: "full", Traits: Traits(map[string]sdk.Value{"first_name": sdk.String("Ann"), "email": sdk.String("ann@example.com")})},
		{ID: "no-name", Pos: rules.Pos{File: "fixtures/f.yaml", Line: 7, Column: 5},
			Traits: Traits(map[string]sdk.Value{"first_name": {}, "email": sdk.String("bo@example.com")})},
		{ID: "nothing", Traits: map[string]any{}},
	}
	err := s.CheckProfiles(profiles, Data{})
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Equal(t, []string{
		`fixtures/f.yaml:7:5: campaign "c": variant "a": html ` + s.variants[variantKey{"c", "a"}].names[PartHTML] + `:1:6: customer "no-name": missing trait first_name (the customer has no value; write {{trait "first_name" "..."}} to give a fallback)`,
		`campaign "c": variant "a": html ` + s.variants[variantKey{"c", "a"}].names[PartHTML] + `:1:6: customer "nothing": missing trait first_name (the customer has no value; write {{trait "first_name" "..."}} to give a fallback)`,
		`campaign "c": variant "b": subject:1:3: customer "nothing": missing trait email (the customer has no value; write {{trait "email" "..."}} to give a fallback)`,
	}, lines)
	var pe *ProfileError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "first_name", pe.Err.Trait)

	require.NoError(t, s.CheckProfiles(profiles[:1], Data{}))
}

func TestTraits(t *testing.T) {
	at := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	got := Traits(map[string]sdk.Value{
		"s": sdk.String("x"), "n": sdk.Number(2.5), "b": sdk.Bool(false), "t": sdk.Time(at),
		"l": sdk.List("a", "b"), "missing": {},
	})
	require.Equal(t, map[string]any{"s": "x", "n": 2.5, "b": false, "t": at, "l": []string{"a", "b"}}, got)
}

// TestRenderConcurrent renders many customers at once: each message must
// carry its own customer's values (per-message functions are bound per
// renderer, never shared between two Renders in flight).
func TestRenderConcurrent(t *testing.T) {
	s := mustCompile(t, map[string]string{
		"a.html": `<p>{{.first_name}} {{customer_id}}</p><a href="{{unsubscribe_url}}">u</a>`,
	}, rules.Variant{Name: "a", Weight: 50, Subject: "{{customer_id}} {{variant}}", HTML: "a.html"},
		rules.Variant{Name: "b", Weight: 50, Subject: "{{customer_id}} {{variant}}", HTML: "a.html"})
	const workers, each = 8, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				variant := []string{"a", "b"}[i%2]
				c, err := s.Render("c", variant, Data{CustomerID: id, UnsubscribeURL: "https://example.com/u?t=" + id,
					Traits: map[string]any{"first_name": "N" + id}})
				if err != nil {
					errs <- err
					return
				}
				want := Content{
					Subject: id + " " + variant,
					HTML:    fmt.Sprintf(`<p>N%s %s</p><a href="https://example.com/u?t=%s">u</a>`, id, id, id),
					Text:    fmt.Sprintf("N%s %s\n\nu (https://example.com/u?t=%s)", id, id, id),
				}
				if c != want {
					errs <- fmt.Errorf("customer %s got %+v, want %+v", id, c, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Pos: rules.Pos{File: "r.yaml", Line: 3, Column: 7}, Campaign: "c", Variant: "a", Part: PartSubject, Line: 1, Column: 4, Msg: "m"}
	require.Equal(t, `r.yaml:3:7: campaign "c": variant "a": subject 1:4: m`, e.Error())
	e = &Error{Pos: rules.Pos{File: "t.html", Line: 2, Column: 1}, Campaign: "c", Variant: "a", Part: PartHTML, Msg: "m"}
	require.Equal(t, `t.html:2:1: campaign "c": variant "a": html: m`, e.Error())
	require.True(t, errors.Is(fmt.Errorf("wrap: %w", e), e))
}
