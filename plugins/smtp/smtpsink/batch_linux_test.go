package smtpsink

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPipelinedRepliesLeaveTogether: against the running sink, the replies
// to pipelined commands arrive in one TCP segment (one write on loopback,
// where Go's connections send each write at once), as Postfix sends them;
// go-smtp alone sent one segment a reply. A lock-step client still gets
// each reply before its next command.
func TestPipelinedRepliesLeaveTogether(t *testing.T) {
	s := start(t, Options{})
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn := c.(*net.TCPConn)
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// exchange writes cmds, reads until want reply lines (the last one
	// final) arrived, and returns them and the data segments they took.
	exchange := func(cmds string, want int) ([]string, uint32) {
		t.Helper()
		before := dataSegmentsIn(t, conn)
		if cmds != "" {
			if _, err := io.WriteString(conn, cmds); err != nil {
				t.Fatal(err)
			}
		}
		var got string
		buf := make([]byte, 4096)
		for strings.Count(got, "\r\n") < want || !lastIsFinal(got) {
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("after %q: %v", got, err)
			}
			got += string(buf[:n])
		}
		return strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n"), dataSegmentsIn(t, conn) - before
	}
	if lines, _ := exchange("", 1); !strings.HasPrefix(lines[0], "220 ") {
		t.Fatalf("greeting %q", lines)
	}
	// Lock step: EHLO alone gets its (multi-line) reply.
	if lines, _ := exchange("EHLO client.example.com\r\n", 1); !strings.Contains(strings.Join(lines, "\n"), "PIPELINING") {
		t.Fatalf("EHLO reply %q does not offer PIPELINING", lines)
	}
	// A pipelined group: three replies, one segment.
	lines, segs := exchange("MAIL FROM:<news@example.com>\r\nRCPT TO:<ada@example.com>\r\nDATA\r\n", 3)
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "250 ") || !strings.HasPrefix(lines[1], "250 ") || !strings.HasPrefix(lines[2], "354 ") {
		t.Fatalf("replies to MAIL, RCPT, DATA: %q", lines)
	}
	if segs != 1 {
		t.Errorf("the three replies came in %d segments, want 1 (one write)", segs)
	}
	// The content, then the next group in the same write: the message's
	// 250 and the next group's replies leave together.
	lines, segs = exchange("Subject: hi\r\n\r\nHello\r\n.\r\nMAIL FROM:<news@example.com>\r\nRCPT TO:<bo@example.com>\r\nDATA\r\n", 4)
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "250 ") || !strings.HasPrefix(lines[3], "354 ") {
		t.Fatalf("replies to the content and the next group: %q", lines)
	}
	if segs != 1 {
		t.Errorf("the four replies came in %d segments, want 1 (one write)", segs)
	}
	if lines, _ := exchange("Subject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n", 2); !strings.HasPrefix(lines[0], "250 ") || !strings.HasPrefix(lines[1], "221 ") {
		t.Fatalf("replies to the content and QUIT: %q", lines)
	}
	if got := s.Accepted(); got != 2 {
		t.Errorf("sink accepted %d messages, want 2", got)
	}
}

// dataSegmentsIn is the data segments conn has received (Linux TCP_INFO).
func dataSegmentsIn(t *testing.T, conn *net.TCPConn) uint32 {
	t.Helper()
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var (
		info *unix.TCPInfo
		ierr error
	)
	if err := raw.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return info.Data_segs_in
}

// lastIsFinal reports whether s ends with a complete final reply line
// ("NNN text", not the "NNN-text" of a multi-line reply's earlier lines).
func lastIsFinal(s string) bool {
	if !strings.HasSuffix(s, "\r\n") {
		return false
	}
	lines := strings.Split(strings.TrimSuffix(s, "\r\n"), "\r\n")
	last := lines[len(lines)-1]
	return len(last) >= 4 && last[3] == ' '
}
