// Package pluginhost launches, verifies and supervises the plugin instances
// configured in config.yaml, and forwards webhooks to them.
//
// Each instance runs in its own process under go-plugin over gRPC with
// AutoMTLS. The host verifies the binary before every launch (not
// world-writable; SHA-256 when pinned), configures it, pings it, and replaces
// it with exponential backoff when it crashes, stops answering or a call
// fails at the transport level. A broken instance never stops the others.
package pluginhost

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortd/cohort/daemon/config"
)

// Options tune supervision.
type Options struct {
	// StartTimeout bounds launch and handshake (config plugins.start_timeout).
	StartTimeout time.Duration
	// HealthInterval is how often a running plugin is pinged (default 10s).
	HealthInterval time.Duration
}

// Host owns every plugin instance.
type Host struct {
	log       *slog.Logger
	m         *metrics
	instances map[string]*Instance
	order     []string

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New builds a host for the instances in cfg. It starts nothing.
func New(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, opts Options) *Host {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = cfg.Plugins.StartTimeout
	}
	if opts.HealthInterval == 0 {
		opts.HealthInterval = 10 * time.Second
	}
	h := &Host{log: log, m: newMetrics(reg), instances: map[string]*Instance{}}
	add := func(role Role, is config.Instances) {
		for _, name := range is.Names {
			in := is.ByName[name]
			h.instances[name] = newInstance(name, role, in, cfg.PluginPath(in), cfg.Dir, cfg.HTTP.PublicURL, opts, log, h.m)
			h.order = append(h.order, name)
		}
	}
	add(RoleSource, cfg.Sources)
	add(RoleChannel, cfg.Channels)
	return h
}

// Start launches every instance in the background; it does not wait for
// them (see WaitStarted). Stop with Close.
func (h *Host) Start(ctx context.Context) {
	ctx, h.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for _, name := range h.order {
		in := h.instances[name]
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			in.run(ctx)
		}()
	}
}

// WaitStarted waits until every instance is running or has failed to start,
// and returns each failure by instance name.
func (h *Host) WaitStarted(ctx context.Context) map[string]error {
	errs := map[string]error{}
	for _, name := range h.order {
		if err := h.instances[name].WaitStarted(ctx); err != nil {
			errs[name] = err
		}
	}
	return errs
}

// Close stops every plugin process and waits for the supervisors.
func (h *Host) Close() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.wg.Wait()
}

// Instance returns the named instance, or nil.
func (h *Host) Instance(name string) *Instance { return h.instances[name] }

// Source returns a client for the named source instance.
func (h *Host) Source(name string) (*SourceClient, error) {
	in := h.instances[name]
	if in == nil || in.role != RoleSource {
		return nil, fmt.Errorf("no source instance %q in the config", name)
	}
	return &SourceClient{in}, nil
}

// Channel returns a client for the named channel instance.
func (h *Host) Channel(name string) (*ChannelClient, error) {
	in := h.instances[name]
	if in == nil || in.role != RoleChannel {
		return nil, fmt.Errorf("no channel instance %q in the config", name)
	}
	return &ChannelClient{in}, nil
}

// Statuses returns every instance's status, sorted by name.
func (h *Host) Statuses() []Status {
	out := make([]Status, 0, len(h.instances))
	for _, in := range h.instances {
		out = append(out, in.Status())
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

type metrics struct {
	up           *prometheus.GaugeVec
	restarts     *prometheus.CounterVec
	callFailures *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "cohort", Subsystem: "plugin", Name: "up",
			Help: "1 while the plugin instance is running, 0 otherwise.",
		}, []string{"instance"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cohort", Subsystem: "plugin", Name: "restarts_total",
			Help: "Plugin processes replaced after a crash or failure.",
		}, []string{"instance"}),
		callFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cohort", Subsystem: "plugin", Name: "call_failures_total",
			Help: "Calls that failed because the plugin crashed, hung or became unreachable.",
		}, []string{"instance"}),
	}
	if reg != nil {
		reg.MustRegister(m.up, m.restarts, m.callFailures)
	}
	return m
}

func (m *metrics) state(name string, s State) {
	v := 0.0
	if s == StateRunning {
		v = 1
	}
	m.up.WithLabelValues(name).Set(v)
}
