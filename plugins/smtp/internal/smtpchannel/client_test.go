package smtpchannel

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/cohortd/cohort/plugins/smtp/smtpsink"
	"github.com/cohortd/cohort/sdk"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		expect int
		keep   bool
		code   int
		text   string
		reply  *smtp.SMTPError // the reply error wanted
		broken bool            // an error that is not a reply
	}{
		{name: "one line", in: "250 OK\r\n", expect: 250, keep: true, code: 250, text: "OK"},
		{name: "text not kept", in: "250 OK\r\n", expect: 250, code: 250, text: ""},
		{name: "bare LF", in: "250 OK\n", expect: 250, keep: true, code: 250, text: "OK"},
		{name: "code alone", in: "250\r\n", expect: 250, keep: true, code: 250, text: ""},
		{name: "multi-line", in: "250-first\r\n250-second\r\n250 last\r\n", expect: 250, keep: true, code: 250, text: "first\nsecond\nlast"},
		{name: "enhanced code kept on success", in: "250 2.0.0 Ok: queued as X1\r\n", expect: 250, keep: true, code: 250, text: "2.0.0 Ok: queued as X1"},
		{name: "range", in: "251 2.1.5 forwarded\r\n", expect: 25, code: 251},
		{name: "any", in: "334 VXNlcm5hbWU6\r\n", expect: 0, keep: true, code: 334, text: "VXNlcm5hbWU6"},
		{name: "class", in: "235 2.7.0 ok\r\n", expect: 2, code: 235},
		{name: "rejected", in: "550 5.1.1 no such user\r\n", expect: 25, code: 550,
			reply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}},
		{name: "rejected multi-line", in: "550-5.1.1 no such user\r\n550 5.1.1 check the address\r\n", expect: 25, code: 550,
			reply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user\ncheck the address"}},
		{name: "421 multi-line", in: "421-4.4.2 idle\r\n421 4.4.2 closing\r\n", expect: 250, code: 421,
			reply: &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "idle\nclosing"}},
		{name: "no enhanced code", in: "554 refused\r\n", expect: 250, code: 554,
			reply: &smtp.SMTPError{Code: 554, Message: "refused"}},
		{name: "enhanced code alone", in: "451 4.3.0\r\n", expect: 250, code: 451,
			reply: &smtp.SMTPError{Code: 451, Message: "4.3.0"}},
		{name: "two-part code", in: "554 5.6 refused\r\n", expect: 250, code: 554,
			reply: &smtp.SMTPError{Code: 554, Message: "5.6 refused"}},
		{name: "signed code", in: "554 +5.6.0 refused\r\n", expect: 250, code: 554,
			reply: &smtp.SMTPError{Code: 554, Message: "+5.6.0 refused"}},
		{name: "long part", in: "554 5.6.0000 refused\r\n", expect: 250, code: 554,
			reply: &smtp.SMTPError{Code: 554, Message: "5.6.0000 refused"}},
		{name: "foreign line taken whole", in: "250-a\r\nnot a reply\r\n251 b\r\n250 c\r\n", expect: 250, keep: true, code: 250, text: "a\nnot a reply\n251 b\nc"},
		{name: "short", in: "25 x\r\n", expect: 250, broken: true},
		{name: "not digits", in: "2x0 x\r\n", expect: 250, broken: true},
		{name: "bad separator", in: "250+x\r\n", expect: 250, broken: true},
		{name: "code below 100", in: "099 x\r\n", expect: 0, broken: true},
		{name: "cut short", in: "250-a\r\n250-b\r\n", expect: 250, broken: true},
		{name: "no line end", in: "250 OK", expect: 250, broken: true},
		{name: "line too long", in: "250 " + strings.Repeat("x", maxReplyLine) + "\r\n", expect: 250, broken: true},
		{name: "reply too long", in: strings.Repeat("250-"+strings.Repeat("x", 1000)+"\r\n", maxReply/1000+1) + "250 x\r\n", expect: 250, broken: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf []byte
			code, text, err := readReplyFrom(bufio.NewReader(strings.NewReader(tt.in)), &buf, tt.expect, tt.keep)
			switch {
			case tt.broken:
				if err == nil || isReply(err) {
					t.Fatalf("got code %d text %q err %v, want an error that is not a reply", code, text, err)
				}
				return
			case tt.reply != nil:
				var se *smtp.SMTPError
				if !errors.As(err, &se) || *se != *tt.reply {
					t.Fatalf("got %#v, want %#v", err, tt.reply)
				}
			case err != nil:
				t.Fatalf("got %v", err)
			}
			if code != tt.code || text != tt.text {
				t.Errorf("got code %d text %q, want %d %q", code, text, tt.code, tt.text)
			}
		})
	}
}

