package nodechannel_test

// These tests run the Node.js channel plugin (plugin.js) as a real process:
// first by hand, to check the go-plugin handshake byte by byte, then through
// hashicorp/go-plugin exactly as the Cohort daemon launches plugins.
//
// They need Node.js on PATH. Without it they are skipped, unless CI=true, in
// which case a missing node is a failure. node_modules is installed with
// `npm ci` when it is missing or older than package-lock.json.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/cohortd/cohort/sdk"
	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// startTimeout bounds how long a plugin may take to print its handshake. It
// is generous (a cold `node` on a loaded CI machine); the measured figure is
// logged, never asserted.
const startTimeout = 30 * time.Second

var (
	depsOnce sync.Once
	depsErr  error
)

// pluginPath returns the absolute path of plugin.js after making sure node
// is available and node_modules is installed.
func pluginPath(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node not found on PATH (%v); CI must provide Node.js >= 18 to test examples/nodechannel", err)
		}
		t.Skipf("node not found on PATH: skipping the Node.js plugin example (install Node.js >= 18 to run it; with CI=true this fails instead)")
	}
	depsOnce.Do(func() { depsErr = installDeps() })
	if depsErr != nil {
		t.Fatal(depsErr)
	}
	p, err := filepath.Abs("plugin.js")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// installDeps runs `npm ci` when node_modules is missing or older than
// package-lock.json. npm rewrites node_modules/.package-lock.json on every
// install, so its mtime says when node_modules was last made.
func installDeps() error {
	lock, err := os.Stat("package-lock.json")
	if err != nil {
		return fmt.Errorf("package-lock.json: %w", err)
	}
	if made, err := os.Stat(filepath.Join("node_modules", ".package-lock.json")); err == nil && !made.ModTime().Before(lock.ModTime()) {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("node_modules is missing or older than package-lock.json, and npm is not on PATH: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund").CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm ci in examples/nodechannel: %w\n%s", err, out)
	}
	return nil
}

// syncBuffer is a bytes.Buffer safe for the writer goroutines go-plugin and
// os/exec start.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pluginEnv is the test's environment without anything a host would set,
// plus extra.
func pluginEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, sdk.Handshake.MagicCookieKey+"=") || strings.HasPrefix(kv, "PLUGIN_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

func cookie() string {
	return sdk.Handshake.MagicCookieKey + "=" + sdk.Handshake.MagicCookieValue
}

// rawPlugin is plugin.js started by hand, as go-plugin would start it.
type rawPlugin struct {
	cmd       *exec.Cmd
	handshake string
	startup   time.Duration // launch to handshake line
	stderr    *syncBuffer
	rest      *syncBuffer   // stdout after the handshake line: must stay empty
	restDone  chan struct{} // closed at EOF on stdout
}

// startRaw runs plugin.js itself (through its shebang, so the executable bit
// is tested too) with env and reads its handshake line. Stdin is /dev/null,
// as under systemd: the plugin must not take EOF on stdin for "host gone".
func startRaw(t *testing.T, path string, env []string) *rawPlugin {
	t.Helper()
	cmd := exec.Command(path)
	cmd.Env = env
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	rest, restDone := &syncBuffer{}, make(chan struct{})
	go func() {
		defer close(restDone)
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		lines <- line
		_, _ = io.Copy(rest, r)
	}()
	select {
	case line := <-lines:
		if !strings.HasSuffix(line, "\n") {
			t.Fatalf("no handshake line on stdout (got %q); stderr:\n%s", line, stderr)
		}
		return &rawPlugin{cmd: cmd, handshake: strings.TrimSuffix(line, "\n"), startup: time.Since(begin),
			stderr: stderr, rest: rest, restDone: restDone}
	case <-time.After(startTimeout):
		t.Fatalf("no handshake within %v; stderr:\n%s", startTimeout, stderr)
	}
	return nil
}

// runToExit runs plugin.js with env and returns its exit code, stdout and
// stderr; for the cases where the plugin must refuse to start.
func runToExit(t *testing.T, path string, env []string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running plugin: %v", err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// hostCert makes a certificate like go-plugin's host makes for AutoMTLS
// (self-signed, CA, client+server auth, SAN localhost).
func hostCert(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return pair, certPEM
}

// healthCheck calls grpc.health.v1.Health/Check("plugin") on addr and
// returns the status, the negotiated TLS version (0 without TLS) and the
// call's error.
func healthCheck(t *testing.T, addr string, creds credentials.TransportCredentials) (grpc_health_v1.HealthCheckResponse_ServingStatus, uint16, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p peer.Peer
	resp, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName}, grpc.Peer(&p))
	if err != nil {
		return 0, 0, err
	}
	var version uint16
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		version = info.State.Version
	}
	return resp.GetStatus(), version, nil
}

