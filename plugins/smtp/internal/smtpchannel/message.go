package smtpchannel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/cohortd/cohort/plugins/internal/mailaddr"
	"github.com/cohortd/cohort/sdk"
)

// maxLine is RFC 5322's hard limit on a line, without CRLF.
const maxLine = 998

// foldAt is where header lines are folded when they have white space.
const foldAt = 78

// reserved are the header fields the channel writes itself; a message may
// not set them through Message.Headers.
var reserved = map[string]bool{
	"From": true, "To": true, "Cc": true, "Bcc": true, "Reply-To": true, "Sender": true,
	"Subject": true, "Date": true, "Message-Id": true, "Mime-Version": true,
	"Content-Type": true, "Content-Transfer-Encoding": true, "X-Cohort-Key": true,
	"Dkim-Signature": true, "Return-Path": true,
}

// envelope is a message ready to send.
type envelope struct {
	from, to  string // envelope addresses (MAIL FROM, RCPT TO)
	utf8      bool   // an envelope address needs SMTPUTF8
	messageID string // with angle brackets
	data      []byte // the message, CRLF line ends, not dot-stuffed
}

// dkimSigning is what signs a message; nil signs nothing.
type dkimSigning struct {
	opts dkim.SignOptions
}

// buildMessage turns m into an RFC 5322 message.
func buildMessage(m *sdk.Message, now time.Time, sign *dkimSigning) (*envelope, error) {
	var b builder
	return b.build(m, now, sign)
}

// builder builds messages. It remembers what repeats from one message to
// the next (the From and Reply-To addresses parsed and formatted, the Date
// text) so a Send does that work once per worker, not once per message. One
// goroutine uses a builder at a time.
type builder struct {
	from, replyTo addressCache
	date          time.Time
	dateText      string
}

// addressCache is the last address a field had, parsed and formatted.
type addressCache struct {
	raw  string
	set  bool
	addr *mail.Address
	text string // addr.String()
	err  error
}

func (c *addressCache) parse(field, raw string) (*mail.Address, string, error) {
	if !c.set || c.raw != raw {
		c.raw, c.set = raw, true
		c.addr, c.err = parseAddress(field, raw)
		c.text = ""
		if c.err == nil {
			c.text = formatAddress(c.addr)
		}
	}
	return c.addr, c.text, c.err
}

