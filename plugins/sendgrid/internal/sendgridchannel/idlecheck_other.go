//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package sendgridchannel

import "syscall"

// idleCheckSupported: idleConnUsable checks nothing here.
const idleCheckSupported = false

// idleConnUsable cannot check a connection without MSG_PEEK and
// MSG_DONTWAIT: idle connections are reused unchecked, until idleTimeout.
func idleConnUsable(syscall.RawConn) bool { return true }