// TestHandshakeAutoMTLS checks the handshake line and the certificate in it
// the way go-plugin reads them, then that the server really requires the
// host's certificate. It launches the plugin several times: the DER length
// varies with the ECDSA signature, so base64 '=' padding (which go-plugin
// rejects) would show up in most runs if it were ever printed.
func TestHandshakeAutoMTLS(t *testing.T) {
	path := pluginPath(t)
	hostPair, hostPEM := hostCert(t)
	env := pluginEnv(cookie(), "PLUGIN_PROTOCOL_VERSIONS=1", "PLUGIN_MIN_PORT=0", "PLUGIN_MAX_PORT=0",
		"PLUGIN_CLIENT_CERT="+string(hostPEM))

	var startups []time.Duration
	for run := range 5 {
		p := startRaw(t, path, env)
		startups = append(startups, p.startup)
		parts := strings.Split(p.handshake, "|")
		if len(parts) != 6 {
			t.Fatalf("run %d: handshake %q has %d fields, want 6 (core|app|network|address|protocol|cert)", run, p.handshake, len(parts))
		}
		if got := parts[:3]; !slices.Equal(got, []string{"1", "1", "tcp"}) {
			t.Errorf("run %d: handshake starts %q, want 1|1|tcp", run, strings.Join(got, "|"))
		}
		host, port, err := net.SplitHostPort(parts[3])
		if n, _ := strconv.Atoi(port); err != nil || host != "127.0.0.1" || n <= 0 {
			t.Errorf("run %d: address %q, want 127.0.0.1:<port>", run, parts[3])
		}
		if parts[4] != "grpc" {
			t.Errorf("run %d: protocol %q, want grpc", run, parts[4])
		}
		if strings.Contains(parts[5], "=") {
			t.Errorf("run %d: certificate field has '=' padding; go-plugin decodes it with base64.RawStdEncoding", run)
		}
		der, err := base64.RawStdEncoding.DecodeString(parts[5])
		if err != nil {
			t.Fatalf("run %d: certificate field does not decode as raw std base64: %v", run, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("run %d: certificate does not parse: %v", run, err)
		}
		checkServerCert(t, cert)

		if run > 0 {
			continue // the TLS checks below once are enough
		}
		roots := x509.NewCertPool()
		roots.AddCert(cert)
		// The TLS configuration go-plugin's host uses (client.go, AutoMTLS).
		hostTLS := &tls.Config{Certificates: []tls.Certificate{hostPair}, RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
		st, version, err := healthCheck(t, parts[3], credentials.NewTLS(hostTLS))
		if err != nil {
			t.Fatalf("health check over mTLS: %v\nplugin stderr:\n%s", err, p.stderr)
		}
		if st != grpc_health_v1.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %v, want SERVING", plugin.GRPCServiceName, st)
		}
		if version < tls.VersionTLS12 {
			t.Errorf("negotiated TLS version %#x, want TLS 1.2 or later", version)
		}

		// The server must insist on the host's certificate: none, or another
		// self-signed one, is refused.
		noCert := hostTLS.Clone()
		noCert.Certificates = nil
		if _, _, err := healthCheck(t, parts[3], credentials.NewTLS(noCert)); status.Code(err) != codes.Unavailable {
			t.Errorf("health check without a client certificate: err = %v, want Unavailable (refused)", err)
		}
		otherPair, _ := hostCert(t)
		otherCert := hostTLS.Clone()
		otherCert.Certificates = []tls.Certificate{otherPair}
		if _, _, err := healthCheck(t, parts[3], credentials.NewTLS(otherCert)); status.Code(err) != codes.Unavailable {
			t.Errorf("health check with a certificate other than PLUGIN_CLIENT_CERT: err = %v, want Unavailable (refused)", err)
		}
		old := hostTLS.Clone()
		old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		if _, _, err := healthCheck(t, parts[3], credentials.NewTLS(old)); status.Code(err) != codes.Unavailable {
			t.Errorf("health check over TLS 1.1: err = %v, want Unavailable (refused)", err)
		}
	}
	// The figure to compare with: a bare `node -e ''` on the same machine,
	// in the same run.
	var bare []time.Duration
	for range 5 {
		begin := time.Now()
		if out, err := exec.Command("node", "-e", "").CombinedOutput(); err != nil {
			t.Fatalf("node -e '': %v\n%s", err, out)
		}
		bare = append(bare, time.Since(begin))
	}
	t.Logf("launch to handshake with AutoMTLS: %s; bare `node -e ''`: %s", spread(startups), spread(bare))
}

// spread formats min/median/max of ds.
func spread(ds []time.Duration) string {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("min %v, median %v, max %v over %d runs", r(ds[0]), r(ds[len(ds)/2]), r(ds[len(ds)-1]), len(ds))
}

// checkServerCert checks what Go's TLS client, configured by go-plugin,
// needs of the plugin's certificate, and a little more.
func checkServerCert(t *testing.T, cert *x509.Certificate) {
	t.Helper()
	if !slices.Equal(cert.DNSNames, []string{"localhost"}) {
		t.Errorf("certificate DNS names %q, want [localhost]", cert.DNSNames)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if !slices.Contains(cert.ExtKeyUsage, u) {
			t.Errorf("certificate extended key usage %v lacks %v", cert.ExtKeyUsage, u)
		}
	}
	now := time.Now()
	if !cert.NotBefore.Before(now) {
		t.Errorf("certificate NotBefore %v is not in the past", cert.NotBefore)
	}
	if cert.NotAfter.Before(now.AddDate(1, 0, 0)) {
		t.Errorf("certificate NotAfter %v is less than a year away; a long-running host reconnects with new TLS handshakes", cert.NotAfter)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("certificate key is %T, want ECDSA P-256", cert.PublicKey)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("certificate is not validly self-signed: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots}); err != nil {
		t.Errorf("certificate does not verify as a server for localhost against itself: %v", err)
	}
}

// TestHandshakeWithoutAutoMTLS: without PLUGIN_CLIENT_CERT the plugin serves
// plaintext and prints exactly five fields (a sixth would crash a host whose
// AutoMTLS is off).
func TestHandshakeWithoutAutoMTLS(t *testing.T) {
	path := pluginPath(t)
	p := startRaw(t, path, pluginEnv(cookie(), "PLUGIN_PROTOCOL_VERSIONS=1"))
	parts := strings.Split(p.handshake, "|")
	if len(parts) != 5 || parts[0] != "1" || parts[1] != "1" || parts[2] != "tcp" || parts[4] != "grpc" {
		t.Fatalf("handshake %q, want exactly 1|1|tcp|127.0.0.1:<port>|grpc", p.handshake)
	}
	st, version, err := healthCheck(t, parts[3], insecure.NewCredentials())
	if err != nil || st != grpc_health_v1.HealthCheckResponse_SERVING || version != 0 {
		t.Fatalf("plaintext health check: status %v, TLS version %#x, err %v; want SERVING over plaintext", st, version, err)
	}
}

// TestHandshakeNegotiation: the plugin picks protocol 1 from the host's
// list, and refuses to start, with a message and without a word on stdout,
// when it is run by hand or offered no version it speaks.
func TestHandshakeNegotiation(t *testing.T) {
	path := pluginPath(t)

	p := startRaw(t, path, pluginEnv(cookie(), "PLUGIN_PROTOCOL_VERSIONS=3,2,1"))
	if parts := strings.Split(p.handshake, "|"); len(parts) < 2 || parts[1] != "1" {
		t.Errorf("offered 3,2,1: handshake %q, want app protocol 1", p.handshake)
	}

	for _, tc := range []struct {
		name       string
		env        []string
		wantStderr string
	}{
		{"no cookie", pluginEnv("PLUGIN_PROTOCOL_VERSIONS=1"), "not meant to be run"},
		{"wrong cookie", pluginEnv(sdk.Handshake.MagicCookieKey+"=nope", "PLUGIN_PROTOCOL_VERSIONS=1"), "wrong value"},
		{"no common version", pluginEnv(cookie(), "PLUGIN_PROTOCOL_VERSIONS=2,3"), "PLUGIN_PROTOCOL_VERSIONS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runToExit(t, path, tc.env)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr %q, want it to mention %q", stderr, tc.wantStderr)
			}
		})
	}
}

