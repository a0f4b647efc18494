package sendgridchannel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Defaults and limits of the config keys.
const (
	DefaultBaseURL       = "https://api.sendgrid.com"
	DefaultParallel      = 8
	DefaultTimeout       = 10 * time.Second
	DefaultWebhookMaxAge = 24 * time.Hour
	maxParallel          = 256
	maxCategories        = 10
	maxCategoryLen       = 255
	minWebhookMaxAge     = time.Minute
)

// Config is the instance's config block.
type Config struct {
	APIKey           string        `yaml:"api_key"`
	BaseURL          string        `yaml:"base_url"`
	Categories       []string      `yaml:"categories"`
	ASMGroupID       *int          `yaml:"asm_group_id"`
	Sandbox          bool          `yaml:"sandbox"`
	Parallel         int           `yaml:"parallel"`
	Timeout          time.Duration `yaml:"timeout"`
	WebhookPublicKey string        `yaml:"webhook_public_key"`
	WebhookMaxAge    time.Duration `yaml:"webhook_max_age"`
}

// settings is a checked Config, ready to use.
type settings struct {
	Config
	webhookKey *ecdsa.PublicKey // nil: webhooks are refused
}

// parseConfig decodes and checks a config block.
func parseConfig(raw []byte) (*settings, error) {
	cfg := Config{
		BaseURL:       DefaultBaseURL,
		Parallel:      DefaultParallel,
		Timeout:       DefaultTimeout,
		WebhookMaxAge: DefaultWebhookMaxAge,
	}
	if err := sdk.DecodeConfig(raw, &cfg); err != nil {
		return nil, err
	}
	if strings.TrimSpace(cfg.APIKey) == "" {
		return nil, sdk.Errorf(sdk.InvalidConfig, "api_key",
			"api_key is required: set it to a SendGrid API key with Mail Send permission, e.g. api_key: ${SENDGRID_API_KEY}")
	}
	if strings.ContainsAny(cfg.APIKey, " \t\r\n") {
		return nil, sdk.Errorf(sdk.InvalidConfig, "api_key",
			"api_key contains white space: paste the key alone, without spaces or line breaks")
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, sdk.Errorf(sdk.InvalidConfig, "base_url",
			"base_url %q is not a base URL: write scheme and host only, e.g. https://api.sendgrid.com or https://api.eu.sendgrid.com", cfg.BaseURL)
	}
	cfg.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/")
	if len(cfg.Categories) > maxCategories {
		return nil, sdk.Errorf(sdk.InvalidConfig, "categories",
			"categories has %d entries; SendGrid allows at most %d per message", len(cfg.Categories), maxCategories)
	}
	for i, c := range cfg.Categories {
		if strings.TrimSpace(c) == "" || len(c) > maxCategoryLen {
			return nil, sdk.Errorf(sdk.InvalidConfig, "categories",
				"categories[%d] must be 1 to %d characters, not %q", i, maxCategoryLen, c)
		}
	}
	if cfg.ASMGroupID != nil && *cfg.ASMGroupID <= 0 {
		return nil, sdk.Errorf(sdk.InvalidConfig, "asm_group_id",
			"asm_group_id must be the positive id of a SendGrid unsubscribe group, not %d; remove the key to send without one", *cfg.ASMGroupID)
	}
	if cfg.Parallel < 1 || cfg.Parallel > maxParallel {
		return nil, sdk.Errorf(sdk.InvalidConfig, "parallel",
			"parallel must be between 1 and %d requests in flight, not %d", maxParallel, cfg.Parallel)
	}
	if cfg.Timeout <= 0 {
		return nil, sdk.Errorf(sdk.InvalidConfig, "timeout",
			"timeout must be a positive duration per request, e.g. timeout: 10s, not %v", cfg.Timeout)
	}
	if cfg.WebhookMaxAge < minWebhookMaxAge {
		return nil, sdk.Errorf(sdk.InvalidConfig, "webhook_max_age",
			"webhook_max_age must be at least %v (default %v), not %v", minWebhookMaxAge, DefaultWebhookMaxAge, cfg.WebhookMaxAge)
	}
	s := &settings{Config: cfg}
	if cfg.WebhookPublicKey != "" {
		key, err := parsePublicKey(cfg.WebhookPublicKey)
		if err != nil {
			return nil, sdk.Errorf(sdk.InvalidConfig, "webhook_public_key",
				"webhook_public_key: %v; copy the verification key from SendGrid's Mail Settings > Event Webhook > Signature Verification", err)
		}
		s.webhookKey = key
	}
	return s, nil
}

// parsePublicKey reads a key as SendGrid shows it: base64 of a DER (PKIX)
// ECDSA P-256 public key. sendgrid-go's ConvertPublicKeyBase64ToECDSA
// panics on a key of another type, so the key is checked here.
func parsePublicKey(b64 string) (*ecdsa.PublicKey, error) {
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("not a DER public key: %w", err)
	}
	key, ok := pub.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 public key")
	}
	return key, nil
}
