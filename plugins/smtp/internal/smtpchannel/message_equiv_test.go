package smtpchannel

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// boundaryRE finds a multipart boundary, random in each message.
var boundaryRE = regexp.MustCompile(`boundary=([0-9a-f]+)`)

func withoutBoundary(b []byte) string {
	m := boundaryRE.FindSubmatch(b)
	if m == nil {
		return string(b)
	}
	return strings.ReplaceAll(string(b), string(m[1]), "BOUNDARY")
}

// equivCases are messages the builder must turn into exactly the bytes (or
// the error) refBuildMessage gives.
func equivCases() []sdk.Message {
	long := strings.Repeat("word ", 30)
	base := sdk.Message{
		Key: "digest/enter/c1/mail", To: "customer-1@example.com", From: "Cohort News <news@example.com>",
		ReplyTo: "help@example.com", Subject: "Your weekly digest, Ada",
		Text: "Hello Ada,\n\n" + strings.Repeat("This is the body of a benchmark message, about as long as a short campaign.\n", 4) +
			"Unsubscribe: https://cohort.example.com/unsubscribe?t=" + strings.Repeat("x", 120) + "\n",
		Headers: []sdk.Header{
			{Name: "List-Unsubscribe", Values: []string{"<https://cohort.example.com/unsubscribe?t=" + strings.Repeat("y", 150) + ">"}},
			{Name: "List-Unsubscribe-Post", Values: []string{"List-Unsubscribe=One-Click"}},
		},
	}
	cases := []sdk.Message{base}
	add := func(f func(m *sdk.Message)) {
		m := base
		f(&m)
		cases = append(cases, m)
	}
	add(func(m *sdk.Message) { m.HTML = "<p>Hi = there</p>\n<p>" + long + "</p>" })
	add(func(m *sdk.Message) { m.Text = ""; m.HTML = "<p>Hi</p>" })
	add(func(m *sdk.Message) { m.Text = "" })
	add(func(m *sdk.Message) { m.Text = "trailing space \nand tab\t\nend " })
	add(func(m *sdk.Message) { m.Text = "crlf\r\nlone cr\rlone lf\n\r\n" + long + long })
	add(func(m *sdk.Message) { m.Text = "Grüße, naïve café ✿ =3D\x00\x7f" })
	add(func(m *sdk.Message) { m.Subject = "Grüße " + long })
	add(func(m *sdk.Message) { m.Subject = long + long + long })
	add(func(m *sdk.Message) { m.Subject = strings.Repeat("x", 1100) })
	add(func(m *sdk.Message) { m.From = "news@example.com"; m.ReplyTo = "" })
	add(func(m *sdk.Message) { m.From = `"Doe, Jane" <jane@example.com>`; m.To = "Jörg <jorg@example.com>" })
	add(func(m *sdk.Message) { m.To = "bücher@example.com" })
	add(func(m *sdk.Message) { m.To = `"a b"@example.com` })
	add(func(m *sdk.Message) { m.To = "a.@example.com" })
	add(func(m *sdk.Message) { m.To = " customer@example.com " })
	add(func(m *sdk.Message) { m.To = "" })
	add(func(m *sdk.Message) { m.To = "nobody" })
	add(func(m *sdk.Message) { m.From = "a@b\r\nBcc: x@example.com" })
	add(func(m *sdk.Message) { m.ReplyTo = "not an address" })
	add(func(m *sdk.Message) { m.Key = "" })
	add(func(m *sdk.Message) { m.Key = "k\n" })
	add(func(m *sdk.Message) { m.Headers = []sdk.Header{{Name: "From", Values: []string{"x"}}} })
	add(func(m *sdk.Message) { m.Headers = []sdk.Header{{Name: "X Bad", Values: []string{"x"}}} })
	add(func(m *sdk.Message) { m.Headers = []sdk.Header{{Name: "X-Ok", Values: []string{"a\r\nb"}}} })
	return cases
}

func TestBuilderMatchesReference(t *testing.T) {
	now := fixedNow
	var b builder
	for _, sign := range []*dkimSigning{nil, testSigning(t)} {
		for i, m := range equivCases() {
			checkBuild(t, &b, &m, now, sign, i)
			// A second time, with what the builder remembers.
			checkBuild(t, &b, &m, now, sign, i)
			now = now.Add(time.Second)
		}
	}
}

