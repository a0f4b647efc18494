package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohortd/cohort/daemon/config"
	"github.com/cohortd/cohort/sdk"
)

// Role is what an instance is configured as.
type Role string

const (
	RoleSource  Role = "source"
	RoleChannel Role = "channel"
)

// State is an instance's lifecycle state.
type State string

const (
	StateStarting State = "starting"
	StateRunning  State = "running"
	StateBackoff  State = "backoff" // crashed or failed to start; will retry
	StateFailed   State = "failed"  // cannot start until the config is fixed
	StateStopped  State = "stopped"
)

// Status is a snapshot of an instance for operators (cohort plugins, metrics).
type Status struct {
	Name     string
	Role     Role
	Path     string
	SHA256   string
	Version  string
	Kind     string // channels
	State    State
	Err      string
	Restarts int
	PID      int
}

// ErrNotRunning is returned by calls made while the instance has no live plugin.
var ErrNotRunning = errors.New("plugin is not running")

// Backoff between restarts: exponential with full jitter, capped.
const pingTimeout = 5 * time.Second

const (
	backoffMin = 200 * time.Millisecond
	backoffMax = 30 * time.Second
)

// Instance supervises one configured plugin instance: launch, verify,
// configure, health-check, and replace after a crash or failed call.
type Instance struct {
	name   string
	role   Role
	cfg    *config.Instance
	path   string
	dir    string
	pubURL string
	opts   Options
	log    *slog.Logger
	m      *metrics

	fail chan uint64 // generation of a client reported broken

	mu       sync.Mutex
	gen      uint64
	client   *plugin.Client
	source   sdk.Source
	channel  sdk.Channel
	sinfo    sdk.SourceInfo
	cinfo    sdk.ChannelInfo
	checksum string
	state    State
	lastErr  error
	restarts int
	pid      int
	changed  chan struct{} // closed and replaced on every state change
}

func newInstance(name string, role Role, in *config.Instance, path, dir, pubURL string, opts Options, log *slog.Logger, m *metrics) *Instance {
	return &Instance{
		name: name, role: role, cfg: in, path: path, dir: dir, pubURL: pubURL, opts: opts,
		log:   log.With("component", "plugin", "instance", name),
		m:     m,
		fail:  make(chan uint64, 1),
		state: StateStarting, changed: make(chan struct{}),
	}
}

// Name is the instance name from config.yaml.
func (i *Instance) Name() string { return i.name }

// Role says whether the instance is a source or a channel.
func (i *Instance) Role() Role { return i.role }

// Status returns a snapshot.
func (i *Instance) Status() Status {
	i.mu.Lock()
	defer i.mu.Unlock()
	s := Status{Name: i.name, Role: i.role, Path: i.path, SHA256: i.checksum, State: i.state, Restarts: i.restarts, PID: i.pid}
	if i.lastErr != nil {
		s.Err = i.lastErr.Error()
	}
	switch i.role {
	case RoleSource:
		s.Version = i.sinfo.Version
	case RoleChannel:
		s.Version, s.Kind = i.cinfo.Version, i.cinfo.Kind
	}
	return s
}

// SourceInfo returns what the source's Configure returned (zero before).
func (i *Instance) SourceInfo() sdk.SourceInfo {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.sinfo
}

// ChannelInfo returns what the channel's Configure returned, with the
// instance's kind override applied (zero before).
func (i *Instance) ChannelInfo() sdk.ChannelInfo {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.cinfo
}

// NoDeliveryEvents reports that the channel is known to report no delivery
// events: its Configure answered and it has no webhook. Before Configure
// answered nothing is known, and it reports false.
func (i *Instance) NoDeliveryEvents() bool {
	info := i.ChannelInfo()
	return info.Name != "" && !info.Webhooks
}

func (i *Instance) setState(s State, err error) {
	i.mu.Lock()
	i.state, i.lastErr = s, err
	close(i.changed)
	i.changed = make(chan struct{})
	i.mu.Unlock()
	i.m.state(i.name, s)
}