// TestExecutable: the daemon runs plugin.js itself (through its shebang) and
// refuses plugin files that are not executable or are world-writable.
func TestExecutable(t *testing.T) {
	fi, err := os.Stat("plugin.js")
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o111 == 0 || perm&0o002 != 0 {
		t.Errorf("plugin.js has mode %v, want executable and not world-writable (chmod 755)", perm)
	}
	src, err := os.ReadFile("plugin.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(src, []byte("#!/usr/bin/env node\n")) {
		t.Errorf("plugin.js does not start with #!/usr/bin/env node")
	}
}

// TestCookieMatchesSDK guards against the two copies of the handshake
// drifting apart: plugin.js has its own, as any non-Go plugin must.
func TestCookieMatchesSDK(t *testing.T) {
	src, err := os.ReadFile("plugin.js")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"COOKIE_KEY":            sdk.Handshake.MagicCookieKey,
		"COOKIE_VALUE":          sdk.Handshake.MagicCookieValue,
		"APP_PROTOCOL_VERSION":  strconv.Itoa(int(sdk.Handshake.ProtocolVersion)),
		"CORE_PROTOCOL_VERSION": strconv.Itoa(plugin.CoreProtocolVersion),
	} {
		m := regexp.MustCompile(`(?m)^const ` + name + ` = '?([^';]*)'?;`).FindSubmatch(src)
		if m == nil {
			t.Errorf("plugin.js: no `const %s = ...;`", name)
			continue
		}
		if string(m[1]) != want {
			t.Errorf("plugin.js: %s = %q, sdk has %q", name, m[1], want)
		}
	}
}