// refSMTPError is go-smtp v0.25.1's toSMTPErr (client.go), which the
// client's replies must match.
func refSMTPError(code int, msg string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, Message: msg}
	parts := strings.SplitN(msg, " ", 2)
	if len(parts) != 2 {
		return e
	}
	sub := strings.Split(parts[0], ".")
	if len(sub) != 3 {
		return e
	}
	var enh smtp.EnhancedCode
	for i, p := range sub {
		n, err := strconv.Atoi(p)
		if err != nil {
			return e
		}
		enh[i] = n
	}
	e.EnhancedCode = enh
	e.Message = strings.ReplaceAll(parts[1], "\n"+parts[0]+" ", "\n")
	return e
}

// FuzzReadReply checks the reply reader against net/textproto, which
// go-smtp's client reads replies with, and the enhanced codes against
// go-smtp's parser, where they are meant to agree: the client also takes
// a line of the code alone ("250"), as RFC 5321 allows, parses only
// enhanced codes of digits (no signs, at most three a part), and gives up
// on lines without a line end or too long.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"250 OK\r\n", "250-a\r\n250 b\r\n", "550-5.1.1 a\r\n550 5.1.1 b\r\n", "250-a\r\nxx\r\n250 b\r\n",
		"421 4.4.2 bye\r\n", "354 go\n", "250-a\r\n251-b\r\n250 c\r\n", "2.0 x\r\n", "250 5.1.1\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var buf []byte
		code, text, err := readReplyFrom(bufio.NewReader(bytes.NewReader(in)), &buf, 0, true)
		refCode, refText, refErr := textproto.NewReader(bufio.NewReader(bytes.NewReader(in))).ReadResponse(0)
		comparable := bytes.HasSuffix(in, []byte("\n")) && len(in) < maxReply
		for line := range bytes.SplitSeq(in, []byte("\n")) {
			line = bytes.TrimSuffix(line, []byte("\r"))
			comparable = comparable && len(line) != 3 && len(line) < maxReplyLine-2
		}
		if !comparable {
			return
		}
		if (err == nil) != (refErr == nil) || err == nil && (code != refCode || text != refText) {
			t.Fatalf("%q: got %d %q %v, textproto %d %q %v", in, code, text, err, refCode, refText, refErr)
		}
		if err != nil {
			return
		}
		got, want := replyError(code, text), refSMTPError(code, text)
		word, _, _ := strings.Cut(text, " ")
		looser := strings.ContainsAny(word, "+-")
		for p := range strings.SplitSeq(word, ".") {
			looser = looser || len(p) > 3
		}
		if *got != *want && !(looser && got.EnhancedCode == smtp.EnhancedCode{}) {
			t.Fatalf("%q: got %#v, go-smtp %#v", in, got, want)
		}
	})
}

func TestAppendDotStuffed(t *testing.T) {
	for in, want := range map[string]string{
		"":                       ".\r\n",
		"a\r\nb\r\n":             "a\r\nb\r\n.\r\n",
		"a\r\nb":                 "a\r\nb\r\n.\r\n",
		".a\r\n.\r\n..b\r\n":     "..a\r\n..\r\n...b\r\n.\r\n",
		"a\n.\nb\n":              "a\r\n..\r\nb\r\n.\r\n",
		"a\r.\rb":                "a\r\n..\r\nb\r\n.\r\n",
		"x\r\n.":                 "x\r\n..\r\n.\r\n",
		"\r\n\r\n":               "\r\n\r\n.\r\n",
		"a\r\r\n":                "a\r\n\r\n.\r\n",
		"no dot. in .the middle": "no dot. in .the middle\r\n.\r\n",
	} {
		if got := string(appendDotStuffed([]byte("prefix:"), []byte(in))); got != "prefix:"+want {
			t.Errorf("appendDotStuffed(%q) = %q, want %q", in, got, "prefix:"+want)
		}
	}
}