// WaitStarted blocks until the instance is running (nil), has failed or is
// backing off after a failed start (its error), or ctx is done.
func (i *Instance) WaitStarted(ctx context.Context) error {
	for {
		i.mu.Lock()
		st, err, ch := i.state, i.lastErr, i.changed
		i.mu.Unlock()
		switch st {
		case StateRunning:
			return nil
		case StateFailed, StateBackoff, StateStopped:
			if err == nil {
				err = fmt.Errorf("instance %q is %s", i.name, st)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("instance %q: %w", i.name, ctx.Err())
		case <-ch:
		}
	}
}

// run supervises the instance until ctx is done.
func (i *Instance) run(ctx context.Context) {
	attempt := 0
	for {
		i.setState(StateStarting, nil)
		gen, err := i.launch(ctx)
		if err == nil {
			attempt = 0
			i.setState(StateRunning, nil)
			i.log.Info("plugin running", "version", i.Status().Version, "pid", i.Status().PID)
			err = i.watch(ctx, gen)
		}
		i.kill()
		if ctx.Err() != nil {
			i.setState(StateStopped, nil)
			return
		}
		err = i.named(err)
		if isPermanent(err) {
			i.log.Error("plugin instance disabled until its configuration is fixed", "err", err)
			i.setState(StateFailed, err)
			<-ctx.Done()
			i.setState(StateStopped, nil)
			return
		}
		attempt++
		wait := backoff(attempt)
		i.log.Error("plugin failed; restarting", "err", err, "in", wait.Round(time.Millisecond), "attempt", attempt)
		i.setState(StateBackoff, err)
		i.mu.Lock()
		i.restarts++
		i.mu.Unlock()
		i.m.restarts.WithLabelValues(i.name).Inc()
		select {
		case <-ctx.Done():
			i.setState(StateStopped, nil)
			return
		case <-time.After(wait):
		}
	}
}

func backoff(attempt int) time.Duration {
	d := backoffMin << min(attempt-1, 16)
	if d > backoffMax || d <= 0 {
		d = backoffMax
	}
	// Equal jitter: between d/2 and d.
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// launch starts a fresh plugin process, dispenses and configures it.
func (i *Instance) launch(ctx context.Context) (uint64, error) {
	sum, err := verifyBinary(i.path, i.cfg.SHA256)
	i.mu.Lock()
	i.checksum = sum
	i.mu.Unlock()
	if err != nil {
		// A missing, unsafe or mismatched binary stays failed until the
		// config or the file is fixed and the daemon restarted.
		return 0, &permanentError{err}
	}
	cmd := exec.Command(i.path)
	cmd.Dir = i.dir
	cmd.Env = pluginEnv()
	setParentDeath(cmd)
	if !i.cfg.AutoMTLSEnabled() {
		i.log.Warn("automtls is off for this instance: the plugin connection is not encrypted or authenticated")
	}
	cc := &plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.VersionedPlugins(),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         i.cfg.AutoMTLSEnabled(),
		StartTimeout:     i.opts.StartTimeout,
		Logger:           newHCLogger(i.log),
		SkipHostEnv:      true,
		GRPCDialOptions:  sdk.GRPCDialOptions(),
	}
	client := plugin.NewClient(cc)
	i.mu.Lock()
	i.gen++
	gen := i.gen
	i.client = client
	i.mu.Unlock()

	rpc, err := client.Client()
	if err != nil {
		return gen, fmt.Errorf("start plugin %s: %w", i.path, describeStartError(err))
	}
	raw, err := rpc.Dispense(string(i.role))
	if err != nil {
		return gen, &permanentError{fmt.Errorf("plugin %s does not serve a %s (protocol version %d): %w", i.path, i.role, client.NegotiatedVersion(), err)}
	}
	cctx, cancel := context.WithTimeout(ctx, i.cfg.Timeout)
	defer cancel()
	req := sdk.ConfigureRequest{
		Instance:    i.name,
		Config:      i.cfg.ConfigYAML(),
		PublicURL:   i.pubURL,
		WebhookPath: "/webhooks/" + i.name,
	}
	switch i.role {
	case RoleSource:
		src, ok := raw.(sdk.Source)
		if !ok {
			return gen, &permanentError{fmt.Errorf("plugin %s dispensed %T, not a source", i.path, raw)}
		}
		info, err := src.Configure(cctx, req)
		if err != nil {
			return gen, configureError(i.path, i.role, err)
		}
		i.mu.Lock()
		i.source, i.sinfo = src, info
		i.mu.Unlock()
	case RoleChannel:
		ch, ok := raw.(sdk.Channel)
		if !ok {
			return gen, &permanentError{fmt.Errorf("plugin %s dispensed %T, not a channel", i.path, raw)}
		}
		info, err := ch.Configure(cctx, req)
		if err != nil {
			return gen, configureError(i.path, i.role, err)
		}
		if i.cfg.Kind != "" {
			info.Kind = i.cfg.Kind
		}
		i.mu.Lock()
		i.channel, i.cinfo = ch, info
		i.mu.Unlock()
	}
	if rc := client.ReattachConfig(); rc != nil {
		i.mu.Lock()
		i.pid = rc.Pid
		i.mu.Unlock()
	}
	return gen, nil
}

// named prefixes err with the instance's role and name, keeping it permanent
// if it was.
func (i *Instance) named(err error) error {
	wrapped := fmt.Errorf("%s %q: %w", i.role, i.name, err)
	if isPermanent(err) {
		return &permanentError{wrapped}
	}
	return wrapped
}

// describeStartError rewords go-plugin's start errors for operators.
func describeStartError(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Unrecognized remote plugin message"):
		return fmt.Errorf("the plugin wrote to stdout before its handshake (plugins must log to stderr only): %w", err)
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return fmt.Errorf("the plugin did not complete its handshake in time (plugins.start_timeout): %w", err)
	case strings.Contains(strings.ToLower(msg), "incompatible api version"), strings.Contains(strings.ToLower(msg), "incompatible core api version"):
		return &permanentError{fmt.Errorf("the plugin speaks a protocol version this daemon does not (daemon supports %v): %w", supportedVersions(), err)}
	}
	return err
}

