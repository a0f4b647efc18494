package twiliochannel

import (
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Defaults of the config keys.
const (
	DefaultBaseURL  = "https://api.twilio.com"
	DefaultParallel = 8
	DefaultTimeout  = 10 * time.Second

	maxParallel = 256
	maxTimeout  = 5 * time.Minute
)

var (
	// e164 is an E.164 number: +, then 8 to 15 digits, the first not 0.
	e164 = regexp.MustCompile(`^\+[1-9][0-9]{7,14}$`)
	// accountSID and serviceSID are Twilio's SID shapes.
	accountSID = regexp.MustCompile(`^AC[0-9a-fA-F]{32}$`)
	serviceSID = regexp.MustCompile(`^MG[0-9a-fA-F]{32}$`)
	// alphanumeric is what twilio-go accepts as a credential.
	alphanumeric = regexp.MustCompile(`^[A-Za-z0-9]+$`)
	// shortCode and senderID are the non-E.164 senders Twilio allows.
	shortCode = regexp.MustCompile(`^[0-9]{3,8}$`)
	senderID  = regexp.MustCompile(`^[A-Za-z0-9 ]{1,11}$`)
)

// Config is the channel's config block.
type Config struct {
	AccountSID          string        `yaml:"account_sid"`
	AuthToken           string        `yaml:"auth_token"`
	From                string        `yaml:"from"`
	MessagingServiceSID string        `yaml:"messaging_service_sid"`
	BaseURL             string        `yaml:"base_url"`
	Parallel            int           `yaml:"parallel"`
	Timeout             time.Duration `yaml:"timeout"`
}

// LogValue keeps the auth token out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("account_sid", c.AccountSID),
		slog.String("auth_token", "REDACTED"),
		slog.String("from", c.From),
		slog.String("messaging_service_sid", c.MessagingServiceSID),
		slog.String("base_url", c.BaseURL),
		slog.Int("parallel", c.Parallel),
		slog.Duration("timeout", c.Timeout),
	)
}

// parseConfig decodes and checks a config block. It returns the config and
// its base URL.
func parseConfig(raw []byte) (Config, *url.URL, error) {
	cfg := Config{BaseURL: DefaultBaseURL, Parallel: DefaultParallel, Timeout: DefaultTimeout}
	if err := sdk.DecodeConfig(raw, &cfg); err != nil {
		return Config{}, nil, err
	}
	switch {
	case cfg.AccountSID == "":
		return Config{}, nil, sdk.Errorf(sdk.InvalidConfig, "account_sid",
			"account_sid is required: set it to your Twilio account SID (AC followed by 32 hex digits, on the Twilio console's home page)")
	case !accountSID.MatchString(cfg.AccountSID):
		return Config{}, nil, sdk.Errorf(sdk.InvalidConfig, "account_sid",
			"account_sid %q is not an account SID: write AC followed by 32 hex digits", cfg.AccountSID)
	case cfg.AuthToken == "":
		return Config{}, nil, sdk.Errorf(sdk.InvalidConfig, "auth_token",
			"auth_token is required: set it to the account's auth token, e.g. auth_token: ${TWILIO_AUTH_TOKEN}")
	case !alphanumeric.MatchString(cfg.AuthToken):
		// Never echo the token.
		return Config{}, nil, sdk.Errorf(sdk.InvalidConfig, "auth_token",
			"auth_token must be letters and digits only (twilio-go refuses other characters): check for quotes or spaces around it")
	case cfg.From == "" && cfg.MessagingServiceSID == "":
		return Config{}, nil, sdk.Errorf(sdk.InvalidConfig, "from",
			"set one of from (your Twilio number, e.g. +15555550100) and messaging_service_sid (MG followed by 32 hex digits)")
	case cfg.From != "" && cfg.MessagingServiceSID != "":
		return Config{}, nil, sdk.Errorf(sdk.InvalidConfig, "from",
			"from and messaging_service_sid are both set: keep exactly one (the messaging service picks its own sender)")
	case cfg.MessagingServiceSID != "" && !serviceSID.MatchString(cfg.MessagingServiceSID):
		return Config{}, nil, sdk.Errorf(sdk.InvalidConfig, "messaging_service_sid",
			"messaging_service_sid %q is not a messaging service SID: write MG followed by 32 hex digits", cfg.MessagingServiceSID)
	case cfg.From != "" && !validSender(cfg.From):
		return Config{}, nil, sdk.Errorf(sdk.InvalidConfig, "from",
			"from %q is not a sender: write an E.164 number (+15555550100), a short code (3 to 8 digits) or an alphanumeric sender ID of at most 11 letters, digits and spaces", cfg.From)
	case cfg.Parallel < 1 || cfg.Parallel > maxParallel:
		return Config{}, nil, sdk.Errorf(sdk.InvalidConfig, "parallel",
			"parallel is %d: set it between 1 and %d (requests in flight at once; default %d)", cfg.Parallel, maxParallel, DefaultParallel)
	case cfg.Timeout <= 0 || cfg.Timeout > maxTimeout:
		return Config{}, nil, sdk.Errorf(sdk.InvalidConfig, "timeout",
			"timeout is %v: set it above 0 and at most %v (per request; default %v)", cfg.Timeout, maxTimeout, DefaultTimeout)
	}
	base, err := parseBaseURL(cfg.BaseURL)
	if err != nil {
		return Config{}, nil, err
	}
	return cfg, base, nil
}

func validSender(from string) bool {
	if strings.HasPrefix(from, "+") {
		return e164.MatchString(from)
	}
	if shortCode.MatchString(from) {
		return true
	}
	return senderID.MatchString(from) && strings.IndexFunc(from, func(r rune) bool {
		return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z'
	}) >= 0
}

func parseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" {
		return nil, sdk.Errorf(sdk.InvalidConfig, "base_url",
			"base_url %q is not an http(s) URL without query: leave it out for %s, or point it at a stand-in such as http://127.0.0.1:8081", raw, DefaultBaseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}