func checkBuild(t *testing.T, b *builder, m *sdk.Message, now time.Time, sign *dkimSigning, i int) {
	t.Helper()
	want, wantErr := refBuildMessage(m, now, sign)
	got, err := b.build(m, now, sign)
	if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
		t.Fatalf("case %d: error %v, want %v", i, err, wantErr)
	}
	if err != nil {
		return
	}
	if got.from != want.from || got.to != want.to || got.utf8 != want.utf8 || got.messageID != want.messageID {
		t.Fatalf("case %d: envelope %+v, want %+v", i, got, want)
	}
	g, w := got.data, want.data
	if sign != nil {
		// The signature covers the random boundary and the time: compare
		// the messages after it, and that it is there.
		if !bytes.HasPrefix(g, []byte("DKIM-Signature: ")) || !bytes.HasPrefix(w, []byte("DKIM-Signature: ")) {
			t.Fatalf("case %d: no signature:\n got %q\nwant %q", i, g, w)
		}
		g = g[bytes.Index(g, []byte("\r\nFrom: "))+2:]
		w = w[bytes.Index(w, []byte("\r\nFrom: "))+2:]
	}
	if g, w := withoutBoundary(g), withoutBoundary(w); g != w {
		t.Fatalf("case %d:\n got %q\nwant %q", i, g, w)
	}
}

func testSigning(t *testing.T) *dkimSigning {
	t.Helper()
	key, _ := dkimKey(t, "ed25519")
	c := configure(t, "host: 127.0.0.1\nport: 25\ntls: none\ndkim:\n  domain: example.com\n  selector: s\n  private_key_file: "+key+"\n")
	return c.st.sign
}

func FuzzAppendQP(f *testing.F) {
	for _, s := range []string{"", "a", "a ", "a\t", "a \n", "=", strings.Repeat("x", 75), strings.Repeat("x", 76), strings.Repeat("x", 74) + "=",
		strings.Repeat("x", 73) + " \n", "a\r\nb\rc\n\rd", "é\x00\x7f", strings.Repeat("ab ", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var want bytes.Buffer
		if err := refWriteQP(&want, s); err != nil {
			t.Fatal(err)
		}
		if got := appendQP(nil, s); string(got) != want.String() {
			t.Fatalf("%q:\n got %q\nwant %q", s, got, want.String())
		}
	})
}

func FuzzAddress(f *testing.F) {
	for _, s := range []string{"a@example.com", "a.b@c.d", ".a@b", "a.@b", "a..b@c", "a@b..c", "a@[1.2.3.4]", `"a"@b`, `"a b"@c`,
		"a b@c", "a@b (c)", " a@b", "a@b ", "é@b", "a@b@c", "@b", "a@", "a", "Ada <a@b>", "a\x7f@b", "a!#$%&'*+-/=?^_`{|}~@b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseAddress("To", s)
		want, wantErr := refParseAddress("To", s)
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("%q: error %v, want %v", s, err, wantErr)
		}
		if err != nil {
			return
		}
		if *got != *want {
			t.Fatalf("%q: %+v, want %+v", s, got, want)
		}
		if g, w := formatAddress(got), want.String(); g != w {
			t.Fatalf("%q: formatted %q, want %q", s, g, w)
		}
	})
}

func FuzzQueueID(f *testing.F) {
	for _, s := range []string{"Ok: queued as ABC123", "2.0.0 Ok: queued as 4Xyz.1-2_3 more", "OK id=1abc-DEF", "OK xid=1", "OK queued as .x",
		"2.0.0 xABC Message accepted for delivery", "ABC Message accepted", "queued asX", "Queued As Q1", "queued as  Q1", "ok", "",
		"é queued as Q", "queued aſ Q", "_queued as Q", "-queued as Q", "id=é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := ""
		for _, re := range queueIDPatterns {
			if m := re.FindStringSubmatch(s); m != nil {
				want = m[1]
				break
			}
		}
		if got := queueID(s); got != want {
			t.Fatalf("%q: %q, want %q", s, got, want)
		}
	})
}
