package smtpchannel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/cohortd/cohort/sdk"
)

// refBuildMessage is buildMessage as it was before builder: the reference
// the builder must match byte for byte.
func refBuildMessage(m *sdk.Message, now time.Time, sign *dkimSigning) (*envelope, error) {
	from, err := refParseAddress("From", m.From)
	if err != nil {
		return nil, err
	}
	to, err := refParseAddress("To", m.To)
	if err != nil {
		return nil, err
	}
	var replyTo *mail.Address
	if m.ReplyTo != "" {
		if replyTo, err = refParseAddress("Reply-To", m.ReplyTo); err != nil {
			return nil, err
		}
	}
	if strings.ContainsAny(m.Key, "\r\n") || m.Key == "" {
		return nil, fmt.Errorf("message key %q is empty or has a line break", m.Key)
	}
	_, domain, _ := strings.Cut(from.Address, "@")
	sum := sha256.Sum256([]byte("cohort message-id\x00" + m.Key))
	env := &envelope{
		from:      from.Address,
		to:        to.Address,
		utf8:      !isASCII(from.Address) || !isASCII(to.Address),
		messageID: "<" + hex.EncodeToString(sum[:16]) + "@" + domain + ">",
	}

	var buf bytes.Buffer
	buf.Grow(len(m.Text) + len(m.HTML) + 1024)
	h := headerWriter{b: &buf}
	h.add("From", from.String())
	h.add("To", to.String())
	if replyTo != nil {
		h.add("Reply-To", replyTo.String())
	}
	h.add("Subject", encodeText(m.Subject))
	h.add("Date", now.Format(time.RFC1123Z))
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

	var body bytes.Buffer
	body.Grow(len(m.Text) + len(m.HTML) + 512)
	switch {
	case m.Text != "" && m.HTML != "":
		mw := multipart.NewWriter(&body)
		for _, part := range []struct{ typ, text string }{{"text/plain", m.Text}, {"text/html", m.HTML}} {
			pw, err := mw.CreatePart(textproto.MIMEHeader{
				"Content-Type":              {part.typ + "; charset=utf-8"},
				"Content-Transfer-Encoding": {"quoted-printable"},
			})
			if err != nil {
				return nil, fmt.Errorf("message %q: %w", m.Key, err)
			}
			if err := refWriteQP(pw, part.text); err != nil {
				return nil, fmt.Errorf("message %q: %w", m.Key, err)
			}
		}
		if err := mw.Close(); err != nil {
			return nil, fmt.Errorf("message %q: %w", m.Key, err)
		}
		body.WriteString("\r\n")
		h.add("Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": mw.Boundary()}))
	default:
		typ, text := "text/plain", m.Text
		if m.HTML != "" {
			typ, text = "text/html", m.HTML
		}
		if err := refWriteQP(&body, text); err != nil {
			return nil, fmt.Errorf("message %q: %w", m.Key, err)
		}
		h.add("Content-Type", typ+"; charset=utf-8")
		h.add("Content-Transfer-Encoding", "quoted-printable")
	}
	buf.WriteString("\r\n")
	buf.Write(body.Bytes())
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

// refWriteQP is writeQP with mime/quotedprintable.
func refWriteQP(w io.Writer, body string) error {
	qp := quotedprintable.NewWriter(w)
	if _, err := io.WriteString(qp, body); err != nil {
		return err
	}
	if err := qp.Close(); err != nil {
		return err
	}
	// End the part on a line break so the boundary or the end follows one.
	if body != "" && !strings.HasSuffix(body, "\n") {
		_, err := io.WriteString(w, "\r\n")
		return err
	}
	return nil
}

// refParseAddress is parseAddress with mail.ParseAddress alone.
func refParseAddress(field, s string) (*mail.Address, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("the message has no %s address", field)
	}
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("%s address %q has a line break", field, s)
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
