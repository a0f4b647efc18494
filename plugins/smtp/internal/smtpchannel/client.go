package smtpchannel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// The client's limits on what a server sends.
const (
	// maxReplyLine is the longest reply line read, line end included: as
	// go-smtp's client, about four times RFC 5321's 512.
	maxReplyLine = 2000
	// maxReply bounds a multi-line reply (an EHLO reply is a few hundred
	// bytes).
	maxReply = 64 << 10
)

// client is the client side of one SMTP session: the greeting, EHLO,
// STARTTLS, AUTH, then transactions (open, finish, reset) and QUIT. When
// the server offers PIPELINING (RFC 2920), a transaction takes two writes,
// MAIL, RCPT and DATA in one and the content with its terminator in the
// other; without it, each command waits for its reply. Replies are read
// through a bufio.Reader, so replies that arrive together cost one read.
//
// Every write is bounded by the timeout (trackConn does it), and so is the
// wait for each reply: the first read from the network for a reply sets a
// read deadline, and a reply already buffered costs no deadline at all.
//
// Replies other than the one expected come back as *smtp.SMTPError with
// the enhanced status code (RFC 3463) parsed off the text, as go-smtp's
// client gives them; network failures and malformed replies come back as
// they are. A client is used by one goroutine at a time.
type client struct {
	nc      net.Conn // the session's connection: raw, or TLS over it
	br      *bufio.Reader
	timeout time.Duration
	arm     bool // the next read from the network sets a read deadline

	ext        map[string]string // EHLO keywords, upper case, and their parameters
	pipelining bool
	lastCode   int // the code of the last reply read, 0 after a failed read

	out  []byte // what is being written, reused
	text []byte // a reply's text being put together, reused
}

// netReader is the client as the bufio.Reader's source.
type netReader client

func (r *netReader) Read(p []byte) (int, error) {
	c := (*client)(r)
	if c.arm {
		c.arm = false
		if err := c.nc.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
			return 0, err
		}
	}
	return c.nc.Read(p)
}

// newClient starts a session on nc, which is the pool's trackConn or TLS
// over it. It does no I/O: greet reads the greeting.
func newClient(nc net.Conn, timeout time.Duration) *client {
	c := &client{nc: nc, timeout: timeout}
	c.br = bufio.NewReaderSize((*netReader)(c), 4096)
	return c
}

// close closes the connection without a word to the server.
func (c *client) close() error { return c.nc.Close() }

// has reports whether the server named the extension in its EHLO reply.
func (c *client) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// write writes p in one write. trackConn bounds it with the timeout.
func (c *client) write(p []byte) error {
	_, err := c.nc.Write(p)
	return err
}

// cmd writes one command line and reads its reply; expect and keep are as
// for readReply.
func (c *client) cmd(expect int, keep bool, line string) (string, error) {
	c.out = append(append(c.out[:0], line...), '\r', '\n')
	if err := c.write(c.out); err != nil {
		return "", err
	}
	return c.readReply(expect, keep)
}

// greet reads the server's greeting.
func (c *client) greet() error {
	_, err := c.readReply(220, false)
	return err
}

// hello says EHLO and reads the extensions the server offers, or says HELO
// when the server does not know EHLO (500 or 502), as go-smtp's client
// does.
func (c *client) hello(name string) error {
	if strings.ContainsAny(name, "\r\n") {
		return fmt.Errorf("smtp: EHLO name %q has a line break", name)
	}
	c.ext, c.pipelining = nil, false
	text, err := c.cmd(250, true, "EHLO "+name)
	var se *smtp.SMTPError
	if errors.As(err, &se) && (se.Code == 500 || se.Code == 502) {
		_, err = c.cmd(250, false, "HELO "+name)
		return err
	}
	if err != nil {
		return err
	}
	c.ext = parseEHLO(text)
	c.pipelining = c.has("PIPELINING")
	return nil
}

// parseEHLO maps the keywords of an EHLO reply's text (its first line is
// the server's name) to their parameters.
func parseEHLO(text string) map[string]string {
	ext := map[string]string{}
	_, rest, _ := strings.Cut(text, "\n")
	for line := range strings.SplitSeq(rest, "\n") {
		if line == "" {
			continue
		}
		kw, param, _ := strings.Cut(line, " ")
		ext[strings.ToUpper(kw)] = param
	}
	return ext
}

