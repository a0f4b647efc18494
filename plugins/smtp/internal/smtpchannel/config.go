package smtpchannel

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Defaults and limits of the config keys.
const (
	DefaultPort             = 587
	DefaultTLSPort          = 465
	DefaultConnections      = 4
	DefaultTimeout          = 30 * time.Second
	DefaultMaxPerConnection = 100
	maxConnections          = 100
	maxTimeout              = 10 * time.Minute
)

// DefaultDKIMHeaders are the header fields signed when dkim.headers is not
// set. RFC 8058 one-click unsubscribe needs List-Unsubscribe and
// List-Unsubscribe-Post covered by the signature.
var DefaultDKIMHeaders = []string{
	"From", "To", "Subject", "Date", "Message-ID", "Reply-To",
	"List-Unsubscribe", "List-Unsubscribe-Post",
}

// TLS modes.
const (
	TLSNone     = "none"
	TLSStartTLS = "starttls"
	TLSImplicit = "tls"
)

// Config is the instance's config block.
type Config struct {
	Host             string        `yaml:"host"`
	Port             int           `yaml:"port"`
	TLS              string        `yaml:"tls"`
	Insecure         bool          `yaml:"insecure"`
	CAFile           string        `yaml:"ca_file"`
	Username         string        `yaml:"username"`
	Password         string        `yaml:"password"`
	HELO             string        `yaml:"helo"`
	Connections      int           `yaml:"connections"`
	Timeout          time.Duration `yaml:"timeout"`
	MaxPerConnection int           `yaml:"max_per_connection"`
	DKIM             *DKIMConfig   `yaml:"dkim"`
}

// DKIMConfig is the dkim block.
type DKIMConfig struct {
	Domain         string   `yaml:"domain"`
	Selector       string   `yaml:"selector"`
	PrivateKeyFile string   `yaml:"private_key_file"`
	Headers        []string `yaml:"headers"`
}

// settings is a checked Config, ready to use.
type settings struct {
	Config
	addr      string
	tlsConfig *tls.Config // nil with tls: none
	dkimKey   crypto.Signer
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseConfig decodes and checks a config block. It reads the CA and DKIM
// key files but makes no network call.
func parseConfig(raw []byte) (*settings, error) {
	cfg := Config{
		TLS:              TLSStartTLS,
		Connections:      DefaultConnections,
		Timeout:          DefaultTimeout,
		MaxPerConnection: DefaultMaxPerConnection,
	}
	if err := sdk.DecodeConfig(raw, &cfg); err != nil {
		return nil, err
	}
	if cfg.Host == "" {
		return nil, sdk.Errorf(sdk.InvalidConfig, "host",
			"host is required: set it to your SMTP relay's name, e.g. host: smtp.example.com")
	}
	if strings.ContainsAny(cfg.Host, ":/ \t") && net.ParseIP(cfg.Host) == nil {
		return nil, sdk.Errorf(sdk.InvalidConfig, "host",
			"host %q is not a host name: write the name or IP address alone and put the port in port", cfg.Host)
	}
	switch cfg.TLS {
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return nil, sdk.Errorf(sdk.InvalidConfig, "tls",
			"tls %q is not one of none, starttls, tls (starttls upgrades a plain connection, usually port 587; tls is TLS from the start, usually port 465)", cfg.TLS)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
		if cfg.TLS == TLSImplicit {
			cfg.Port = DefaultTLSPort
		}
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, sdk.Errorf(sdk.InvalidConfig, "port", "port %d is not a TCP port: use 1 to 65535, usually 587 or 465", cfg.Port)
	}
	loopback := isLoopback(cfg.Host)
	if cfg.TLS == TLSNone && !loopback && !cfg.Insecure {
		return nil, sdk.Errorf(sdk.InvalidConfig, "tls",
			"tls: none sends mail unencrypted to %s: use tls: starttls or tls, or set insecure: true if the network to that relay is trusted", cfg.Host)
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		return nil, sdk.Errorf(sdk.InvalidConfig, "username",
			"set both username and password for AUTH PLAIN, or neither to send without authenticating")
	}
	if cfg.Username != "" && cfg.TLS == TLSNone && !loopback {
		return nil, sdk.Errorf(sdk.InvalidConfig, "password",
			"the password would cross the network in clear text: with username and password use tls: starttls or tls (insecure: true does not lift this)")
	}
	if cfg.HELO == "" {
		cfg.HELO = defaultHELO()
	}
	if strings.ContainsAny(cfg.HELO, " \t\r\n<>") {
		return nil, sdk.Errorf(sdk.InvalidConfig, "helo", "helo %q must be a host name, e.g. helo: mailer.example.com", cfg.HELO)
	}
	if cfg.Connections < 1 || cfg.Connections > maxConnections {
		return nil, sdk.Errorf(sdk.InvalidConfig, "connections",
			"connections %d: use 1 to %d persistent connections (default %d)", cfg.Connections, maxConnections, DefaultConnections)
	}
	if cfg.Timeout <= 0 || cfg.Timeout > maxTimeout {
		return nil, sdk.Errorf(sdk.InvalidConfig, "timeout",
			"timeout %v: use a duration above 0 and at most %v, e.g. timeout: 30s", cfg.Timeout, maxTimeout)
	}
	if cfg.MaxPerConnection < 1 {
		return nil, sdk.Errorf(sdk.InvalidConfig, "max_per_connection",
			"max_per_connection %d: use at least 1 message per connection (default %d)", cfg.MaxPerConnection, DefaultMaxPerConnection)
	}

	s := &settings{Config: cfg, addr: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))}
	if cfg.CAFile != "" && cfg.TLS == TLSNone {
		return nil, sdk.Errorf(sdk.InvalidConfig, "ca_file", "ca_file is set but tls is none: remove ca_file or use tls: starttls or tls")
	}
	if cfg.TLS != TLSNone {
		s.tlsConfig = &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pool, err := loadCAFile(cfg.CAFile)
			if err != nil {
				return nil, err
			}
			s.tlsConfig.RootCAs = pool
		}
	}
	if cfg.DKIM != nil {
		key, err := checkDKIM(cfg.DKIM)
		if err != nil {
			return nil, err
		}
		s.dkimKey = key
	}
	return s, nil
}

