package mailaddr

import (
	"net/mail"
	"testing"
)

// An address IsDotAtomAddress takes is one mail.ParseAddress gives back
// as it is, with no name.
func TestIsDotAtomAddress(t *testing.T) {
	for s, want := range map[string]bool{
		"ada@example.com":          true,
		"ada.lovelace@example.com": true,
		"a+tag@mail.example.com":   true,
		"":                         false,
		"@example.com":             false,
		"ada@":                     false,
		".ada@example.com":         false,
		"ada.@example.com":         false,
		"ada..l@example.com":       false,
		"ada@example..com":         false,
		"ada lovelace@example.com": false,
		`"ada"@example.com`:        false,
		"Ada <ada@example.com>":    false,
		"adé@example.com":          false,
		"ada@[127.0.0.1]":          false,
	} {
		if got := IsDotAtomAddress(s); got != want {
			t.Errorf("IsDotAtomAddress(%q) = %v, want %v", s, got, want)
		}
		if want {
			a, err := mail.ParseAddress(s)
			if err != nil || a.Address != s || a.Name != "" {
				t.Errorf("mail.ParseAddress(%q) = %+v, %v; want the address as it is", s, a, err)
			}
		}
	}
}

func FuzzIsDotAtomAddress(f *testing.F) {
	for _, s := range []string{"ada@example.com", "a.b@c.d", "x@y", "\"q\"@example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !IsDotAtomAddress(s) {
			return
		}
		a, err := mail.ParseAddress(s)
		if err != nil || a.Address != s || a.Name != "" {
			t.Errorf("IsDotAtomAddress(%q) but mail.ParseAddress = %+v, %v", s, a, err)
		}
	})
}