// TestConformance runs the SDK's conformance suite against plugin.js, launched
// exactly as the daemon launches a plugin binary (go-plugin, AutoMTLS): the
// path is the script itself, which runs through its `#!/usr/bin/env node`.
func TestConformance(t *testing.T) {
	path := pluginPath(t)
	sdktest.RunChannelBinary(t, path, sdktest.ChannelCase{
		Config: []byte("kind: email\nfail_domain: bounce.example\n"),
		BadConfigs: [][]byte{
			[]byte("kind: fax\n"),
			[]byte("colour: red\n"),
			[]byte("kind: [email, sms]\n"),
			[]byte("kind: email\nkind: sms\n"),
		},
		Messages: []sdk.Message{
			{Key: "conf-1", CustomerID: "c1", To: "ada@example.com", Subject: "Hello", Text: "Hello Ada"},
			{Key: "conf-2", CustomerID: "c2", To: "grace@bounce.example", Subject: "Hello", HTML: "<p>Hello Grace</p>"},
			{Key: "conf-3", CustomerID: "c3", To: "alan@example.com", Subject: "Hello", Text: "Hello Alan"},
		},
		Webhook: &sdk.WebhookRequest{Method: "POST", Path: "/events", URL: "https://cohort.example.com/webhooks/conformance/events",
			Headers: []sdk.Header{{Name: "Content-Type", Values: []string{"application/json"}}}, Body: []byte("[]")},
	})
}