func (b *builder) build(m *sdk.Message, now time.Time, sign *dkimSigning) (*envelope, error) {
	from, fromText, err := b.from.parse("From", m.From)
	if err != nil {
		return nil, err
	}
	to, err := parseAddress("To", m.To)
	if err != nil {
		return nil, err
	}
	var replyText string
	if m.ReplyTo != "" {
		if _, replyText, err = b.replyTo.parse("Reply-To", m.ReplyTo); err != nil {
			return nil, err
		}
	}
	if strings.ContainsAny(m.Key, "\r\n") || m.Key == "" {
		return nil, fmt.Errorf("message key %q is empty or has a line break", m.Key)
	}
	_, domain, _ := strings.Cut(from.Address, "@")
	sum := sha256.Sum256([]byte("cohort message-id\x00" + m.Key))
	var id [2*16 + 2]byte
	id[0] = '<'
	hex.Encode(id[1:], sum[:16])
	id[len(id)-1] = '@'
	env := &envelope{
		from:      from.Address,
		to:        to.Address,
		utf8:      !isASCII(from.Address) || !isASCII(to.Address),
		messageID: string(id[:]) + domain + ">",
	}
	if !b.date.Equal(now) || b.dateText == "" || b.date.Location() != now.Location() {
		b.date, b.dateText = now, now.Format(time.RFC1123Z)
	}

	var buf bytes.Buffer
	buf.Grow(len(m.Text) + len(m.Text)/16 + len(m.HTML) + len(m.HTML)/16 + 1024)
	h := headerWriter{b: &buf}
	h.add("From", fromText)
	h.add("To", formatAddress(to))
	if m.ReplyTo != "" {
		h.add("Reply-To", replyText)
	}
	h.add("Subject", encodeText(m.Subject))
	h.add("Date", b.dateText)
	h.add("Message-ID", env.messageID)
	h.add("X-Cohort-Key", encodeText(m.Key))
	h.add("MIME-Version", "1.0")
	for _, hd := range m.Headers {
		name := textproto.CanonicalMIMEHeaderKey(hd.Name)
		if !validFieldName(hd.Name) {
			return nil, fmt.Errorf("header name %q is not a valid field name", hd.Name)
		}
		if reserved[name] {
			return nil, fmt.Errorf("header %q is written by the smtp channel: set it through the message's fields, not Headers", hd.Name)
		}
		for _, v := range hd.Values {
			if strings.ContainsAny(v, "\r\n") {
				return nil, fmt.Errorf("header %q has a line break in its value", hd.Name)
			}
			h.add(hd.Name, encodeText(v))
		}
	}
	if h.err != nil {
		return nil, h.err
	}

	// The content header fields come last; the body follows them in the
	// same buffer.
	switch {
	case m.Text != "" && m.HTML != "":
		mw := multipart.NewWriter(&buf)
		h.add("Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": mw.Boundary()}))
		buf.WriteString("\r\n")
		for _, part := range []struct{ typ, text string }{{"text/plain", m.Text}, {"text/html", m.HTML}} {
			pw, err := mw.CreatePart(textproto.MIMEHeader{
				"Content-Type":              {part.typ + "; charset=utf-8"},
				"Content-Transfer-Encoding": {"quoted-printable"},
			})
			if err != nil {
				return nil, fmt.Errorf("message %q: %w", m.Key, err)
			}
			if err := writeQP(pw, part.text); err != nil {
				return nil, fmt.Errorf("message %q: %w", m.Key, err)
			}
		}
		if err := mw.Close(); err != nil {
			return nil, fmt.Errorf("message %q: %w", m.Key, err)
		}
		buf.WriteString("\r\n")
	default:
		typ, text := "text/plain", m.Text
		if m.HTML != "" {
			typ, text = "text/html", m.HTML
		}
		h.add("Content-Type", typ+"; charset=utf-8")
		h.add("Content-Transfer-Encoding", "quoted-printable")
		buf.WriteString("\r\n")
		if err := writeQP(&buf, text); err != nil {
			return nil, fmt.Errorf("message %q: %w", m.Key, err)
		}
	}
	env.data = buf.Bytes()

	if sign != nil {
		signer, err := dkim.NewSigner(&sign.opts)
		if err != nil {
			return nil, fmt.Errorf("dkim: %w", err)
		}
		if _, err := signer.Write(env.data); err != nil {
			_ = signer.Close()
			return nil, fmt.Errorf("dkim: sign message %q: %w", m.Key, err)
		}
		if err := signer.Close(); err != nil {
			return nil, fmt.Errorf("dkim: sign message %q: %w", m.Key, err)
		}
		sig := signer.Signature()
		signed := make([]byte, 0, len(sig)+len(env.data))
		env.data = append(append(signed, sig...), env.data...)
	}
	return env, nil
}

// writeQP writes body quoted-printable, as mime/quotedprintable's Writer
// does, ending on a line break.
func writeQP(w io.Writer, body string) error {
	if buf, ok := w.(*bytes.Buffer); ok {
		buf.Grow(len(body) + len(body)/16 + 2)
		b := appendQP(buf.AvailableBuffer(), body)
		_, err := buf.Write(b)
		return err
	}
	b := appendQP(make([]byte, 0, len(body)+len(body)/16+2), body)
	_, err := w.Write(b)
	return err
}

// appendQP appends body encoded quoted-printable exactly as
// mime/quotedprintable's Writer (not Binary) encodes it, then a CRLF when
// body is not empty and does not end on a line break, so the boundary or
// the end follows one.
func appendQP(b []byte, body string) []byte {
	q := qpEncoder{b: b}
	n := 0
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c >= '!' && c <= '~' && c != '=':
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		}
		if i > n {
			q.write(body[n:i])
		}
		q.encode(body[i])
		n = i + 1
	}
	q.write(body[n:])
	q.checkLastByte()
	if body != "" && !strings.HasSuffix(body, "\n") {
		q.b = append(q.b, '\r', '\n')
	}
	return q.b
}

// qpMaxLine is quoted-printable's longest line, without CRLF.
const qpMaxLine = 76