// FuzzAppendDotStuffed checks that the content a server reads back is the
// data with its line ends made one kind, and that the stream ends exactly
// at the terminator, whatever the data.
func FuzzAppendDotStuffed(f *testing.F) {
	for _, s := range []string{"", ".", "a\r\n.\r\nb", "\r\r\n\n.", ".\n.\r.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out := appendDotStuffed(nil, data)
		for i, c := range out {
			if c == '\n' && (i == 0 || out[i-1] != '\r') || c == '\r' && (i+1 == len(out) || out[i+1] != '\n') {
				t.Fatalf("%q: bare CR or LF at %d of %q", data, i, out)
			}
		}
		br := bufio.NewReader(io.MultiReader(bytes.NewReader(out), strings.NewReader("MAIL")))
		got, err := io.ReadAll(textproto.NewReader(br).DotReader())
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if rest, _ := io.ReadAll(br); string(rest) != "MAIL" {
			t.Fatalf("%q: after the content the server reads %q", data, rest)
		}
		want := strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n")
		if want != "" && !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		if string(got) != want {
			t.Fatalf("%q: the server reads %q, want %q", data, got, want)
		}
	})
}

// TestDotStuffingArrives sends content with lines that are or start with
// dots through go-smtp's server.
func TestDotStuffingArrives(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Record: true})
	c := configure(t, sinkConfig(sink, "connections: 1\n"))
	m := message("dots", "a@example.com")
	m.HTML = ""
	m.Text = ".leading dot\n..two dots\n.\nafter a lone dot\n.\n"
	env, err := buildMessage(&m, fixedNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(env.data, []byte("\r\n.\r\n")) {
		t.Fatalf("the content has no lone dot line to stuff:\n%s", env.data)
	}
	next := message("next", "a@example.com")
	got := send(t, c, m, next)
	for _, key := range []string{"dots", "next"} {
		if got[key].Status != sdk.Accepted {
			t.Fatalf("%s: %s", key, resultString(got[key]))
		}
	}
	arrived, ok := sink.Message("dots")
	if !ok {
		t.Fatal("the message did not arrive")
	}
	if !bytes.Equal(arrived.Raw, env.data) {
		t.Errorf("arrived:\n%q\nwant:\n%q", arrived.Raw, env.data)
	}
	if body := readQP(t, bytes.NewReader(arrived.Body)); body != strings.ReplaceAll(m.Text, "\n", "\r\n") {
		t.Errorf("body %q", body)
	}
	if _, ok := sink.Message("next"); !ok || sink.Sessions() != 1 {
		t.Errorf("the next message on the connection: arrived %v, %d sessions", ok, sink.Sessions())
	}
}

