package smtpsink

import (
	"net"
	"sync"
)

// batchingListener gives the server connections that send its replies as
// Postfix's smtpd does: a reply waits in a buffer until the server must
// read more of the client's input (or closes the connection), so the
// replies to a client's pipelined commands (RFC 2920) leave in one write.
// Postfix's smtpd writes replies to double-buffered streams, whose output
// "flushing is delayed until the read buffer must be refilled" (Postfix
// vstream(3)); go-smtp alone flushes each reply as it goes. A client that
// waits for each reply before its next command sees no difference: the
// server reads right after every reply.
type batchingListener struct{ net.Listener }

func (l batchingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &replyBatcher{Conn: c}, nil
}

// replyBatcher is a server connection whose writes wait until its next
// Read or Close. A write error is returned by that Read (or by the next
// Write), as a buffered stream's would be.
type replyBatcher struct {
	net.Conn
	mu  sync.Mutex
	out []byte
	err error
}

func (c *replyBatcher) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.out = append(c.out, p...)
	return len(p), nil
}

// flush writes what waits.
func (c *replyBatcher) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || len(c.out) == 0 {
		return c.err
	}
	_, c.err = c.Conn.Write(c.out)
	c.out = c.out[:0]
	return c.err
}

func (c *replyBatcher) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// Close sends what waits, then closes: the replies the server gave before
// closing still reach the client, as they did when each left at once.
func (c *replyBatcher) Close() error {
	_ = c.flush()
	return c.Conn.Close()
}
