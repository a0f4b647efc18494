package sendgridchannel

import (
	"net/mail"
	"strings"
	"testing"

	"github.com/cohortd/cohort/sdk"
)

// bodyCases are messages whose bodies must come out of bodyWriter exactly as
// out of Body (sendgrid-go's structs through encoding/json).
func bodyCases() []sdk.Message {
	full := sdk.Message{
		Key:        "row-17",
		CustomerID: "cust-17",
		To:         `"Lovelace, Ada" <ada@example.com>`,
		From:       `"News Team" <news@example.com>`,
		ReplyTo:    `Help Desk <help@example.com>`,
		Subject:    "Spring is here ✿ \"quoted\" \\ <b>&</b>",
		Text:       "Hi Ada\n\ttab\r\n\b\f\x00\x1f\x7f \u2028 \u2029 é \xff\xfe end",
		HTML:       "<p>Hi Ada &amp; friends</p>",
		Headers: []sdk.Header{
			{Name: "List-Unsubscribe", Values: []string{"<https://example.com/u/tok>", "<mailto:u@example.com>"}},
			{Name: "List-Unsubscribe-Post", Values: []string{"List-Unsubscribe=One-Click"}},
			{Name: "X-Empty", Values: nil},
			{Name: "A-First", Values: []string{"one"}},
			{Name: "A-First", Values: []string{"two", "three"}},
		},
		Metadata: map[string]string{"campaign": "spring", "variant": "b"},
	}
	cases := []sdk.Message{full}
	add := func(f func(m *sdk.Message)) {
		m := full
		m.Headers = append([]sdk.Header(nil), full.Headers...)
		f(&m)
		cases = append(cases, m)
	}
	add(func(m *sdk.Message) { m.Subject, m.Text = "", "" })
	add(func(m *sdk.Message) { m.HTML = "" })
	add(func(m *sdk.Message) { m.Text, m.HTML = "", "" })
	add(func(m *sdk.Message) { m.ReplyTo = "" })
	add(func(m *sdk.Message) { m.ReplyTo = "  " })
	add(func(m *sdk.Message) { m.Headers = nil })
	add(func(m *sdk.Message) { m.Metadata = nil })
	add(func(m *sdk.Message) { m.Metadata = map[string]string{"variant": "a"} })
	add(func(m *sdk.Message) { m.Metadata = map[string]string{"campaign": "c"} })
	add(func(m *sdk.Message) { m.Metadata = map[string]string{"campaign": strings.Repeat("c", 256)} })
	add(func(m *sdk.Message) { m.Key = "" })
	add(func(m *sdk.Message) { m.From = "news@example.com"; m.To = "ada@example.com" })
	add(func(m *sdk.Message) { m.To = "Ada; Lovelace, Countess <ada@example.com>" })
	add(func(m *sdk.Message) { m.To = "=?utf-8?q?J=C3=B6rg?= <jorg@example.com>" })
	// Errors.
	add(func(m *sdk.Message) { m.From = " " })
	add(func(m *sdk.Message) { m.From = "not an address" })
	add(func(m *sdk.Message) { m.To = "nobody" })
	add(func(m *sdk.Message) { m.ReplyTo = "help" })
	return cases
}

var bodyOptions = []BodyOptions{
	{},
	{Categories: []string{"newsletter"}, ASMGroupID: 42},
	{Categories: []string{"spring"}, Sandbox: true},
	{Categories: []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}},
	{Categories: []string{"1", "2", "3", "4", "5", "6", "7", "8", "9"}, ASMGroupID: 7, Sandbox: true},
}

func TestBodyWriterMatchesBody(t *testing.T) {
	for _, opts := range bodyOptions {
		// One writer for all the messages, as a Send worker has: its
		// remembered From and Reply-To must not leak between messages.
		w := &bodyWriter{opts: opts}
		for i, m := range bodyCases() {
			checkBody(t, w, &m, opts, i)
		}
	}
}