// TestConfigAsTheDaemonSendsIt: the daemon re-encodes an instance's
// `config:` block with yaml.v3 (indent 2), keeping the author's style:
// comments, quotes, flow mappings. The plugin's small parser must read what
// comes out.
func TestConfigAsTheDaemonSendsIt(t *testing.T) {
	path := pluginPath(t)
	p := startRaw(t, path, pluginEnv(cookie(), "PLUGIN_PROTOCOL_VERSIONS=1"))
	conn, err := grpc.NewClient(strings.Split(p.handshake, "|")[3], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wire := pluginv1.NewChannelClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, tc := range []struct {
		name, doc, kind string
		fails           bool // whether a recipient @bounce.example fails
	}{
		{"block", "config:\n  kind: sms\n  fail_domain: bounce.example\n", "sms", true},
		{"flow", "config: {kind: webhook, fail_domain: bounce.example}\n", "webhook", true},
		{"comments and quotes", "config:\n  # which kind\n  kind: 'sms' # quoted\n  fail_domain: \"@Bounce.Example\"\n", "sms", true},
		{"empty mapping", "config: {}\n", "email", false},
		{"null", "config:\n", "email", false},
		{"null kind", "config:\n  kind: ~\n  fail_domain: null\n", "email", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var doc struct{ Config yaml.Node }
			if err := yaml.Unmarshal([]byte(tc.doc), &doc); err != nil {
				t.Fatal(err)
			}
			// As daemon/config's Instance.ConfigYAML does it.
			var block []byte
			if doc.Config.Kind != 0 && doc.Config.Tag != "!!null" {
				var buf bytes.Buffer
				enc := yaml.NewEncoder(&buf)
				enc.SetIndent(2)
				if err := enc.Encode(&doc.Config); err != nil {
					t.Fatal(err)
				}
				block = buf.Bytes()
			}
			info, err := wire.Configure(ctx, &pluginv1.ConfigureRequest{Instance: "yaml", ConfigYaml: block})
			if err != nil {
				t.Fatalf("Configure(%q): %v", block, err)
			}
			if info.GetKind() != tc.kind {
				t.Errorf("Configure(%q): kind %q, want %q", block, info.GetKind(), tc.kind)
			}
			resp, err := wire.Send(ctx, &pluginv1.SendRequest{Messages: []*pluginv1.Message{{Key: "x", To: "x@bounce.example"}}})
			if err != nil || len(resp.GetResults()) != 1 {
				t.Fatalf("Send: %v, %v", resp, err)
			}
			if got := resp.GetResults()[0].GetStatus() == pluginv1.ResultStatus_RESULT_STATUS_PERMANENT; got != tc.fails {
				t.Errorf("Configure(%q): a recipient at bounce.example got %v, want permanent: %v", block, resp.GetResults()[0].GetStatus(), tc.fails)
			}
		})
	}
}

// host is plugin.js launched by go-plugin the way the daemon launches plugins.
type host struct {
	client *plugin.Client
	log    *syncBuffer // the host's hclog output, JSON lines
	rpc    plugin.ClientProtocol
	conn   *grpc.ClientConn
	start  time.Duration
}

func launch(t *testing.T, path string, autoMTLS bool) *host {
	t.Helper()
	h := &host{log: &syncBuffer{}}
	h.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.VersionedPlugins(),
		Cmd:              exec.Command("node", path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         autoMTLS,
		StartTimeout:     startTimeout,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: "host", Output: h.log, Level: hclog.Debug, JSONFormat: true,
		}),
	})
	t.Cleanup(h.client.Kill)
	begin := time.Now()
	rpc, err := h.client.Client()
	if err != nil {
		t.Fatalf("starting plugin with go-plugin (AutoMTLS %v): %v\nhost log:\n%s", autoMTLS, err, h.log)
	}
	h.start = time.Since(begin)
	h.rpc = rpc
	h.conn = rpc.(*plugin.GRPCClient).Conn
	return h
}

// entries returns the host's log lines that came from the plugin's stderr
// with the given message.
func (h *host) entries(t *testing.T, message string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(h.log.String(), "\n") {
		if line == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("host log line is not JSON: %q", line)
		}
		if e["@message"] == message {
			out = append(out, e)
		}
	}
	return out
}