// defaultHELO is the host name when it looks fully qualified, else
// "localhost".
func defaultHELO() string {
	if h, err := os.Hostname(); err == nil && strings.Contains(h, ".") && !strings.ContainsAny(h, " \t\r\n<>") {
		return h
	}
	return "localhost"
}

// loadCAFile returns the system roots plus the certificates in path.
func loadCAFile(path string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(path)
	if err != nil {
		return nil, sdk.Errorf(sdk.InvalidConfig, "ca_file", "ca_file %q: %v; point it at a readable PEM file of CA certificates", path, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, sdk.Errorf(sdk.InvalidConfig, "ca_file", "ca_file %q holds no PEM certificate", path)
	}
	return pool, nil
}

func checkDKIM(d *DKIMConfig) (crypto.Signer, error) {
	if d.Domain == "" || strings.ContainsAny(d.Domain, " \t;=") {
		return nil, sdk.Errorf(sdk.InvalidConfig, "dkim.domain",
			"dkim.domain is required: the domain whose DNS publishes the key, usually the From address's domain, e.g. domain: example.com")
	}
	if d.Selector == "" || strings.ContainsAny(d.Selector, " \t;=") {
		return nil, sdk.Errorf(sdk.InvalidConfig, "dkim.selector",
			"dkim.selector is required: the name of the key's DNS record <selector>._domainkey.%s, e.g. selector: cohort", d.Domain)
	}
	if d.PrivateKeyFile == "" {
		return nil, sdk.Errorf(sdk.InvalidConfig, "dkim.private_key_file",
			"dkim.private_key_file is required: a PEM file with an RSA or Ed25519 private key")
	}
	if d.Headers == nil {
		d.Headers = DefaultDKIMHeaders
	}
	hasFrom := false
	for i, h := range d.Headers {
		if h == "" || strings.ContainsAny(h, ": \t\r\n") {
			return nil, sdk.Errorf(sdk.InvalidConfig, "dkim.headers", "dkim.headers[%d] %q is not a header field name", i, h)
		}
		hasFrom = hasFrom || strings.EqualFold(h, "From")
	}
	if !hasFrom {
		return nil, sdk.Errorf(sdk.InvalidConfig, "dkim.headers", "dkim.headers must include From (RFC 6376 requires it)")
	}
	raw, err := os.ReadFile(d.PrivateKeyFile)
	if err != nil {
		return nil, sdk.Errorf(sdk.InvalidConfig, "dkim.private_key_file",
			"dkim.private_key_file %q: %v; point it at a readable PEM key file", d.PrivateKeyFile, err)
	}
	key, err := parsePrivateKey(raw)
	if err != nil {
		return nil, sdk.Errorf(sdk.InvalidConfig, "dkim.private_key_file", "dkim.private_key_file %q: %v", d.PrivateKeyFile, err)
	}
	return key, nil
}

// parsePrivateKey reads an RSA (PKCS #1 or #8, at least 1024 bits) or
// Ed25519 (PKCS #8) private key from PEM.
func parsePrivateKey(pemData []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, fmt.Errorf("no PEM block found: write the key as -----BEGIN PRIVATE KEY----- ... (openssl genpkey)")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key: want PRIVATE KEY or RSA PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse the private key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 1024 {
			return nil, fmt.Errorf("RSA key of %d bits is too short: use 2048 bits", k.N.BitLen())
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("key type %T is not supported: use RSA or Ed25519", key)
}