// TestPipelined checks the writes with PIPELINING (the fake server
// checks them) and that each reply is read in order.
func TestPipelined(t *testing.T) {
	fs := startFake(t, []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"}, nil)
	c := configure(t, fs.config("connections: 1\n"))
	var msgs []sdk.Message
	for i := range 5 {
		msgs = append(msgs, message("p"+strconv.Itoa(i), "a@example.com"))
	}
	got := send(t, c, msgs...)
	for i, m := range msgs {
		if r := got[m.Key]; r.Status != sdk.Accepted || r.ProviderID != "F0000"+strconv.Itoa(i+1) {
			t.Errorf("%s: %s, want accepted as F0000%d", m.Key, resultString(r), i+1)
		}
	}
	fs.check()
	if n := len(fs.received()); n != 5 {
		t.Errorf("%d messages arrived, want 5", n)
	}
	if n := fs.chainedCount(); n != 4 {
		t.Errorf("%d contents came with the next MAIL, want 4 (all but the last)", n)
	}
	if cmds := fs.commands(); !slices.Contains(cmds, "MAIL FROM:<news@example.com>") || !slices.Contains(cmds, "RCPT TO:<a@example.com>") {
		t.Errorf("commands: %q", cmds)
	}
}

// TestLockStep sends to a server without PIPELINING: every command waits
// for its reply (the fake server checks), failures included.
func TestLockStep(t *testing.T) {
	fs := startFake(t, []string{"8BITMIME", "ENHANCEDSTATUSCODES"}, func(_ int, cmd string, _ []byte) string {
		switch cmd {
		case "MAIL FROM:<blocked@example.com>":
			return "553 5.7.1 sender rejected"
		case "RCPT TO:<gone@example.com>":
			return "550 5.1.1 no such user"
		}
		return ""
	})
	c := configure(t, fs.config("connections: 1\n"))
	blocked := message("blocked", "a@example.com")
	blocked.From = "blocked@example.com"
	got := send(t, c, message("l1", "a@example.com"), blocked, message("gone", "gone@example.com"), message("l2", "a@example.com"))
	want := map[string]sdk.ResultStatus{"l1": sdk.Accepted, "blocked": sdk.Permanent, "gone": sdk.Suppress, "l2": sdk.Accepted}
	for key, status := range want {
		if got[key].Status != status {
			t.Errorf("%s: %s, want %v", key, resultString(got[key]), status)
		}
	}
	fs.check()
	if n := fs.sessionCount(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	// Only the failed RCPT opened a transaction to RSET.
	if n := countPrefix(fs.commands(), "RSET"); n != 1 {
		t.Errorf("%d RSETs, want 1: %q", n, fs.commands())
	}
}

func countPrefix(cmds []string, prefix string) int {
	n := 0
	for _, c := range cmds {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

// TestHELOFallback: a server that rejects EHLO gets HELO, and lock step.
func TestHELOFallback(t *testing.T) {
	fs := startFake(t, nil, func(_ int, cmd string, _ []byte) string {
		if strings.HasPrefix(cmd, "EHLO ") {
			return "502 5.5.1 EHLO not implemented"
		}
		return ""
	})
	c := configure(t, fs.config("helo: mailer.example.com\n"))
	if r := send(t, c, message("h", "a@example.com"))["h"]; r.Status != sdk.Accepted {
		t.Fatalf("%s", resultString(r))
	}
	fs.check()
	if cmds := fs.commands(); len(cmds) < 2 || cmds[0] != "EHLO mailer.example.com" || cmds[1] != "HELO mailer.example.com" {
		t.Errorf("commands %q, want EHLO then HELO", cmds)
	}
}

// TestMultiLineReplies: a multi-line greeting, multi-line replies to every
// command, the queue id on the last line of the final one, and a
// multi-line rejection whose lines all reach the reason.
func TestMultiLineReplies(t *testing.T) {
	for _, ext := range [][]string{{"PIPELINING", "ENHANCEDSTATUSCODES"}, {"ENHANCEDSTATUSCODES"}} {
		t.Run(strings.Join(ext, "+"), func(t *testing.T) {
			fs := startFake(t, ext, func(_ int, cmd string, _ []byte) string {
				switch {
				case cmd == "greeting":
					return "220-fake.example.com ESMTP\r\n220-no UCE\r\n220 welcome"
				case strings.HasPrefix(cmd, "MAIL"):
					return "250-2.1.0 sender\r\n250 2.1.0 Ok"
				case cmd == "RCPT TO:<gone@example.com>":
					return "550-5.1.1 no such user here\r\n550 5.1.1 see https://example.com/bounce"
				case strings.HasPrefix(cmd, "RCPT"):
					return "250-2.1.5 recipient\r\n250 2.1.5 Ok"
				case cmd == "DATA":
					return "354-go ahead\r\n354 end with <CRLF>.<CRLF>"
				case cmd == "content":
					return "250-2.0.0 thanks\r\n250 2.0.0 Ok: queued as ML42"
				}
				return ""
			})
			c := configure(t, fs.config("connections: 1\n"))
			got := send(t, c, message("ok", "a@example.com"), message("gone", "gone@example.com"))
			if r := got["ok"]; r.Status != sdk.Accepted || r.ProviderID != "ML42" {
				t.Errorf("ok: %s, want accepted as ML42", resultString(r))
			}
			if r := got["gone"]; r.Status != sdk.Suppress || r.Code != "550" ||
				!strings.Contains(r.Reason, "550 5.1.1 no such user here\nsee https://example.com/bounce") {
				t.Errorf("gone: %s", resultString(r))
			}
			fs.check()
		})
	}
}

// TestPipelinedMailRejected: when MAIL fails, the replies to RCPT and DATA
// are read, MAIL's reply is the outcome, and the connection carries on.
func TestPipelinedMailRejected(t *testing.T) {
	fs := startFake(t, []string{"PIPELINING", "ENHANCEDSTATUSCODES"}, func(_ int, cmd string, _ []byte) string {
		if cmd == "MAIL FROM:<blocked@example.com>" {
			return "553 5.7.1 sender rejected"
		}
		return ""
	})
	c := configure(t, fs.config("connections: 1\n"))
	blocked := message("blocked", "a@example.com")
	blocked.From = "blocked@example.com"
	blocked2 := blocked
	blocked2.Key = "blocked-2"
	// blocked's MAIL goes alone, blocked-2's with first's content.
	got := send(t, c, blocked, message("first", "a@example.com"), blocked2, message("after", "a@example.com"))
	for _, key := range []string{"blocked", "blocked-2"} {
		if r := got[key]; r.Status != sdk.Permanent || r.Code != "553" || !strings.Contains(r.Reason, "MAIL FROM <blocked@example.com>: 553 5.7.1 sender rejected") {
			t.Errorf("%s: %s", key, resultString(r))
		}
	}
	for _, key := range []string{"first", "after"} {
		if r := got[key]; r.Status != sdk.Accepted {
			t.Errorf("%s: %s", key, resultString(r))
		}
	}
	fs.check()
	if n := fs.sessionCount(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	if n := len(fs.received()); n != 2 {
		t.Errorf("%d contents arrived, want 2", n)
	}
	if n := fs.chainedCount(); n != 1 {
		t.Errorf("%d contents came with the next MAIL, want 1", n)
	}
	if n := countPrefix(fs.commands(), "RSET"); n != 0 {
		t.Errorf("%d RSETs after a failed MAIL, want none", n)
	}
}

// TestPipelinedRcptRejected: RCPT's reply is the outcome, DATA's reply is
// read, the transaction is RSET and the next message goes on the same
// connection.
func TestPipelinedRcptRejected(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Record: true})
	sink.SetFaults(smtpsink.Faults{RejectRcpt: []string{"gone@example.com"}, TempFailRcpt: []string{"busy@example.com"}, TempFailCode: 452})
	c := configure(t, sinkConfig(sink, "connections: 1\n"))
	got := send(t, c, message("first", "a@example.com"), message("gone", "gone@example.com"), message("busy", "busy@example.com"), message("after", "a@example.com"))
	if r := got["first"]; r.Status != sdk.Accepted {
		t.Errorf("first: %s", resultString(r))
	}
	if r := got["gone"]; r.Status != sdk.Suppress || r.Code != "550" {
		t.Errorf("gone: %s", resultString(r))
	}
	if r := got["busy"]; r.Status != sdk.Retryable || r.Code != "452" || r.RetryAfter != retryAfter {
		t.Errorf("busy: %s", resultString(r))
	}
	if r := got["after"]; r.Status != sdk.Accepted {
		t.Errorf("after: %s", resultString(r))
	}
	if sink.Sessions() != 1 || sink.Arrived() != 2 {
		t.Errorf("%d sessions and %d arrivals, want 1 and 2", sink.Sessions(), sink.Arrived())
	}
}

// TestPipelined354AfterFailedRcpt: a server that answers DATA with 354
// although RCPT failed gets the terminator alone, then RSET; RCPT's reply
// is the outcome.
func TestPipelined354AfterFailedRcpt(t *testing.T) {
	fs := startFake(t, []string{"PIPELINING", "ENHANCEDSTATUSCODES"}, func(_ int, cmd string, data []byte) string {
		switch cmd {
		case "RCPT TO:<gone@example.com>":
			return "550 5.1.1 no such user"
		case "DATA":
			return "354 go ahead"
		case "content":
			if len(data) == 0 {
				return "554 5.5.1 no valid recipients"
			}
		}
		return ""
	})
	c := configure(t, fs.config("connections: 1\n"))
	got := send(t, c, message("first", "a@example.com"), message("gone", "gone@example.com"), message("after", "a@example.com"))
	if r := got["gone"]; r.Status != sdk.Suppress || r.Code != "550" {
		t.Errorf("gone: %s", resultString(r))
	}
	for _, key := range []string{"first", "after"} {
		if r := got[key]; r.Status != sdk.Accepted {
			t.Errorf("%s: %s", key, resultString(r))
		}
	}
	fs.check()
	if rc := fs.received(); len(rc) != 3 || len(rc[0]) == 0 || len(rc[1]) != 0 || len(rc[2]) == 0 {
		t.Errorf("contents %q, want the first message, an empty one, then the last message", rc)
	}
	cmds := fs.commands()
	if i := slices.Index(cmds, "RSET"); i < 0 || i+1 >= len(cmds) || !strings.HasPrefix(cmds[i+1], "MAIL FROM") {
		t.Errorf("commands %q, want RSET before the next MAIL", cmds)
	}
	if n := fs.sessionCount(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
}

// Test421ClosesConnection: a 421 to RCPT is retryable and the connection
// is not used again.
func Test421ClosesConnection(t *testing.T) {
	fs := startFake(t, []string{"PIPELINING", "ENHANCEDSTATUSCODES"}, func(_ int, cmd string, _ []byte) string {
		if cmd == "RCPT TO:<closing@example.com>" {
			return "421 4.3.2 shutting down"
		}
		return ""
	})
	c := configure(t, fs.config("connections: 1\n"))
	got := send(t, c, message("closing", "closing@example.com"), message("after", "a@example.com"))
	if r := got["closing"]; r.Status != sdk.Retryable || r.Code != "421" || r.RetryAfter != retryAfter {
		t.Errorf("closing: %s", resultString(r))
	}
	if r := got["after"]; r.Status != sdk.Accepted {
		t.Errorf("after: %s", resultString(r))
	}
	fs.check()
	if n := fs.sessionCount(); n != 2 {
		t.Errorf("%d sessions, want 2: a connection that got 421 is done", n)
	}
	if n := countPrefix(fs.commands(), "RSET"); n != 0 {
		t.Errorf("RSET sent on a connection after 421")
	}
}

// TestStale421IsRetried: a reused connection whose MAIL gets 421 (the
// relay's idle timeout) is replaced and the message sent on a new one.
func TestStale421IsRetried(t *testing.T) {
	var idle atomic.Bool
	fs := startFake(t, []string{"PIPELINING", "ENHANCEDSTATUSCODES"}, func(session int, cmd string, _ []byte) string {
		if session == 1 && idle.Load() && strings.HasPrefix(cmd, "MAIL") {
			return "421 4.4.2 idle too long"
		}
		return ""
	})
	c := configure(t, fs.config("connections: 1\n"))
	if r := send(t, c, message("first", "a@example.com"))["first"]; r.Status != sdk.Accepted {
		t.Fatalf("first: %s", resultString(r))
	}
	idle.Store(true)
	if r := send(t, c, message("second", "a@example.com"))["second"]; r.Status != sdk.Accepted {
		t.Errorf("second: %s, want accepted on a new connection", resultString(r))
	}
	fs.check()
	if n := fs.sessionCount(); n != 2 {
		t.Errorf("%d sessions, want 2", n)
	}
	if n := len(fs.received()); n != 2 {
		t.Errorf("%d contents, want 2", n)
	}
}

// TestDroppedAfterTerminatorIsUnknown: the relay closes the connection
// once the terminator arrived: unknown, and the next message goes on a new
// connection.
func TestDroppedAfterTerminatorIsUnknown(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Record: true})
	sink.SetFaults(smtpsink.Faults{DropRcpt: []string{"drop@example.com"}})
	c := configure(t, sinkConfig(sink, "connections: 1\n"))
	got := send(t, c, message("drop", "drop@example.com"), message("after", "a@example.com"))
	if r := got["drop"]; r.Status != sdk.OutcomeUnknown || !strings.Contains(r.Reason, "the relay may have it") {
		t.Errorf("drop: %s", resultString(r))
	}
	if r := got["after"]; r.Status != sdk.Accepted {
		t.Errorf("after: %s", resultString(r))
	}
	if m, ok := sink.Message("drop"); !ok || !m.Dropped {
		t.Errorf("the dropped message did not arrive")
	}
	if n := sink.Sessions(); n != 2 {
		t.Errorf("%d sessions, want 2", n)
	}
	if n := sink.KeyCounts()["after"]; n != 1 {
		t.Errorf("after arrived %d times, want once", n)
	}
}

// keyOf is the X-Cohort-Key of a content the fake server received.
func keyOf(data []byte) string {
	_, rest, _ := bytes.Cut(data, []byte("X-Cohort-Key: "))
	key, _, _ := bytes.Cut(rest, []byte("\n"))
	return string(bytes.TrimSuffix(key, []byte("\r")))
}

// TestChainedAfterFailedContent: the next message's MAIL, RCPT and DATA
// went with content the relay refused (kept the connection), lost the
// connection over (421, closed after the reply, no reply in time) or
// dropped the connection after: the content's own outcome is as when it
// goes alone, and the next message goes through, once, on the same
// connection or a new one.
func TestChainedAfterFailedContent(t *testing.T) {
	tests := []struct {
		name     string
		reply    string // to first's content; "slow" waits past the timeout
		status   sdk.ResultStatus
		code     string
		reason   string
		sessions int
	}{
		{"refused", "554 5.6.0 message refused", sdk.Permanent, "554", "end of DATA: 554 5.6.0 message refused", 1},
		{"temporary", "451 4.3.0 try again", sdk.Retryable, "451", "451 4.3.0 try again", 1},
		{"421", "421 4.3.2 shutting down", sdk.Retryable, "421", "421 4.3.2 shutting down", 2},
		{"closed after 250", "!250 2.0.0 Ok: queued as LAST", sdk.Accepted, "", "", 2},
		{"dropped", "drop", sdk.OutcomeUnknown, "", "the relay may have it", 2},
		{"timeout", "slow", sdk.OutcomeUnknown, "", "timeout", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			fs := startFake(t, []string{"PIPELINING", "ENHANCEDSTATUSCODES"}, func(session int, cmd string, data []byte) string {
				if cmd != "content" || keyOf(data) != "first" {
					return ""
				}
				if tt.reply == "slow" {
					<-release
					return "drop"
				}
				return tt.reply
			})
			c := configure(t, fs.config("connections: 1\ntimeout: 300ms\n"))
			got := send(t, c, message("first", "a@example.com"), message("second", "a@example.com"))
			if r := got["first"]; r.Status != tt.status || r.Code != tt.code || !strings.Contains(r.Reason, tt.reason) {
				t.Errorf("first: %s; want %v code %q reason containing %q", resultString(r), tt.status, tt.code, tt.reason)
			}
			if r := got["second"]; r.Status != sdk.Accepted {
				t.Errorf("second: %s", resultString(r))
			}
			fs.check()
			if n := fs.sessionCount(); n != tt.sessions {
				t.Errorf("%d sessions, want %d", n, tt.sessions)
			}
			if n := fs.chainedCount(); n != 1 {
				t.Errorf("%d contents came with the next MAIL, want 1", n)
			}
			n := 0
			for _, data := range fs.received() {
				if keyOf(data) == "second" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("second arrived %d times, want once", n)
			}
		})
	}
}

// TestChainedWithinLimits: no chaining past max_per_connection, nor of a
// message the relay cannot take (SMTPUTF8 not offered).
func TestChainedWithinLimits(t *testing.T) {
	fs := startFake(t, []string{"PIPELINING", "8BITMIME"}, nil)
	c := configure(t, fs.config("connections: 1\nmax_per_connection: 2\n"))
	var msgs []sdk.Message
	for i := range 5 {
		msgs = append(msgs, message("m"+strconv.Itoa(i), "a@example.com"))
	}
	msgs[1].To = "zoë@example.com"
	got := send(t, c, msgs...)
	for _, m := range msgs {
		want := sdk.Accepted
		if m.Key == "m1" {
			want = sdk.Permanent
		}
		if r := got[m.Key]; r.Status != want {
			t.Errorf("%s: %s, want %v", m.Key, resultString(r), want)
		}
	}
	if r := got["m1"]; !strings.Contains(r.Reason, "SMTPUTF8") {
		t.Errorf("m1: %s", resultString(r))
	}
	fs.check()
	// m0 and the refused m1 fill the first connection; m2+m3 the second
	// (chained), m4 the third.
	if n := fs.sessionCount(); n != 3 {
		t.Errorf("%d sessions, want 3", n)
	}
	if n := fs.chainedCount(); n != 1 {
		t.Errorf("%d contents came with the next MAIL, want 1", n)
	}
	for _, cmd := range fs.commands() {
		if strings.Contains(cmd, "zo") {
			t.Errorf("the relay was offered %q", cmd)
		}
	}
}

// cutAfterTerminator is a connection whose write carrying a content's
// terminator and the next message's MAIL stops right after the terminator,
// as a write cut short by its timeout, or by ctx closing the connection,
// may.
type cutAfterTerminator struct{ net.Conn }

func (c cutAfterTerminator) Write(p []byte) (int, error) {
	i := bytes.Index(p, []byte("\r\n.\r\nMAIL FROM:"))
	if i < 0 {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:i+len("\r\n.\r\n")])
	if err == nil {
		err = os.ErrDeadlineExceeded
	}
	return n, err
}

