package webhookchannel

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Defaults and limits of the config keys.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultParallel = 8
	maxParallel     = 256
	maxTimeout      = 5 * time.Minute
	minSecretLen    = 16
)

// Config is the instance's config block.
type Config struct {
	URL      string            `yaml:"url"`
	Secret   string            `yaml:"secret"`
	Headers  map[string]string `yaml:"headers"`
	Timeout  time.Duration     `yaml:"timeout"`
	Parallel int               `yaml:"parallel"`
	Kind     string            `yaml:"kind"`
}

// reservedHeaders are set by the channel and may not be configured.
var reservedHeaders = map[string]bool{
	"Content-Type": true, "Content-Length": true, "Idempotency-Key": true, "X-Cohort-Signature": true,
	"Host": true, "Transfer-Encoding": true, "Connection": true,
}

// parseConfig decodes and checks a config block.
func parseConfig(raw []byte) (*Config, error) {
	cfg := Config{Timeout: DefaultTimeout, Parallel: DefaultParallel, Kind: "webhook"}
	if err := sdk.DecodeConfig(raw, &cfg); err != nil {
		return nil, err
	}
	if cfg.URL == "" {
		return nil, sdk.Errorf(sdk.InvalidConfig, "url",
			"url is required: set it to the endpoint that receives the POSTs, e.g. url: https://hooks.example.com/cohort")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, sdk.Errorf(sdk.InvalidConfig, "url",
			"url %q is not an http or https URL without credentials or fragment, e.g. https://hooks.example.com/cohort", cfg.URL)
	}
	if cfg.Secret == "" {
		return nil, sdk.Errorf(sdk.InvalidConfig, "secret",
			"secret is required: the receiver checks X-Cohort-Signature with it; use a random string of at least %d characters, e.g. secret: ${COHORT_WEBHOOK_SECRET}", minSecretLen)
	}
	if len(cfg.Secret) < minSecretLen {
		return nil, sdk.Errorf(sdk.InvalidConfig, "secret",
			"secret is %d characters: use at least %d random characters (openssl rand -hex 32)", len(cfg.Secret), minSecretLen)
	}
	for name, value := range cfg.Headers {
		canon := http.CanonicalHeaderKey(name)
		if !validHeaderName(name) {
			return nil, sdk.Errorf(sdk.InvalidConfig, "headers."+name, "headers: %q is not a valid header name", name)
		}
		if reservedHeaders[canon] {
			return nil, sdk.Errorf(sdk.InvalidConfig, "headers."+name,
				"headers: %s is set by the webhook channel; remove it from headers", canon)
		}
		if strings.ContainsAny(value, "\r\n") {
			return nil, sdk.Errorf(sdk.InvalidConfig, "headers."+name, "headers: the value of %s has a line break", name)
		}
	}
	if cfg.Timeout <= 0 || cfg.Timeout > maxTimeout {
		return nil, sdk.Errorf(sdk.InvalidConfig, "timeout",
			"timeout %v: use a duration above 0 and at most %v, e.g. timeout: 10s", cfg.Timeout, maxTimeout)
	}
	if cfg.Parallel < 1 || cfg.Parallel > maxParallel {
		return nil, sdk.Errorf(sdk.InvalidConfig, "parallel",
			"parallel %d: use 1 to %d requests at a time (default %d)", cfg.Parallel, maxParallel, DefaultParallel)
	}
	switch cfg.Kind {
	case "email", "sms", "webhook":
	default:
		return nil, sdk.Errorf(sdk.InvalidConfig, "kind", "kind %q is not one of webhook (default), email, sms", cfg.Kind)
	}
	return &cfg, nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