func checkBody(t *testing.T, w *bodyWriter, m *sdk.Message, opts BodyOptions, i int) {
	t.Helper()
	want, wantErr := Body(m, opts)
	got, err := w.appendBody([]byte("prefix"), m)
	if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
		t.Fatalf("case %d, opts %+v: error %v, Body's %v", i, opts, err, wantErr)
	}
	if err != nil {
		return
	}
	if string(got) != "prefix"+string(want) {
		t.Fatalf("case %d, opts %+v:\n got %s\nwant %s", i, opts, got[len("prefix"):], want)
	}
}

func FuzzBodyWriter(f *testing.F) {
	for _, m := range bodyCases() {
		f.Add(m.Key, m.To, m.From, m.ReplyTo, m.Subject, m.Text, "X-H", "v", m.Metadata["campaign"], uint8(1))
	}
	w := map[int]*bodyWriter{}
	f.Fuzz(func(t *testing.T, key, to, from, replyTo, subject, text, hname, hvalue, campaign string, o uint8) {
		opt := int(o) % len(bodyOptions)
		if w[opt] == nil {
			w[opt] = &bodyWriter{opts: bodyOptions[opt]}
		}
		m := sdk.Message{Key: key, To: to, From: from, ReplyTo: replyTo, Subject: subject, Text: text, HTML: text + subject,
			Headers:  []sdk.Header{{Name: hname, Values: []string{hvalue, subject}}, {Name: "List-Unsubscribe", Values: []string{hvalue}}},
			Metadata: map[string]string{"campaign": campaign, "variant": hvalue}}
		checkBody(t, w[opt], &m, bodyOptions[opt], 0)
	})
}

func BenchmarkBody(b *testing.B) {
	// A message like sgbench.Message's.
	m := sdk.Message{
		Key: "bench-17", CustomerID: "cust-17", To: "user17@example.com", From: "Example News <news@example.com>",
		ReplyTo: "help@example.com", Subject: "Spring offers for customer 17",
		Text: "Our spring collection is here. Unsubscribe: https://example.com/u/17",
		HTML: "<html><body><h1>Spring offers</h1>" +
			strings.Repeat("<p>Our spring collection is here: light jackets, linen shirts and more.</p>", 18) +
			"<p><a href=\"https://example.com/u/17\">Unsubscribe</a></p></body></html>",
		Headers:  []sdk.Header{{Name: "List-Unsubscribe", Values: []string{"<https://example.com/u/17>"}}},
		Metadata: map[string]string{"campaign": "bench", "variant": "a"},
	}
	b.Run("sendgrid-go", func(b *testing.B) {
		for b.Loop() {
			if _, err := Body(&m, bodyOptions[1]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("writer", func(b *testing.B) {
		w := &bodyWriter{opts: bodyOptions[1]}
		for b.Loop() {
			if _, err := w.appendBody(nil, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"a@example.com", "a.b@c.d", ".a@b", "a.@b", "a..b@c", "a@b..c", "a@[1.2.3.4]", `"a"@b`,
		"a b@c", "a@b (c)", " a@b", "a@b ", "é@b", "a@b@c", "@b", "a@", "a", "Ada <a@b>", "a\x7f@b", "a!#$%&'*+-/=?^_`{|}~@b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseAddress(s)
		want, wantErr := mail.ParseAddress(s)
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("%q: error %v, mail.ParseAddress's %v", s, err, wantErr)
		}
		if err == nil && *got != *want {
			t.Fatalf("%q: %+v, mail.ParseAddress's %+v", s, got, want)
		}
	})
}

func FuzzRecipientName(f *testing.F) {
	for _, s := range []string{"", "Ada", "Ada Lovelace", " Ada", "Ada ", "Ada  L", "Ada,L", "Ada;L", "A\tB", "Jörg", "A\u00a0B", "A\u0085B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := strings.Join(strings.Fields(strings.NewReplacer(";", " ", ",", " ").Replace(s)), " ")
		if got := recipientName(s); got != want {
			t.Fatalf("%q: %q, want %q", s, got, want)
		}
	})
}
