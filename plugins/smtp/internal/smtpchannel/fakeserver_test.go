package smtpchannel

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer is a scripted SMTP server for the client's tests, where
// smtpsink (go-smtp's server, which always offers PIPELINING) cannot go:
// a server without PIPELINING, odd multi-line replies, a 354 after a failed
// RCPT, a 421 in mid-transaction. It also checks how the client writes:
// with PIPELINING, that MAIL, RCPT and DATA come in one write and the
// content with its terminator in another; without, that no command comes
// before the reply to the previous one.
type fakeServer struct {
	t  testing.TB
	ln net.Listener

	// ext are the EHLO keywords offered.
	ext []string
	// reply answers a command line (or "content" after DATA's 354, with
	// the content in data) with reply lines joined by CRLF, "" for the
	// default reply, or "drop" to close the connection without a word.
	// A reply with code 421, or one marked with a leading "!", closes the
	// connection after it.
	reply func(session int, cmd string, data []byte) string

	mu       sync.Mutex
	sessions int
	cmds     []string // every command line, in order
	contents [][]byte // every content received, unstuffed
	problems []string
	conns    []net.Conn
	queued   int
	chained  int // contents followed by MAIL in the same write
}

func startFake(t testing.TB, ext []string, reply func(session int, cmd string, data []byte) string) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, ln: ln, ext: ext, reply: reply}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.sessions++
			n := f.sessions
			f.conns = append(f.conns, nc)
			f.mu.Unlock()
			go f.serve(n, nc)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			_ = c.Close()
		}
	})
	return f
}

// config is a config sending to the server, with a timeout of 5s unless
// extra sets one.
func (f *fakeServer) config(extra string) string {
	if !strings.Contains(extra, "timeout:") {
		extra = "timeout: 5s\n" + extra
	}
	return "host: 127.0.0.1\nport: " + strconv.Itoa(f.ln.Addr().(*net.TCPAddr).Port) + "\ntls: none\n" + extra
}

func (f *fakeServer) problem(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
}

// check fails the test with the problems the server saw.
func (f *fakeServer) check() {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.problems {
		f.t.Error("server: " + p)
	}
}

func (f *fakeServer) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cmds)
}

func (f *fakeServer) received() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.contents)
}

func (f *fakeServer) sessionCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions
}

func (f *fakeServer) pipelining() bool { return slices.Contains(f.ext, "PIPELINING") }

// txState is where a session's transaction is.
type txState struct{ mail, rcpt bool }

// answer is the reply to cmd: the script's, else the default. It moves
// the transaction along.
func (f *fakeServer) answer(session int, cmd string, data []byte, st *txState) string {
	r := ""
	if f.reply != nil {
		r = f.reply(session, cmd, data)
	}
	if r == "" {
		r = f.defaultReply(cmd, st)
	}
	ok := strings.HasPrefix(r, "2")
	switch verb, _, _ := strings.Cut(strings.ToUpper(cmd), " "); verb {
	case "MAIL":
		st.mail, st.rcpt = ok, false
	case "RCPT":
		st.rcpt = st.rcpt || ok
	case "RSET", "CONTENT":
		st.mail, st.rcpt = false, false
	}
	return r
}

func (f *fakeServer) defaultReply(cmd string, st *txState) string {
	verb, _, _ := strings.Cut(strings.ToUpper(cmd), " ")
	switch {
	case verb == "RCPT" && !st.mail:
		return "503 5.5.1 Error: need MAIL command"
	case verb == "DATA" && !st.rcpt:
		return "554 5.5.1 Error: no valid recipients"
	}
	switch verb {
	case "EHLO":
		lines := append([]string{"fake.example.com greets you"}, f.ext...)
		var b strings.Builder
		for i, l := range lines {
			sep := "-"
			if i == len(lines)-1 {
				sep = " "
			}
			b.WriteString("250" + sep + l)
			if i < len(lines)-1 {
				b.WriteString("\r\n")
			}
		}
		return b.String()
	case "HELO":
		return "250 fake.example.com"
	case "MAIL":
		return "250 2.1.0 Ok"
	case "RCPT":
		return "250 2.1.5 Ok"
	case "DATA":
		return "354 End data with <CR><LF>.<CR><LF>"
	case "CONTENT":
		f.mu.Lock()
		f.queued++
		n := f.queued
		f.mu.Unlock()
		return fmt.Sprintf("250 2.0.0 Ok: queued as F%05d", n)
	case "RSET", "NOOP":
		return "250 2.0.0 Ok"
	case "QUIT":
		return "221 2.0.0 Bye"
	}
	return "502 5.5.2 Error: command not recognized"
}