// TestChannelThroughGoPlugin drives every Channel call through go-plugin,
// with AutoMTLS on (the daemon's default) and off (`automtls: false`).
func TestChannelThroughGoPlugin(t *testing.T) {
	path := pluginPath(t)
	for _, autoMTLS := range []bool{true, false} {
		t.Run(fmt.Sprintf("automtls=%v", autoMTLS), func(t *testing.T) {
			h := launch(t, path, autoMTLS)
			t.Logf("go-plugin Client() (launch, handshake, dial) took %v", h.start.Round(time.Millisecond))
			if err := h.rpc.Ping(); err != nil {
				t.Fatalf("Ping (grpc.health.v1 Check %q): %v", plugin.GRPCServiceName, err)
			}
			raw, err := h.rpc.Dispense(sdk.ChannelPluginName)
			if err != nil {
				t.Fatal(err)
			}
			ch := raw.(sdk.Channel)
			wh, ok := raw.(sdk.ChannelWebhooker)
			if !ok {
				t.Fatalf("dispensed channel %T does not implement sdk.ChannelWebhooker", raw)
			}
			wire := pluginv1.NewChannelClient(h.conn)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// Send before Configure is a precondition failure, not a crash.
			if _, err := wire.Send(ctx, &pluginv1.SendRequest{}); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("Send before Configure: err = %v, want FailedPrecondition", err)
			}

			info, err := ch.Configure(ctx, sdk.ConfigureRequest{Instance: "node_main"})
			if err != nil {
				t.Fatalf("Configure with an empty config: %v", err)
			}
			want := sdk.ChannelInfo{Name: "nodechannel", Version: "0.1.0", Kind: "email", MaxBatch: 100, RateHint: 0, Webhooks: true}
			if info != want {
				t.Errorf("Configure = %+v, want %+v", info, want)
			}

			checkBadConfigs(ctx, t, ch, wire)

			info, err = ch.Configure(ctx, sdk.ConfigureRequest{Instance: "node_main",
				Config: []byte("# test instance\nkind: sms\nfail_domain: '@Bounce.Example'  # recipients here fail\n")})
			if err != nil {
				t.Fatalf("Configure: %v", err)
			}
			if info.Kind != "sms" {
				t.Errorf("Configure kind: sms → ChannelInfo.Kind %q", info.Kind)
			}

			res, err := ch.Send(ctx, nil)
			if err != nil || len(res) != 0 {
				t.Errorf("empty Send = %v, %v; want no results, no error", res, err)
			}

			msgs := []sdk.Message{
				{Key: "k1", CustomerID: "c1", To: "ann@ok.example", Subject: "Hi", Text: "hello"},
				{Key: "k2", CustomerID: "c2", To: "Bob <bob@BOUNCE.example>", Subject: "Hi", HTML: "<p>hello</p>"},
				{Key: "k3", CustomerID: "c3", To: "cy@ok.example", Metadata: map[string]string{"campaign": "winback"}},
			}
			res, err = ch.Send(ctx, msgs)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := map[string]sdk.Result{}
			for _, r := range res {
				got[r.Key] = r
			}
			if len(res) != len(msgs) || len(got) != len(msgs) {
				t.Fatalf("Send returned %d results for %d messages: %+v", len(res), len(msgs), res)
			}
			for _, k := range []string{"k1", "k3"} {
				if r := got[k]; r.Status != sdk.Accepted || r.ProviderID != "node-"+k {
					t.Errorf("result %s = %+v, want accepted with provider id node-%s", k, r, k)
				}
			}
			if r := got["k2"]; r.Status != sdk.Permanent || !strings.Contains(r.Reason, "fail_domain") || r.ProviderID != "" {
				t.Errorf("result k2 (at fail_domain) = %+v, want permanent, reason naming fail_domain", r)
			}

			resp, err := wh.Webhook(ctx, &sdk.WebhookRequest{Method: "POST", Path: "/events", URL: "https://cohort.example/webhooks/node_main/events", Body: []byte(`[]`)})
			if err != nil {
				t.Fatalf("Webhook POST: %v", err)
			}
			if resp.Response.Status != 200 || string(resp.Response.Body) != "ok" || len(resp.Events) != 0 {
				t.Errorf("Webhook POST = %d %q with %d events, want 200 \"ok\" and none", resp.Response.Status, resp.Response.Body, len(resp.Events))
			}
			resp, err = wh.Webhook(ctx, &sdk.WebhookRequest{Method: "GET", Path: "/events"})
			if err != nil {
				t.Fatalf("Webhook GET: %v", err)
			}
			if resp.Response.Status != 405 || len(resp.Events) != 0 || !hasHeader(resp.Response.Headers, "Allow", "POST") {
				t.Errorf("Webhook GET = %d, headers %v, %d events; want 405 with Allow: POST", resp.Response.Status, resp.Response.Headers, len(resp.Events))
			}

			// Past its deadline a call ends with DeadlineExceeded on the host
			// side, whatever the plugin does.
			expired, cancelExpired := context.WithDeadline(ctx, time.Now().Add(-time.Second))
			defer cancelExpired()
			if _, err := ch.Send(expired, msgs[:1]); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Send with an expired deadline: err = %v, want context.DeadlineExceeded", err)
			}

			// The plugin logged each result as hclog JSON; the host parsed the
			// lines and re-logged them at their own level. A line the host
			// could not parse (e.g. a timestamp without microseconds) would
			// be logged verbatim at debug with no "key" attribute.
			h.client.Kill()
			sends := h.entries(t, "send")
			byKey := map[string]map[string]any{}
			for _, e := range sends {
				if e["@level"] != "info" {
					t.Errorf("plugin log line %v re-logged at %v, want info", e, e["@level"])
				}
				// The host names the plugin's lines (here "host.node"; the
				// daemon uses the instance name); the plugin must not override it.
				if m, _ := e["@module"].(string); !strings.HasPrefix(m, "host.") {
					t.Errorf("plugin log line %v has @module %q, want the host's name for the plugin", e, m)
				}
				if k, ok := e["key"].(string); ok {
					byKey[k] = e
				}
			}
			for k, wantStatus := range map[string]string{"k1": "RESULT_STATUS_ACCEPTED", "k2": "RESULT_STATUS_PERMANENT", "k3": "RESULT_STATUS_ACCEPTED"} {
				if e, ok := byKey[k]; !ok || e["status"] != wantStatus {
					t.Errorf("host log has no info line \"send\" key=%s status=%s from the plugin; host log:\n%s", k, wantStatus, h.log)
				}
			}
			if strings.Contains(strings.ToLower(h.log.String()), "bob@bounce.example") {
				t.Errorf("a recipient address reached the log (personal data):\n%s", h.log)
			}
		})
	}
}

