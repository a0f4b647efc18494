package twiliochannel

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
)

const validBase = "account_sid: AC00000000000000000000000000000001\nauth_token: 0123456789abcdef0123456789abcdef\n"

func TestConfigDefaults(t *testing.T) {
	cfg, base, err := parseConfig([]byte(validBase + "from: \"+15555550199\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Parallel != DefaultParallel || cfg.Timeout != DefaultTimeout || base.String() != DefaultBaseURL {
		t.Errorf("defaults: parallel %d timeout %v base %s", cfg.Parallel, cfg.Timeout, base)
	}
	cfg, base, err = parseConfig([]byte(validBase +
		"messaging_service_sid: MG00000000000000000000000000000001\nbase_url: http://127.0.0.1:9/prefix/\nparallel: 3\ntimeout: 1500ms\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Parallel != 3 || cfg.Timeout != 1500*time.Millisecond || base.String() != "http://127.0.0.1:9/prefix" {
		t.Errorf("parallel %d timeout %v base %s", cfg.Parallel, cfg.Timeout, base)
	}
	for _, from := range []string{"+15555550199", "55555", "Cohort Shop", "ACME"} {
		if _, _, err := parseConfig([]byte(validBase + "from: \"" + from + "\"\n")); err != nil {
			t.Errorf("from %q rejected: %v", from, err)
		}
	}
}

func TestConfigRejects(t *testing.T) {
	const secret = "s3cr3tT0ken"
	tests := []struct {
		config, field, want string
	}{
		{"", "account_sid", "account_sid is required"},
		{"account_sid: ACxyz\nauth_token: abc\nfrom: \"+15555550199\"\n", "account_sid", "AC followed by 32 hex digits"},
		{"account_sid: AC00000000000000000000000000000001\nfrom: \"+15555550199\"\n", "auth_token", "auth_token is required"},
		{"account_sid: AC00000000000000000000000000000001\nauth_token: \"" + secret + "!\"\nfrom: \"+15555550199\"\n", "auth_token", "letters and digits only"},
		{validBase, "from", "set one of from"},
		{validBase + "from: \"+15555550199\"\nmessaging_service_sid: MG00000000000000000000000000000001\n", "from", "keep exactly one"},
		{validBase + "messaging_service_sid: MG1\n", "messaging_service_sid", "MG followed by 32 hex digits"},
		{validBase + "from: \"555-0199\"\n", "from", "not a sender"},
		{validBase + "from: \"+05555550199\"\n", "from", "not a sender"},
		{validBase + "from: \"Much Too Long Name\"\n", "from", "not a sender"},
		{validBase + "from: \"+15555550199\"\nparallel: 0\n", "parallel", "between 1 and 256"},
		{validBase + "from: \"+15555550199\"\ntimeout: 0s\n", "timeout", "above 0"},
		{validBase + "from: \"+15555550199\"\ntimeout: 1h\n", "timeout", "at most 5m0s"},
		{validBase + "from: \"+15555550199\"\nbase_url: ftp://example.com\n", "base_url", "not an http(s) URL"},
		{validBase + "from: \"+15555550199\"\nbase_url: https://example.com/?x=1\n", "base_url", "without query"},
		{validBase + "from: \"+15555550199\"\nfrom_number: x\n", "from_number", "unknown key"},
		{validBase + "from: \"+15555550199\"\nparallel: lots\n", "parallel", "line 4"},
	}
	for _, tt := range tests {
		t.Run(tt.field+"/"+tt.want, func(t *testing.T) {
			_, _, err := parseConfig([]byte(tt.config))
			var e *sdk.Error
			if !errors.As(err, &e) || e.Code != sdk.InvalidConfig {
				t.Fatalf("parseConfig(%q) = %v, want an InvalidConfig error", tt.config, err)
			}
			if e.Field != tt.field || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error field %q %q, want field %q containing %q", e.Field, err, tt.field, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q shows the auth token", err)
			}
		})
	}
}

func TestConfigLogValueHidesToken(t *testing.T) {
	cfg, _, err := parseConfig([]byte(validBase + "from: \"+15555550199\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("configured", "config", cfg)
	if strings.Contains(buf.String(), cfg.AuthToken) || !strings.Contains(buf.String(), cfg.AccountSID) {
		t.Errorf("log line %s", buf.String())
	}
}

func TestConfigureRequiresNoNetwork(t *testing.T) {
	// base_url points nowhere: Configure must still succeed.
	ch := newChannel(t)
	if _, err := ch.Configure(t.Context(), sdk.ConfigureRequest{
		Instance: "sms",
		Config:   []byte(validBase + "from: \"+15555550199\"\nbase_url: http://127.0.0.1:1\n"),
	}); err != nil {
		t.Fatal(err)
	}
	if st, _ := ch.state(); st.callback != "" {
		t.Errorf("callback %q without a public URL, want none", st.callback)
	}
}
