//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package sendgridchannel

import "syscall"

// idleCheckSupported: idleConnUsable checks connections here.
const idleCheckSupported = true

// idleConnUsable reports whether an idle connection may carry a request:
// a non-blocking MSG_PEEK read finds nothing to read and no error. Data,
// EOF or an error on a connection without a request in flight mean the
// server has closed it, is closing it, or broke the protocol. One syscall,
// no wait; it reads nothing.
func idleConnUsable(raw syscall.RawConn) bool {
	if raw == nil {
		return true
	}
	var buf [1]byte
	usable := false
	err := raw.Control(func(fd uintptr) {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		usable = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	})
	return err == nil && usable
}