// checkBadConfigs: a bad config is INVALID_ARGUMENT on the wire, and the
// SDK's host side reads it as sdk.InvalidConfig naming the key at fault.
func checkBadConfigs(ctx context.Context, t *testing.T, ch sdk.Channel, wire pluginv1.ChannelClient) {
	t.Helper()
	for _, tc := range []struct {
		config, field string
		mention       []string
	}{
		{"kind: fax\n", "kind", []string{`"fax"`, "email, sms, webhook"}},
		{"kind: email\ncolour: red\n", "colour", []string{"unknown key", "kind, fail_domain"}},
		{"kind: sms\nkind: email\n", "kind", []string{"line 2", "twice"}},
		{"kind:\n  nested: true\n", "", []string{"line 2", "nested"}},
		{"just words\n", "", []string{"line 1", `"key: value"`}},
		{"fail_domain: \"unterminated\n", "fail_domain", []string{"unterminated"}},
	} {
		_, err := wire.Configure(ctx, &pluginv1.ConfigureRequest{Instance: "node_main", ConfigYaml: []byte(tc.config)})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Configure %q on the wire: err = %v, want InvalidArgument", tc.config, err)
		}
		_, err = ch.Configure(ctx, sdk.ConfigureRequest{Instance: "node_main", Config: []byte(tc.config)})
		var e *sdk.Error
		if !errors.As(err, &e) || e.Code != sdk.InvalidConfig || e.Field != tc.field {
			t.Errorf("Configure %q: err = %#v, want *sdk.Error{Code: InvalidConfig, Field: %q}", tc.config, err, tc.field)
			continue
		}
		for _, m := range tc.mention {
			if !strings.Contains(e.Error(), m) {
				t.Errorf("Configure %q: error %q does not mention %s", tc.config, e.Error(), m)
			}
		}
	}
}

func hasHeader(hs []sdk.Header, name, value string) bool {
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) && slices.Contains(h.Values, value) {
			return true
		}
	}
	return false
}

// TestLargeSend: a Send bigger than gRPC's default 4 MiB receive limit (100
// HTML emails of 64 KiB) must get through; the host sends up to 2 GiB.
func TestLargeSend(t *testing.T) {
	path := pluginPath(t)
	h := launch(t, path, true)
	wire := pluginv1.NewChannelClient(h.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := wire.Configure(ctx, &pluginv1.ConfigureRequest{Instance: "big"}); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("<p>Lorem ipsum dolor sit amet.</p>\n", 64<<10/36)
	req := &pluginv1.SendRequest{}
	for i := range 100 {
		req.Messages = append(req.Messages, &pluginv1.Message{Key: fmt.Sprintf("m%03d", i), To: fmt.Sprintf("u%d@example.com", i), Html: body})
	}
	resp, err := wire.Send(ctx, req)
	if err != nil {
		t.Fatalf("Send of 100 x %d KiB: %v", len(body)>>10, err)
	}
	var keys []string
	for _, r := range resp.GetResults() {
		if r.GetStatus() != pluginv1.ResultStatus_RESULT_STATUS_ACCEPTED {
			t.Errorf("result %s: %v, want accepted", r.GetKey(), r.GetStatus())
		}
		keys = append(keys, r.GetKey())
	}
	sort.Strings(keys)
	if len(keys) != 100 || keys[0] != "m000" || keys[99] != "m099" {
		t.Errorf("got %d results (%v...), want one for each of m000..m099", len(keys), keys[:min(3, len(keys))])
	}
}
