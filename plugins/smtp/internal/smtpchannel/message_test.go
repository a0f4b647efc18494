package smtpchannel

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/cohortd/cohort/plugins/smtp/smtpsink"
	"github.com/cohortd/cohort/sdk"
)

var wordDecoder = new(mime.WordDecoder)

func decodeHeader(t *testing.T, h mail.Header, name string) string {
	t.Helper()
	s, err := wordDecoder.DecodeHeader(h.Get(name))
	if err != nil {
		t.Fatalf("decode %s %q: %v", name, h.Get(name), err)
	}
	return s
}

func readQP(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(quotedprintable.NewReader(r))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMIMEStructure sends messages through the sink and parses them back
// with net/mail and mime/multipart.
func TestMIMEStructure(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Record: true})
	c := configure(t, sinkConfig(sink, ""))
	longSubject := "Zoë, ünïcödé everywhere: 日本語の件名もちゃんと届きますか — " + strings.Repeat("très long ", 12)
	both := sdk.Message{
		Key:     "camp-1.cust-7",
		To:      "Zoë Ångström <zoe@example.com>",
		From:    "Café Ünïcode News <news@example.com>",
		ReplyTo: "\"Help, Desk\" <help@example.com>",
		Subject: longSubject,
		Text:    "Hello Zoë,\n.a line starting with a dot\n" + strings.Repeat("x", 200) + "\nbye",
		HTML:    "<p>Hello Zoë</p>\n.<b>dot</b>",
		Headers: []sdk.Header{
			{Name: "List-Unsubscribe", Values: []string{"<https://cohort.example.com/u?t=abc>"}},
			{Name: "List-Unsubscribe-Post", Values: []string{"List-Unsubscribe=One-Click"}},
		},
	}
	textOnly := sdk.Message{Key: "text-only", To: "a@example.com", From: "news@example.com", Subject: "plain", Text: "just text\r\n"}
	htmlOnly := sdk.Message{Key: "html-only", To: "a@example.com", From: "news@example.com", Subject: "html", HTML: "<p>only html</p>"}
	got := send(t, c, both, textOnly, htmlOnly)
	for k, r := range got {
		if r.Status != sdk.Accepted {
			t.Fatalf("%s: %s", k, resultString(r))
		}
	}

	m, _ := sink.Message("camp-1.cust-7")
	for i, line := range bytes.Split(m.Raw, []byte("\r\n")) {
		// Folded lines hold one encoded word (at most 75 characters) each.
		if len(line) > 78 && (line[0] == ' ' || len(bytes.Fields(line)) > 2) {
			t.Errorf("line %d is %d characters long, not folded: %q", i+1, len(line), line)
		}
		if bytes.ContainsRune(line, '\n') {
			t.Errorf("line %d has a bare LF", i+1)
		}
		for _, b := range line {
			if b >= 0x80 {
				t.Fatalf("line %d is not 7-bit: %q", i+1, line)
			}
		}
	}
	if m.From != "news@example.com" || !slices.Equal(m.To, []string{"zoe@example.com"}) {
		t.Errorf("envelope %s -> %v", m.From, m.To)
	}
	h := m.Header
	from, err := h.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Name != "Café Ünïcode News" || from[0].Address != "news@example.com" {
		t.Errorf("From = %v, %v", from, err)
	}
	to, err := h.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Name != "Zoë Ångström" {
		t.Errorf("To = %v, %v", to, err)
	}
	replyTo, err := h.AddressList("Reply-To")
	if err != nil || len(replyTo) != 1 || replyTo[0].Name != "Help, Desk" {
		t.Errorf("Reply-To = %v, %v", replyTo, err)
	}
	if got := decodeHeader(t, h, "Subject"); got != longSubject {
		t.Errorf("Subject round trip:\n got %q\nwant %q", got, longSubject)
	}
	if d, err := h.Date(); err != nil || !d.Equal(fixedNow) {
		t.Errorf("Date = %v, %v; want %v", d, err, fixedNow)
	}
	if id := h.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@example.com>") {
		t.Errorf("Message-ID = %q, want <...@example.com>", id)
	}
	for name, want := range map[string]string{
		"X-Cohort-Key":          "camp-1.cust-7",
		"Mime-Version":          "1.0",
		"List-Unsubscribe":      "<https://cohort.example.com/u?t=abc>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q: %v", h.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(bytes.NewReader(m.Body), params["boundary"])
	var parts []string
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
			t.Errorf("part %s: transfer encoding %q", p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"))
		}
		parts = append(parts, p.Header.Get("Content-Type")+"|"+readQP(t, p))
	}
	wantText := strings.ReplaceAll(both.Text, "\n", "\r\n")
	wantHTML := strings.ReplaceAll(both.HTML, "\n", "\r\n")
	want := []string{"text/plain; charset=utf-8|" + wantText + "\r\n", "text/html; charset=utf-8|" + wantHTML + "\r\n"}
	if !slices.Equal(parts, want) {
		t.Errorf("parts:\n got %q\nwant %q", parts, want)
	}

	for key, wantType := range map[string]string{"text-only": "text/plain; charset=utf-8", "html-only": "text/html; charset=utf-8"} {
		m, _ := sink.Message(key)
		if got := m.Header.Get("Content-Type"); got != wantType {
			t.Errorf("%s: Content-Type %q, want %q", key, got, wantType)
		}
		body := readQP(t, bytes.NewReader(m.Body))
		if key == "text-only" && body != "just text\r\n" {
			t.Errorf("text-only body %q", body)
		}
		if key == "html-only" && body != "<p>only html</p>\r\n" {
			t.Errorf("html-only body %q", body)
		}
	}
}