// TestChainedWriteCutAfterTerminator: the write of first's content with
// second's MAIL, RCPT and DATA fails after the terminator left. The relay
// has first, so first is unknown (a retry could deliver it twice); second,
// whose content never left, goes once on a new connection.
func TestChainedWriteCutAfterTerminator(t *testing.T) {
	fs := startFake(t, []string{"PIPELINING", "ENHANCEDSTATUSCODES"}, nil)
	c := configure(t, fs.config("connections: 1\n"))
	p := c.st.pool
	connect := p.connect
	p.connect = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := connect(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return cutAfterTerminator{nc}, nil
	}
	got := send(t, c, message("first", "a@example.com"), message("second", "a@example.com"))
	if r := got["first"]; r.Status != sdk.OutcomeUnknown || !strings.Contains(r.Reason, "the relay may have it") {
		t.Errorf("first: %s, want unknown: its terminator reached the relay", resultString(r))
	}
	if r := got["second"]; r.Status != sdk.Accepted {
		t.Errorf("second: %s", resultString(r))
	}
	// The first session may still be reading what reached it.
	counts := map[string]int{}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		clear(counts)
		for _, data := range fs.received() {
			counts[keyOf(data)]++
		}
		if counts["first"] > 0 || time.Now().After(deadline) {
			break
		}
	}
	if counts["first"] != 1 || counts["second"] != 1 {
		t.Errorf("arrivals %v, want first and second once each", counts)
	}
	fs.check()
	if n := fs.sessionCount(); n != 2 {
		t.Errorf("%d sessions, want 2", n)
	}
}

// TestStuckQuitEndsWithCtx: a used-up connection is retired with QUIT; a
// relay that never answers it holds Send no longer than ctx, not for the
// whole timeout.
func TestStuckQuitEndsWithCtx(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	fs := startFake(t, []string{"PIPELINING"}, func(_ int, cmd string, _ []byte) string {
		if cmd == "QUIT" {
			<-release
			return "drop"
		}
		return ""
	})
	c := configure(t, fs.config("connections: 1\nmax_per_connection: 1\ntimeout: 20s\n"))
	// Long enough for the message to go through on a loaded machine.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	results, err := c.Send(ctx, []sdk.Message{message("only", "a@example.com")})
	elapsed := time.Since(start)
	if err != nil || len(results) != 1 || results[0].Status != sdk.Accepted {
		t.Fatalf("Send = %v, %v; want the message accepted", results, err)
	}
	if elapsed > 10*time.Second {
		t.Errorf("Send took %v: QUIT outlived ctx", elapsed)
	}
	fs.check()
	if cmds := fs.commands(); cmds[len(cmds)-1] != "QUIT" {
		t.Errorf("commands %q, want QUIT last", cmds)
	}
}
