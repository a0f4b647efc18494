// Package daemon is the Cohort process: it wires configuration, storage,
// plugins, segmentation, campaigns and the HTTP surface together, and owns
// their lifecycle (start in order, stop in reverse, tolerate a partial start).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cohortd/cohort/daemon/api"
	"github.com/cohortd/cohort/daemon/campaign"
	"github.com/cohortd/cohort/daemon/config"
	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/daemon/pluginhost"
	"github.com/cohortd/cohort/daemon/profile"
	"github.com/cohortd/cohort/daemon/segment"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// version is set at build time with -ldflags "-X github.com/cohortd/cohort/daemon.version=...".
var version = ""

// Version returns the build's version: the ldflags value, else the module
// version or VCS revision recorded by the Go toolchain.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}

// StartupError is an error before the daemon began serving: bad config, an
// unreachable database, an address in use. The command exits with status 2.
type StartupError struct{ Err error }

func (e *StartupError) Error() string { return e.Err.Error() }
func (e *StartupError) Unwrap() error { return e.Err }

// Daemon is one running Cohort process.
type Daemon struct {
	cfg      *config.Config
	log      *slog.Logger
	registry *prometheus.Registry

	db       *storage.DB
	plugins  *pluginhost.Host
	ingest   *ingest.Ingester
	sink     *webhookSink
	observer observerSwitch
	m        *daemonMetrics

	// Built by boot; guarded by mu.
	mu        sync.Mutex
	schema    *Schema
	store     *profile.Store
	segmenter *segment.Segmenter
	scheduler *segment.Scheduler
	campaigns *campaign.Engine
	now       func() time.Time
	booted    atomic.Bool
	unsub     atomic.Pointer[http.Handler]

	// work is cancelled at shutdown, before plugins and storage close;
	// background goroutines are tracked by workers.
	work     context.Context
	stopWork context.CancelFunc
	workers  sync.WaitGroup
	http     *api.Server
	addr     net.Addr
	ready    chan struct{}
}

// New returns a daemon for cfg. It has no side effects; Run starts it.
func New(cfg *config.Config, log *slog.Logger) *Daemon {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Daemon{cfg: cfg, log: log, registry: reg, ready: make(chan struct{}), m: newDaemonMetrics(reg), now: time.Now}
}

// Registry is the Prometheus registry every part adds its series to.
func (d *Daemon) Registry() *prometheus.Registry { return d.registry }

// Ready is closed once the daemon serves; Addr is valid from then on.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Addr is the HTTP listener's address (useful with port 0).
func (d *Daemon) Addr() net.Addr { return d.addr }

// Run starts the daemon and blocks until ctx is cancelled, then stops it:
// stop accepting work, finish or release what is in flight, close storage.
// Errors before serving are *StartupError.
func (d *Daemon) Run(ctx context.Context) (err error) {
	d.log.Info("starting cohort", "version", Version(), "config", d.cfg.File,
		"storage", d.cfg.Storage.Driver, "timezone", d.cfg.Timezone)
	defer func() {
		if cerr := d.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := d.start(ctx); err != nil {
		return &StartupError{Err: err}
	}
	ln, err := d.http.Listen(d.cfg.HTTP.Listen)
	if err != nil {
		return &StartupError{Err: err}
	}
	d.addr = ln.Addr()
	serveErr := make(chan error, 1)
	go func() { serveErr <- d.http.Serve(ln) }()
	close(d.ready)
	d.log.Info("cohort is running", "addr", d.addr.String(), "public_url", d.cfg.HTTP.PublicURL)

	bootErr := make(chan error, 1)
	d.workers.Add(1)
	go func() {
		defer d.workers.Done()
		bootErr <- d.boot(d.work)
	}()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			d.log.Info("stopping cohort", "reason", context.Cause(ctx))
			done = true
		case err := <-serveErr:
			return fmt.Errorf("http server: %w", err)
		case err := <-bootErr:
			if err != nil && ctx.Err() == nil {
				return &StartupError{Err: err}
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.HTTP.ShutdownTimeout)
	defer cancel()
	if err := d.http.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

// start opens what the daemon needs, in order. close undoes whatever of it
// was done.
func (d *Daemon) start(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	dsn := d.cfg.Storage.DSN
	if d.cfg.Storage.Driver == "sqlite" {
		dsn = d.cfg.SQLitePath()
	}
	db, err := storage.Open(octx, storage.Config{
		Driver:       storage.Dialect(d.cfg.Storage.Driver),
		DSN:          dsn,
		MaxOpenConns: d.cfg.Storage.MaxOpenConns,
		Logger:       d.log,
	})
	if err != nil {
		return err
	}
	d.db = db
	d.http = api.New(d.log, d.registry, d.readyCheck)

	// Plugins start in the background; an instance that fails is logged and
	// retried (or disabled, if its config is wrong) without stopping the rest.
	d.plugins = pluginhost.New(d.cfg, d.log, d.registry, pluginhost.Options{})
	d.plugins.Start(ctx)
	d.ingest = ingest.New(d.db, d.log, d.registry, ingest.Options{}, &d.observer)
	d.sink = &webhookSink{ingest: d.ingest, validators: map[string]*ingest.Validator{}}
	d.http.Handle("/webhooks/{instance}/{rest...}", "webhooks", d.plugins.WebhookHandler(d.cfg.HTTP.PublicURL, d.sink))
	d.http.Handle("/unsubscribe", "unsubscribe", d.unsubscribeHandler())
	d.work, d.stopWork = context.WithCancel(context.WithoutCancel(ctx))
	return nil
}

// runSource waits for a source instance to start, then streams it into
// storage until work stops. A source whose plugin cannot start is logged by
// the plugin host and left alone.
func (d *Daemon) runSource(ctx context.Context, name string, sink *webhookSink) {
	src, err := d.plugins.Source(name)
	if err != nil {
		d.log.Error("source not started", "source", name, "err", err)
		return
	}
	info, err := src.Configure(ctx, sdk.ConfigureRequest{})
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("source is not running; its data is not ingested", "source", name, "err", err)
		}
		return
	}
	sink.setValidator(name, ingest.NewValidator(name, info, time.Now, 24*time.Hour))
	d.ingest.Run(ctx, name, src, info)
}

// Plugins is the plugin host (valid once Ready is closed).
func (d *Daemon) Plugins() *pluginhost.Host { return d.plugins }

func (d *Daemon) readyCheck(ctx context.Context) error {
	if err := d.db.Ping(ctx); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if !d.booted.Load() {
		return errors.New("starting: loading rules, profiles and segment membership")
	}
	return nil
}

func (d *Daemon) close() error {
	var errs []error
	if d.stopWork != nil {
		d.stopWork()
		d.mu.Lock()
		sch := d.scheduler
		d.mu.Unlock()
		if sch != nil {
			sch.Stop()
		}
		d.workers.Wait()
	}
	if d.plugins != nil {
		d.plugins.Close()
		d.plugins = nil
	}
	if d.db != nil {
		if err := d.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close storage: %w", err))
		}
		d.db = nil
	}
	d.log.Info("cohort stopped")
	return errors.Join(errs...)
}

type daemonMetrics struct {
	reloads *prometheus.CounterVec
}

func newDaemonMetrics(reg prometheus.Registerer) *daemonMetrics {
	m := &daemonMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "rules", Name: "reloads_total",
			Help: "Rules directory reloads, by result (applied, rejected)."}, []string{"result"}),
	}
	reg.MustRegister(m.reloads)
	return m
}