// startTLS runs STARTTLS and the TLS handshake, within the timeout and
// ctx. The session starts afresh: say EHLO again.
func (c *client) startTLS(ctx context.Context, config *tls.Config) error {
	if _, err := c.cmd(220, false, "STARTTLS"); err != nil {
		return err
	}
	if c.br.Buffered() > 0 {
		// Bytes sent before TLS must not pass for bytes sent under it.
		return errors.New("smtp: the server sent more after its STARTTLS reply")
	}
	tc := tls.Client(c.nc, config)
	hctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return err
	}
	c.nc = tc
	c.ext, c.pipelining = nil, false
	return nil
}

// supportsAuth reports whether the server offers the SASL mechanism.
func (c *client) supportsAuth(mech string) bool {
	mechs, ok := c.ext["AUTH"]
	if !ok {
		return false
	}
	for m := range strings.SplitSeq(mechs, " ") {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// auth runs AUTH with the SASL client a, as go-smtp's client does.
func (c *client) auth(a sasl.Client) error {
	enc := base64.StdEncoding
	mech, resp, err := a.Start()
	if err != nil {
		return err
	}
	line := "AUTH " + mech
	if len(resp) > 0 {
		line += " " + enc.EncodeToString(resp)
	} else if resp != nil {
		line += " ="
	}
	for {
		code, text, err := c.cmdAny(line)
		if err != nil {
			return err
		}
		switch code {
		case 235:
			return nil
		case 334:
			challenge, err := enc.DecodeString(text)
			if err == nil {
				resp, err = a.Next(challenge)
			}
			if err != nil {
				_, _ = c.cmd(501, false, "*") // abort the exchange
				return err
			}
			line = enc.EncodeToString(resp)
		default:
			return replyError(code, text)
		}
	}
}

// cmdAny is cmd taking any reply code, with the reply's text.
func (c *client) cmdAny(line string) (int, string, error) {
	text, err := c.cmd(0, true, line)
	if err != nil {
		return 0, "", err
	}
	return c.lastCode, text, nil
}

// stage is a command of a transaction.
type stage int

const (
	stageNone stage = iota
	stageMail
	stageRcpt
	stageData
)

// open starts a transaction for one recipient: MAIL, RCPT and DATA up to
// the 354 that invites the content, in one write when the server offers
// PIPELINING. On a failure it returns the command that failed with its
// error, and broken when the connection cannot carry another command
// whatever that error says. Under PIPELINING the replies to the commands
// after the failed one are read too (a 421 among them breaks the
// connection), and a 354 that should not have come is answered with an
// empty message, so the session is back between transactions or, after a
// failed RCPT or DATA, in one that RSET ends. The addresses must not hold
// a line break.
func (c *client) open(from, to string, utf8 bool) (failed stage, err error, broken bool) {
	if !c.pipelining {
		c.out = appendMail(c.out[:0], from, utf8, c.has("8BITMIME"))
		return c.openLockStep(to)
	}
	c.out = c.appendOpen(c.out[:0], from, to, utf8)
	if err := c.write(c.out); err != nil {
		return stageMail, err, true
	}
	return c.readOpen()
}

// appendMail appends the MAIL command.
func appendMail(b []byte, from string, utf8, eightBit bool) []byte {
	b = append(b, "MAIL FROM:<"...)
	b = append(b, from...)
	b = append(b, '>')
	if utf8 {
		// RFC 6531: the content may hold UTF-8 too.
		if eightBit {
			b = append(b, " BODY=8BITMIME"...)
		}
		b = append(b, " SMTPUTF8"...)
	}
	return append(b, "\r\n"...)
}

// appendOpen appends MAIL, RCPT and DATA, to go in one write under
// PIPELINING.
func (c *client) appendOpen(b []byte, from, to string, utf8 bool) []byte {
	b = appendMail(b, from, utf8, c.has("8BITMIME"))
	b = append(b, "RCPT TO:<"...)
	b = append(b, to...)
	return append(b, ">\r\nDATA\r\n"...)
}

// readOpen reads the replies to a pipelined MAIL, RCPT and DATA; see open.
func (c *client) readOpen() (failed stage, err error, broken bool) {
	replies := [...]struct {
		stage  stage
		expect int
	}{{stageMail, 250}, {stageRcpt, 25}, {stageData, 354}}
	for i, r := range replies {
		_, err := c.readReply(r.expect, false)
		if err == nil {
			continue
		}
		if !isReply(err) || isCode(err, 421) {
			return r.stage, err, true
		}
		return r.stage, err, !c.drain(len(replies) - 1 - i)
	}
	return stageNone, nil, false
}

// openLockStep is open without PIPELINING; c.out holds MAIL.
func (c *client) openLockStep(to string) (failed stage, err error, broken bool) {
	if err := c.write(c.out); err != nil {
		return stageMail, err, true
	}
	if _, err := c.readReply(250, false); err != nil {
		return stageMail, err, !isReply(err)
	}
	if _, err := c.cmd(25, false, "RCPT TO:<"+to+">"); err != nil {
		return stageRcpt, err, !isReply(err)
	}
	if _, err := c.cmd(354, false, "DATA"); err != nil {
		return stageData, err, !isReply(err)
	}
	return stageNone, nil, false
}

// drain reads the replies to the n pipelined commands that followed a
// failed one; the last of them is DATA's. It reports whether the
// connection can go on.
func (c *client) drain(n int) bool {
	for i := range n {
		if _, err := c.readReply(0, false); err != nil {
			return false
		}
		code := c.lastCode
		if code == 421 {
			return false
		}
		if i == n-1 && code == 354 {
			// DATA was taken although MAIL or RCPT failed: end the
			// message at once.
			if err := c.write([]byte(".\r\n")); err != nil {
				return false
			}
			if _, err := c.readReply(0, false); err != nil || c.lastCode == 421 {
				return false
			}
		}
	}
	return true
}

// finish sends the content (dot-stuffed, line ends made CRLF) and the
// terminator in one write, and reads the reply: its text on 250, else an
// *smtp.SMTPError or the network's error. sent says the terminator left:
// after it, a missing reply does not mean the server lacks the message.
// With next (only under PIPELINING), next's MAIL, RCPT and DATA follow the
// terminator in the same write, as RFC 2920 allows (content may open a
// group of commands); readOpen then reads their replies.
//
// A write cut short (its timeout, ctx closing the connection) may have
// handed the terminator to the network before it stopped in next's
// commands: then sent is true and err is the write's error.
func (c *client) finish(data []byte, next *envelope) (text string, sent bool, err error) {
	c.out = appendDotStuffed(c.out[:0], data)
	end := len(c.out) // just past the terminator
	if next != nil {
		c.out = c.appendOpen(c.out, next.from, next.to, next.utf8)
	}
	if n, err := c.nc.Write(c.out); err != nil {
		// n counts what the network took (over TLS, whole records only:
		// a record cut short cannot be read by the server).
		return "", n >= end, err
	}
	text, err = c.readReply(250, true)
	return text, true, err
}

// reset sends RSET, ending a transaction.
func (c *client) reset() error {
	_, err := c.cmd(250, false, "RSET")
	return err
}

// quit says QUIT and closes the connection, all within the timeout.
func (c *client) quit() error {
	defer c.close()
	_ = c.nc.SetDeadline(time.Now().Add(c.timeout))
	c.arm = false
	c.out = append(c.out[:0], "QUIT\r\n"...)
	if err := c.write(c.out); err != nil {
		return err
	}
	_, err := c.readReplyAt(221, false)
	return err
}

// readReply reads one reply within the timeout. expect is the code wanted:
// three digits for one code, two for a range (25 is 250 to 259), one for a
// class, 0 for any (as net/textproto takes it). A reply with another code
// comes back as an *smtp.SMTPError. On success the text (the lines without
// their codes, joined by "\n") comes back only when keep is set.
func (c *client) readReply(expect int, keep bool) (string, error) {
	c.arm = true
	return c.readReplyAt(expect, keep)
}

// readReplyAt is readReply under the read deadline already set.
func (c *client) readReplyAt(expect int, keep bool) (string, error) {
	code, text, err := readReplyFrom(c.br, &c.text, expect, keep)
	c.lastCode = code
	return text, err
}

// readReplyFrom reads one reply from br, using *buf to put its text
// together; see readReply. Like net/textproto, a line inside a multi-line
// reply that is not a continuation of it is taken whole into the text. A
// final line of just the code ("250") is a reply, as RFC 5321 allows. code
// is 0 on an error other than a reply.
func readReplyFrom(br *bufio.Reader, buf *[]byte, expect int, keep bool) (code int, text string, err error) {
	line, err := readLine(br)
	if err != nil {
		return 0, "", err
	}
	code, more, msg, ok := parseReplyLine(line)
	if !ok {
		return 0, "", fmt.Errorf("smtp: malformed reply %q", line)
	}
	want := matches(code, expect)
	keep = keep || !want
	b := (*buf)[:0]
	if keep {
		b = append(b, msg...)
	}
	total := len(line)
	for more {
		if line, err = readLine(br); err != nil {
			return 0, "", err
		}
		if total += len(line); total > maxReply {
			return 0, "", fmt.Errorf("smtp: reply longer than %d bytes", maxReply)
		}
		code2, more2, msg2, ok := parseReplyLine(line)
		if !ok || code2 != code {
			msg2, more2 = line, true
		}
		more = more2
		if keep {
			b = append(append(b, '\n'), msg2...)
		}
	}
	*buf = b
	if keep {
		text = string(b)
	}
	if !want {
		return code, "", replyError(code, text)
	}
	return code, text, nil
}

// readLine reads a line without its line end (CRLF or LF).
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || err == nil && len(line) > maxReplyLine {
		return nil, fmt.Errorf("smtp: reply line longer than %d bytes", maxReplyLine)
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// parseReplyLine splits a reply line into its code, whether more lines
// follow ("250-"), and its text. ok is false when it is not a reply line.
func parseReplyLine(line []byte) (code int, more bool, msg []byte, ok bool) {
	if len(line) < 3 || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
		return 0, false, nil, false
	}
	for _, d := range line[:3] {
		if d < '0' || d > '9' {
			return 0, false, nil, false
		}
		code = code*10 + int(d-'0')
	}
	if code < 100 {
		return 0, false, nil, false
	}
	if len(line) == 3 {
		return code, false, nil, true
	}
	return code, line[3] == '-', line[4:], true
}

// matches reports whether code is what expect asks for (see readReply).
func matches(code, expect int) bool {
	switch {
	case expect <= 0:
		return true
	case expect < 10:
		return code/100 == expect
	case expect < 100:
		return code/10 == expect
	}
	return code == expect
}

// replyError is a reply as go-smtp's client gives it: an enhanced status
// code (RFC 3463, "5.1.1 ") opening the text is taken off it, and off each
// of its lines.
func replyError(code int, text string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, Message: text}
	word, rest, ok := strings.Cut(text, " ")
	if !ok {
		return e
	}
	enh, ok := parseEnhancedCode(word)
	if !ok {
		return e
	}
	e.EnhancedCode = enh
	e.Message = strings.ReplaceAll(rest, "\n"+word+" ", "\n")
	return e
}

// parseEnhancedCode parses "X.Y.Z", each part one to three digits.
func parseEnhancedCode(s string) (smtp.EnhancedCode, bool) {
	var code smtp.EnhancedCode
	for i := range code {
		part := s
		if i < 2 {
			var ok bool
			if part, s, ok = strings.Cut(s, "."); !ok {
				return smtp.EnhancedCode{}, false
			}
		}
		if len(part) < 1 || len(part) > 3 {
			return smtp.EnhancedCode{}, false
		}
		for j := 0; j < len(part); j++ {
			if part[j] < '0' || part[j] > '9' {
				return smtp.EnhancedCode{}, false
			}
			code[i] = code[i]*10 + int(part[j]-'0')
		}
	}
	return code, true
}

// isReply reports whether err is the server's reply (rather than the
// network's failure).
func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}

// isCode reports whether err is a reply with the code.
func isCode(err error, code int) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code == code
}

// appendDotStuffed appends data as DATA content: line ends made CRLF (a
// bare LF or CR too, so no line end is left for the server to read
// otherwise), a line that starts with '.' given another, a CRLF closing
// the last line, then the terminator ".\r\n".
func appendDotStuffed(dst, data []byte) []byte {
	for len(data) > 0 {
		if data[0] == '.' {
			dst = append(dst, '.')
		}
		line, rest := data, []byte(nil)
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, rest = data[:i], data[i+1:]
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if j := bytes.IndexByte(line, '\r'); j >= 0 {
			// A bare CR ends a line of its own.
			line, rest = line[:j], data[j+1:]
		}
		dst = append(append(dst, line...), '\r', '\n')
		data = rest
	}
	return append(dst, ".\r\n"...)
}