func (f *fakeServer) serve(session int, nc net.Conn) {
	defer nc.Close()
	br := bufio.NewReader(nc)
	var st txState
	write := func(reply string) bool {
		if reply == "drop" {
			return false
		}
		closing := strings.HasPrefix(reply, "421")
		if r, ok := strings.CutPrefix(reply, "!"); ok {
			reply, closing = r, true
		}
		if _, err := io.WriteString(nc, reply+"\r\n"); err != nil {
			return false
		}
		return !closing
	}
	greeting := "220 fake.example.com ESMTP"
	if f.reply != nil {
		if g := f.reply(session, "greeting", nil); g != "" {
			greeting = g
		}
	}
	if !write(greeting) {
		return
	}
	readLine := func() (string, bool) {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", false
		}
		if !strings.HasSuffix(line, "\r\n") {
			f.problem("command %q does not end in CRLF", line)
		}
		line = strings.TrimRight(line, "\r\n")
		f.mu.Lock()
		f.cmds = append(f.cmds, line)
		f.mu.Unlock()
		return line, true
	}
	// lockStep checks that nothing follows a command before its reply.
	lockStep := func(cmd string) {
		if f.pipelining() {
			return
		}
		if br.Buffered() > 0 {
			f.problem("without PIPELINING, more came with %q before its reply", cmd)
			return
		}
		_ = nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := br.Peek(1); err == nil {
			f.problem("without PIPELINING, more came after %q before its reply", cmd)
		}
		_ = nc.SetReadDeadline(time.Time{})
	}
	for {
		cmd, ok := readLine()
		if !ok {
			return
		}
		verb, _, _ := strings.Cut(strings.ToUpper(cmd), " ")
		batch := []string{cmd}
		if verb == "MAIL" && f.pipelining() {
			// RCPT and DATA must have come in the same write.
			if !bytes.Contains(peekBuffered(br), []byte("\r\nDATA\r\n")) {
				f.problem("with PIPELINING, RCPT and DATA did not come with %q", cmd)
			}
			for range 2 {
				_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
				next, ok := readLine()
				_ = nc.SetReadDeadline(time.Time{})
				if !ok {
					f.problem("with PIPELINING, the client waited for the reply to %q", cmd)
					return
				}
				batch = append(batch, next)
			}
		} else {
			lockStep(cmd)
		}
		var replies []string
		data := false
		for _, c := range batch {
			r := f.answer(session, c, nil, &st)
			replies = append(replies, r)
			if r == "drop" || strings.HasPrefix(r, "421") || strings.HasPrefix(r, "!") {
				break
			}
			data = strings.EqualFold(c, "DATA") && strings.HasPrefix(r, "354")
		}
		for _, r := range replies {
			if !write(r) {
				return
			}
		}
		if verb == "QUIT" {
			return
		}
		if !data {
			continue
		}
		content, ok := f.readContent(br)
		if !ok {
			return
		}
		if !write(f.answer(session, "content", content, &st)) {
			return
		}
	}
}

// readContent reads DATA content up to the terminator, unstuffed, and
// checks it came in one write with the terminator.
func (f *fakeServer) readContent(br *bufio.Reader) ([]byte, bool) {
	if _, err := br.Peek(1); err != nil {
		return nil, false
	}
	if buf := peekBuffered(br); len(buf) < 4000 && !bytes.Contains(buf, []byte("\r\n.\r\n")) && !bytes.HasPrefix(buf, []byte(".\r\n")) {
		f.problem("the content came without its terminator in the same write: %q", buf)
	}
	content, err := io.ReadAll(textproto.NewReader(br).DotReader())
	if err != nil {
		return nil, false
	}
	f.mu.Lock()
	f.contents = append(f.contents, content)
	if bytes.HasPrefix(peekBuffered(br), []byte("MAIL FROM:")) {
		f.chained++
	}
	f.mu.Unlock()
	return content, true
}

// chainedCount is how many contents came with the next MAIL after them.
func (f *fakeServer) chainedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.chained
}

func peekBuffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}
