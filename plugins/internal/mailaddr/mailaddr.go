// Package mailaddr holds the email address checks the channel plugins
// share.
package mailaddr

import "strings"

// IsDotAtomAddress reports whether s is local@domain where both are
// RFC 5322 dot-atoms of ASCII atext: no leading, trailing or double dots.
// mail.ParseAddress returns such an address as it is, with no name, so a
// plugin can take it without the parser.
func IsDotAtomAddress(s string) bool {
	at := strings.IndexByte(s, '@')
	return at > 0 && isDotAtom(s[:at]) && isDotAtom(s[at+1:])
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if s[i-1] == '.' {
				return false
			}
		case c <= ' ' || c >= 0x7f:
			return false
		case strings.IndexByte(`()<>[]:;@\,"`, c) >= 0:
			return false
		}
	}
	return true
}