func TestBadMessagesArePermanent(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := configure(t, sinkConfig(sink, ""))
	withHeader := func(key, name, value string) sdk.Message {
		m := message(key, "a@example.com")
		m.Headers = append(m.Headers, sdk.Header{Name: name, Values: []string{value}})
		return m
	}
	badTo := message("bad-to", "not an address")
	inject := message("inject", "a@example.com")
	inject.Subject = "hi\r\nBcc: victim@example.com" // line breaks become spaces, never a header
	got := send(t, c,
		badTo,
		withHeader("reserved", "Bcc", "x@example.com"),
		withHeader("crlf", "X-Campaign", "a\r\nBcc: x@example.com"),
		withHeader("badname", "X Bad", "v"),
		withHeader("fine", "X-Campaign", "spring"),
		inject,
	)
	for key, want := range map[string]string{
		"bad-to":   "To address",
		"reserved": `header "Bcc" is written by the smtp channel`,
		"crlf":     "line break",
		"badname":  "not a valid field name",
	} {
		if r := got[key]; r.Status != sdk.Permanent || !strings.Contains(r.Reason, want) {
			t.Errorf("%s: %s, want permanent containing %q", key, resultString(r), want)
		}
	}
	if r := got["fine"]; r.Status != sdk.Accepted {
		t.Errorf("fine: %s", resultString(r))
	}
	if r := got["inject"]; r.Status != sdk.Accepted {
		t.Errorf("inject: %s", resultString(r))
	}
	if sink.Arrived() != 2 {
		t.Errorf("%d arrived, want 2", sink.Arrived())
	}
}

func TestSubjectLineBreaksDoNotInjectHeaders(t *testing.T) {
	env, err := buildMessage(&sdk.Message{Key: "k", From: "a@example.com", To: "b@example.com", Subject: "hi\r\nBcc: victim@example.com"}, fixedNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(env.data))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get("Bcc") != "" {
		t.Fatalf("a line break in the subject injected a header:\n%s", env.data)
	}
	if got := decodeHeader(t, msg.Header, "Subject"); got != "hi\r\nBcc: victim@example.com" {
		t.Errorf("subject = %q", got)
	}
}

// dkimKey writes a PEM key file and returns its path and the DNS TXT
// record publishing its public half.
func dkimKey(t *testing.T, kind string) (string, string) {
	t.Helper()
	var priv crypto.Signer
	var algo string
	var pubBytes []byte
	switch kind {
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv, algo = k, "rsa"
		pubBytes, err = x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
	case "ed25519":
		pub, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, algo, pubBytes = k, "ed25519", pub
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), kind+".pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, fmt.Sprintf("v=DKIM1; k=%s; p=%s", algo, base64.StdEncoding.EncodeToString(pubBytes))
}

func TestDKIM(t *testing.T) {
	for _, kind := range []string{"rsa", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			keyFile, txt := dkimKey(t, kind)
			sink := startSink(t, smtpsink.Options{Record: true})
			c := configure(t, sinkConfig(sink, "dkim:\n  domain: example.com\n  selector: cohort2026\n  private_key_file: "+keyFile+"\n"))
			m := message("signed", "Zoë <zoe@example.com>")
			m.Subject = "Ünïcode subject, signed"
			if r := send(t, c, m)["signed"]; r.Status != sdk.Accepted {
				t.Fatalf("%s", resultString(r))
			}
			arrived, _ := sink.Message("signed")
			lookups := 0
			opts := &dkim.VerifyOptions{LookupTXT: func(domain string) ([]string, error) {
				lookups++
				if domain != "cohort2026._domainkey.example.com" {
					return nil, fmt.Errorf("no TXT record for %s", domain)
				}
				return []string{txt}, nil
			}}
			vs, err := dkim.VerifyWithOptions(bytes.NewReader(arrived.Raw), opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) != 1 || lookups != 1 {
				t.Fatalf("%d signatures, %d lookups; want 1 each", len(vs), lookups)
			}
			v := vs[0]
			if v.Err != nil {
				t.Fatalf("signature does not verify: %v\n%s", v.Err, arrived.Raw)
			}
			if v.Domain != "example.com" {
				t.Errorf("d= %q", v.Domain)
			}
			for _, h := range []string{"From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"} {
				if !slices.ContainsFunc(v.HeaderKeys, func(k string) bool { return strings.EqualFold(k, h) }) {
					t.Errorf("signature does not cover %s (h=%v)", h, v.HeaderKeys)
				}
			}

			// Tampering with a signed header or the body breaks the signature.
			for name, tamper := range map[string]func([]byte) []byte{
				"List-Unsubscribe": func(b []byte) []byte {
					return bytes.Replace(b, []byte("unsubscribe?t=signed"), []byte("unsubscribe?t=evil00"), 1)
				},
				"body": func(b []byte) []byte { return bytes.Replace(b, []byte("this is signed"), []byte("this is forged"), 1) },
			} {
				forged := tamper(bytes.Clone(arrived.Raw))
				if bytes.Equal(forged, arrived.Raw) {
					t.Fatalf("tampering with %s changed nothing", name)
				}
				vs, err := dkim.VerifyWithOptions(bytes.NewReader(forged), opts)
				if err != nil {
					t.Fatal(err)
				}
				if len(vs) != 1 || vs[0].Err == nil {
					t.Errorf("signature still verifies after tampering with %s", name)
				}
			}
		})
	}
}