func supportedVersions() []int {
	var vs []int
	for v := range sdk.VersionedPlugins() {
		vs = append(vs, v)
	}
	return vs
}

func configureError(path string, role Role, err error) error {
	if strings.Contains(err.Error(), "unknown service cohort.plugin.") {
		return &permanentError{fmt.Errorf("plugin %s does not serve a %s: %w", path, role, err)}
	}
	var se *sdk.Error
	if errors.As(err, &se) && (se.Code == sdk.InvalidConfig || se.Code == sdk.InvalidArgument) {
		return &permanentError{fmt.Errorf("invalid plugin config: %w", err)}
	}
	return fmt.Errorf("configure: %w", err)
}

// watch blocks while the plugin is healthy: it pings it periodically and
// returns when a ping fails, a call reported the client broken, or ctx ends.
func (i *Instance) watch(ctx context.Context, gen uint64) error {
	t := time.NewTicker(i.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case g := <-i.fail:
			if g == gen {
				return errors.New("a call to the plugin failed; replacing it")
			}
		case <-t.C:
			if err := i.ping(); err != nil {
				return fmt.Errorf("health check: %w", err)
			}
		}
	}
}

func (i *Instance) ping() error {
	i.mu.Lock()
	c := i.client
	i.mu.Unlock()
	if c == nil || c.Exited() {
		return errors.New("plugin process exited")
	}
	rpc, err := c.Client()
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- rpc.Ping() }()
	select {
	case err := <-done:
		return err
	case <-time.After(pingTimeout):
		return fmt.Errorf("no answer to a health check in %s", pingTimeout)
	}
}

// kill stops the current plugin process, if any. go-plugin asks it to shut
// down gracefully, then kills it.
func (i *Instance) kill() {
	i.mu.Lock()
	c := i.client
	i.client, i.source, i.channel, i.pid = nil, nil, nil, 0
	i.mu.Unlock()
	if c != nil {
		c.Kill()
	}
}

// current waits (bounded by ctx) until a live plugin is available.
func (i *Instance) current(ctx context.Context) (uint64, sdk.Source, sdk.Channel, error) {
	for {
		i.mu.Lock()
		st, gen, src, ch, err, changed := i.state, i.gen, i.source, i.channel, i.lastErr, i.changed
		i.mu.Unlock()
		switch st {
		case StateRunning:
			return gen, src, ch, nil
		case StateFailed, StateStopped:
			if err == nil {
				err = ErrNotRunning
			}
			return 0, nil, nil, fmt.Errorf("plugin instance %q is %s: %w", i.name, st, err)
		}
		select {
		case <-ctx.Done():
			return 0, nil, nil, fmt.Errorf("plugin instance %q is %s (%v): %w", i.name, st, err, ErrNotRunning)
		case <-changed:
		}
	}
}

// report classifies a call's error: when the process exited, the per-call
// timeout fired (the plugin never answered), or the error looks like a
// transport failure and a health ping confirms the plugin is unreachable, the
// client is marked broken at once (so the next call waits for a fresh
// process) and the supervisor replaces it.
func (i *Instance) report(ctx context.Context, gen uint64, err error) {
	if err == nil {
		return
	}
	var broken bool
	switch {
	case i.exited():
		broken = true
	case errors.Is(err, context.DeadlineExceeded):
		broken = true
	case errors.Is(err, context.Canceled):
		return // the caller gave up; the plugin is not to blame
	default:
		var se *sdk.Error
		transport := status.Code(err) == codes.Unavailable ||
			errors.As(err, &se) && (se.Code == sdk.Unavailable || se.Code == sdk.Internal || se.Code == sdk.Unknown)
		broken = transport && i.ping() != nil
	}
	if !broken {
		return
	}
	i.m.callFailures.WithLabelValues(i.name).Inc()
	i.mu.Lock()
	if i.gen == gen && i.state == StateRunning {
		i.state, i.lastErr = StateStarting, fmt.Errorf("replacing the plugin after a failed call: %w", err)
		close(i.changed)
		i.changed = make(chan struct{})
	}
	i.mu.Unlock()
	select {
	case i.fail <- gen:
	default:
	}
}

func (i *Instance) exited() bool {
	i.mu.Lock()
	c := i.client
	i.mu.Unlock()
	return c == nil || c.Exited()
}

// callCtx bounds a call by the instance's timeout.
func (i *Instance) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, i.cfg.Timeout)
}

// pluginEnv is the environment plugins get: enough to run (PATH for
// interpreters, HOME, locale, temp dir, time zone), never the daemon's
// secrets. Plugins receive their settings through Configure.
func pluginEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}