// qpEncoder is mime/quotedprintable's Writer appending to b: line is the
// length of the line being written (at the end of b), cr says the last
// byte written was a CR.
type qpEncoder struct {
	b    []byte
	line int
	cr   bool
}

func (q *qpEncoder) write(p string) {
	for i := 0; i < len(p); {
		c := p[i]
		if c == '\n' || c == '\r' {
			i++
			if q.cr && c == '\n' {
				q.cr = false
				continue
			}
			if c == '\r' {
				q.cr = true
			}
			q.checkLastByte()
			q.b = append(q.b, '\r', '\n')
			q.line = 0
			continue
		}
		// A run of bytes up to the next line break goes in as it is, with
		// a soft line break where a line is full.
		j := i + 1
		for j < len(p) && p[j] != '\n' && p[j] != '\r' {
			j++
		}
		for i < j {
			if q.line == qpMaxLine-1 {
				q.softBreak()
			}
			k := min(j-i, qpMaxLine-1-q.line)
			q.b = append(q.b, p[i:i+k]...)
			q.line += k
			i += k
		}
		q.cr = false
	}
}

const qpHex = "0123456789ABCDEF"

func (q *qpEncoder) encode(c byte) {
	if qpMaxLine-1-q.line < 3 {
		q.softBreak()
	}
	q.b = append(q.b, '=', qpHex[c>>4], qpHex[c&0x0f])
	q.line += 3
}

// checkLastByte encodes a space or tab ending the line.
func (q *qpEncoder) checkLastByte() {
	if q.line == 0 {
		return
	}
	if c := q.b[len(q.b)-1]; c == ' ' || c == '\t' {
		q.b = q.b[:len(q.b)-1]
		q.line--
		q.encode(c)
	}
}

func (q *qpEncoder) softBreak() {
	q.b = append(q.b, '=', '\r', '\n')
	q.line = 0
}

// formatAddress is a.String(), without its work for the common bare
// address of ASCII dot-atoms, which it writes as <local@domain>.
func formatAddress(a *mail.Address) string {
	if a.Name == "" && mailaddr.IsDotAtomAddress(a.Address) {
		return "<" + a.Address + ">"
	}
	return a.String()
}

func parseAddress(field, s string) (*mail.Address, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("the message has no %s address", field)
	}
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("%s address %q has a line break", field, s)
	}
	if mailaddr.IsDotAtomAddress(s) {
		return &mail.Address{Address: s}, nil
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%s address %q: %v", field, s, err)
	}
	if !strings.Contains(a.Address, "@") {
		return nil, fmt.Errorf("%s address %q has no domain", field, s)
	}
	return a, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// encodeText returns s as it may appear in an unstructured header: RFC
// 2047 encoded-words when it has non-ASCII or control characters, or could
// be taken for an encoded word.
func encodeText(s string) string {
	needs := strings.Contains(s, "=?")
	for i := 0; i < len(s) && !needs; i++ {
		c := s[i]
		needs = c >= utf8.RuneSelf || (c < ' ' && c != '\t') || c == 0x7f
	}
	if !needs {
		return s
	}
	return mime.QEncoding.Encode("utf-8", s)
}

func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// headerWriter writes header fields, folding long ones at white space.
type headerWriter struct {
	b   *bytes.Buffer
	err error
}

func (h *headerWriter) add(name, value string) {
	if len(name)+2+len(value) <= foldAt {
		h.b.WriteString(name)
		h.b.WriteString(": ")
		h.b.WriteString(value)
		h.b.WriteString("\r\n")
		return
	}
	words := strings.Split(value, " ")
	cur := name + ":"
	for _, w := range words {
		if w == "" {
			continue
		}
		if len(cur)+1+len(w) > foldAt && strings.TrimSpace(cur) != name+":" {
			if len(cur) > maxLine && h.err == nil {
				h.err = fmt.Errorf("header %q has a line longer than %d characters", name, maxLine)
			}
			h.b.WriteString(cur)
			h.b.WriteString("\r\n")
			cur = ""
		}
		cur += " " + w
	}
	if len(cur) > maxLine && h.err == nil {
		h.err = fmt.Errorf("header %q has a line longer than %d characters", name, maxLine)
	}
	h.b.WriteString(cur)
	h.b.WriteString("\r\n")
}
