package sendgridchannel

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/sdk"
)

func TestConfigDefaults(t *testing.T) {
	cfg, err := parseConfig([]byte("api_key: SG.k\n"))
	require.NoError(t, err)
	assert.Equal(t, DefaultBaseURL, cfg.BaseURL)
	assert.Equal(t, DefaultParallel, cfg.Parallel)
	assert.Equal(t, DefaultTimeout, cfg.Timeout)
	assert.Equal(t, DefaultWebhookMaxAge, cfg.WebhookMaxAge)
	assert.Nil(t, cfg.webhookKey)
	assert.Nil(t, cfg.ASMGroupID)
	assert.False(t, cfg.Sandbox)
}

func TestConfigAllKeys(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	cfg, err := parseConfig([]byte(`
api_key: SG.k
base_url: http://127.0.0.1:8025/
categories: [newsletter, spring]
asm_group_id: 42
sandbox: true
parallel: 3
timeout: 2s
webhook_public_key: ` + s.PublicKeyBase64() + `
webhook_max_age: 2h
`))
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:8025", cfg.BaseURL, "trailing slash dropped")
	assert.Equal(t, []string{"newsletter", "spring"}, cfg.Categories)
	assert.Equal(t, 42, *cfg.ASMGroupID)
	assert.True(t, cfg.Sandbox)
	assert.Equal(t, 3, cfg.Parallel)
	assert.Equal(t, 2*time.Second, cfg.Timeout)
	assert.Equal(t, 2*time.Hour, cfg.WebhookMaxAge)
	assert.NotNil(t, cfg.webhookKey)
}

func TestConfigRejects(t *testing.T) {
	edKey, _, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	edDER, err := x509.MarshalPKIXPublicKey(edKey)
	require.NoError(t, err)
	notECDSA := base64.StdEncoding.EncodeToString(edDER)

	tests := []struct {
		config, field, want string
	}{
		{"", "api_key", "api_key is required"},
		{"api_key: ''\n", "api_key", "api_key is required"},
		{"api_key: 'SG.a b'\n", "api_key", "white space"},
		{"api_key: k\napi_kye: k\n", "api_kye", `did you mean "api_key"`},
		{"api_key: k\nbase_url: api.sendgrid.com\n", "base_url", "not a base URL"},
		{"api_key: k\nbase_url: https://api.sendgrid.com/v3/mail/send\n", "base_url", "scheme and host only"},
		{"api_key: k\ncategories: [a, b, c, d, e, f, g, h, i, j, k]\n", "categories", "at most 10"},
		{"api_key: k\ncategories: ['']\n", "categories", "categories[0]"},
		{"api_key: k\nasm_group_id: 0\n", "asm_group_id", "positive id"},
		{"api_key: k\nasm_group_id: many\n", "asm_group_id", "whole number"},
		{"api_key: k\nparallel: 0\n", "parallel", "between 1 and 256"},
		{"api_key: k\nparallel: 1000\n", "parallel", "between 1 and 256"},
		{"api_key: k\ntimeout: 0s\n", "timeout", "positive duration"},
		{"api_key: k\nsandbox: maybe\n", "sandbox", ""},
		{"api_key: k\nwebhook_public_key: '%%%'\n", "webhook_public_key", "not base64"},
		{"api_key: k\nwebhook_public_key: aGVsbG8=\n", "webhook_public_key", "not a DER public key"},
		{"api_key: k\nwebhook_public_key: " + notECDSA + "\n", "webhook_public_key", "not an ECDSA P-256 public key"},
		{"api_key: k\nwebhook_max_age: 30s\n", "webhook_max_age", "at least 1m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			c, _ := newChannel(t)
			_, err := c.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte(tt.config)})
			require.Error(t, err)
			var se *sdk.Error
			require.True(t, errors.As(err, &se), "%T %v", err, err)
			assert.Equal(t, sdk.InvalidConfig, se.Code)
			assert.Equal(t, tt.field, se.Field)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestConfigNeverLogsAPIKey(t *testing.T) {
	c, logs := newChannel(t)
	configure(t, c, "api_key: SG.secret-value-for-test\n")
	assert.NotContains(t, logs.String(), "secret-value")
	assert.Contains(t, logs.String(), "webhook_public_key is not set", "the missing webhook key is logged")
}

func TestSendBeforeConfigure(t *testing.T) {
	c, _ := newChannel(t)
	_, err := c.Send(t.Context(), []sdk.Message{msg("k", "ada@example.com")})
	var se *sdk.Error
	require.True(t, errors.As(err, &se), "%v", err)
	assert.Equal(t, sdk.Internal, se.Code)
	assert.True(t, strings.Contains(err.Error(), "before Configure"))
}
