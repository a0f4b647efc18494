package smtpchannel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
)

func TestConfigRejects(t *testing.T) {
	dir := t.TempDir()
	notKey := filepath.Join(dir, "not-a-key.pem")
	if err := os.WriteFile(notKey, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		config, field, want string
	}{
		{"", "host", "host is required"},
		{"port: 25\n", "host", "host is required"},
		{"host: smtp.example.com:587\n", "host", "put the port in port"},
		{"host: smtp.example.com\ntls: ssl\n", "tls", `tls "ssl" is not one of none, starttls, tls`},
		{"host: smtp.example.com\nport: 70000\n", "port", "not a TCP port"},
		{"host: smtp.example.com\ntls: none\n", "tls", "insecure: true"},
		{"host: smtp.example.com\nusername: a\n", "username", "both username and password"},
		{"host: smtp.example.com\ntls: none\ninsecure: true\nusername: a\npassword: b\n", "password", "clear text"},
		{"host: smtp.example.com\nhelo: two words\n", "helo", "must be a host name"},
		{"host: smtp.example.com\nconnections: 0\n", "connections", "use 1 to 100"},
		{"host: smtp.example.com\ntimeout: 0s\n", "timeout", "above 0"},
		{"host: smtp.example.com\nmax_per_connection: 0\n", "max_per_connection", "at least 1"},
		{"host: smtp.example.com\nconections: 2\n", "conections", `did you mean "connections"`},
		{"host: smtp.example.com\nca_file: " + filepath.Join(dir, "missing.pem") + "\n", "ca_file", "readable PEM"},
		{"host: localhost\ntls: none\nca_file: x.pem\n", "ca_file", "tls is none"},
		{"host: smtp.example.com\ndkim: {selector: s, private_key_file: k}\n", "dkim.domain", "dkim.domain is required"},
		{"host: smtp.example.com\ndkim: {domain: example.com, private_key_file: k}\n", "dkim.selector", "dkim.selector is required"},
		{"host: smtp.example.com\ndkim: {domain: example.com, selector: s}\n", "dkim.private_key_file", "is required"},
		{"host: smtp.example.com\ndkim: {domain: example.com, selector: s, private_key_file: " + notKey + "}\n", "dkim.private_key_file", "no PEM block"},
		{"host: smtp.example.com\ndkim: {domain: example.com, selector: s, private_key_file: k, headers: [Subject]}\n", "dkim.headers", "must include From"},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			_, err := New().Configure(t.Context(), sdk.ConfigureRequest{Config: []byte(tt.config)})
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("Configure = %v, want an *sdk.Error", err)
			}
			if e.Code != sdk.InvalidConfig || e.Field != tt.field || !strings.Contains(e.Error(), tt.want) {
				t.Errorf("Configure = %v (code %v, field %q), want INVALID_CONFIG on %q containing %q", e, e.Code, e.Field, tt.field, tt.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	s, err := parseConfig([]byte("host: smtp.example.com\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Port != 587 || s.TLS != TLSStartTLS || s.Connections != 4 || s.Timeout != 30*time.Second || s.MaxPerConnection != 100 {
		t.Errorf("defaults = %+v", s.Config)
	}
	if s.tlsConfig == nil || s.tlsConfig.ServerName != "smtp.example.com" {
		t.Errorf("tls config %+v, want server name smtp.example.com", s.tlsConfig)
	}
	s, err = parseConfig([]byte("host: smtp.example.com\ntls: tls\n"))
	if err != nil || s.Port != 465 {
		t.Errorf("tls: tls port = %d, %v; want 465", s.Port, err)
	}
	// Plain SMTP is fine to a loopback relay, with credentials too.
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := parseConfig([]byte("host: '" + host + "'\ntls: none\nusername: a\npassword: b\n")); err != nil {
			t.Errorf("tls: none to %s: %v", host, err)
		}
	}
	if _, err := parseConfig([]byte("host: relay.internal\ntls: none\ninsecure: true\n")); err != nil {
		t.Errorf("tls: none with insecure: %v", err)
	}
}
