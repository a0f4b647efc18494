package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/cohortd/cohort/daemon/campaign"
	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/daemon/message"
	"github.com/cohortd/cohort/daemon/profile"
	"github.com/cohortd/cohort/daemon/segment"
	"github.com/cohortd/cohort/rules"
)

// boot loads what segmentation needs, in an order that loses nothing:
// sources' schemas, rules, profiles from storage, stored membership and a
// full pass; only then do source streams start (feeding profiles and
// incremental passes) and cron schedules begin. An error here (a broken
// rules directory, unreadable storage) stops the daemon at start.
func (d *Daemon) boot(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, d.cfg.Plugins.StartTimeout+10*time.Second)
	schema := LoadSchema(sctx, d.cfg, d.plugins)
	cancel()
	for _, p := range schema.Problems {
		d.log.Warn(p)
	}
	set, err := LoadRules(d.cfg, schema)
	if err != nil {
		return fmt.Errorf("rules in %s:\n%w", d.cfg.Path(d.cfg.Rules.Dir), err)
	}
	msgs, err := CompileMessages(d.cfg, set, schema)
	if err != nil {
		return fmt.Errorf("campaign templates in %s:\n%w", d.cfg.Path(d.cfg.Rules.Dir), err)
	}
	store, err := LoadProfiles(ctx, d.db, schema.Rules, d.log)
	if err != nil {
		return err
	}
	seg := segment.New(d.db, profiles{store}, set, d.log, d.registry, nil)
	if err := seg.Load(ctx); err != nil {
		return err
	}
	d.mu.Lock()
	d.schema, d.store, d.segmenter = schema, store, seg
	d.mu.Unlock()
	camp, err := d.newCampaigns(ctx, schema, set, msgs)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.campaigns = camp
	d.mu.Unlock()
	d.sink.setDeliveries(camp.DeliveryEvents)
	if err := d.fullPass(ctx, nil); err != nil {
		return err
	}
	d.workers.Add(1)
	go func() {
		defer d.workers.Done()
		if err := camp.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("campaigns stopped", "err", err)
		}
	}()
	d.observer.set(&liveUpdater{d: d, store: store, seg: seg, caughtUp: map[string]bool{}})
	d.sink.start(ctx, &d.workers)
	d.workers.Add(1)
	go func() {
		defer d.workers.Done()
		d.db.CheckpointLoop(ctx, time.Second, d.log)
	}()

	for _, name := range d.cfg.Sources.Names {
		d.workers.Add(1)
		go func() {
			defer d.workers.Done()
			d.runSource(ctx, name, d.sink)
		}()
	}
	if err := d.schedule(ctx, set); err != nil {
		return err
	}
	d.workers.Add(1)
	go func() {
		defer d.workers.Done()
		d.watchRules(ctx)
	}()
	d.booted.Store(true)
	d.log.Info("segmentation ready", "segments", len(set.Segments()), "customers", store.Customers())
	return nil
}

// fullPass recomputes RFM (when configured and a rule of the pass reads
// it) and runs a full pass.
func (d *Daemon) fullPass(ctx context.Context, segments []string) error {
	d.mu.Lock()
	store, seg, schema, camp := d.store, d.segmenter, d.schema, d.campaigns
	d.mu.Unlock()
	set := seg.Rules()
	if schema.Rules.RFMEvent != "" && set.UsesRFM(segments) {
		if err := store.ComputeRFM(); err != nil {
			d.log.Warn("rfm not computed", "err", err)
		}
	}
	res, err := seg.FullPass(ctx, segments)
	if err == nil && camp != nil {
		camp.Notify(campaign.Pass{ID: res.Pass, Full: true, Segments: segments, Set: set, CaughtUp: d.sourcesCaughtUp(ctx, schema)})
	}
	return err
}

// sourcesCaughtUp reports whether every running source has finished its
// first import (its committed cursor is marked caught up).
func (d *Daemon) sourcesCaughtUp(ctx context.Context, schema *Schema) bool {
	for name := range schema.Sources {
		_, caught, err := d.db.Cursor(ctx, name)
		if err != nil || !caught {
			return false
		}
	}
	return true
}

// schedule (re)starts the cron schedules of the rule set.
func (d *Daemon) schedule(ctx context.Context, set *rules.Set) error {
	sch, err := segment.NewScheduler(ctx, d.cfg.Location, d.log.With("component", "segment"), refreshGroups(set),
		func(ctx context.Context, segs []string) {
			if err := d.fullPass(ctx, segs); err != nil && ctx.Err() == nil {
				d.log.Error("scheduled pass failed", "err", err)
			}
		})
	if err != nil {
		return err
	}
	d.mu.Lock()
	old := d.scheduler
	d.scheduler = sch
	d.mu.Unlock()
	if old != nil {
		old.Stop()
	}
	sch.Start()
	return nil
}

// watchRules reloads the rules directory when it changes. A broken edit is
// rejected with its errors and the last good rules keep running.
func (d *Daemon) watchRules(ctx context.Context) {
	dir := d.cfg.Path(d.cfg.Rules.Dir)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		d.log.Error("rules hot reload disabled", "err", err)
		return
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		d.log.Error("rules hot reload disabled", "dir", dir, "err", err)
		return
	}
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.Events:
			if ext := filepath.Ext(ev.Name); ext == ".yaml" || ext == ".yml" {
				timer = time.After(300 * time.Millisecond)
			}
		case err := <-w.Errors:
			d.log.Warn("rules watcher", "err", err)
		case <-timer:
			timer = nil
			d.reloadRules(ctx)
		}
	}
}

func (d *Daemon) reloadRules(ctx context.Context) {
	d.mu.Lock()
	schema, seg := d.schema, d.segmenter
	d.mu.Unlock()
	set, err := LoadRules(d.cfg, schema)
	var msgs *message.Set
	if err == nil {
		msgs, err = CompileMessages(d.cfg, set, schema)
	}
	if err != nil {
		d.m.reloads.WithLabelValues("rejected").Inc()
		d.log.Error("rules not reloaded: the edit has errors; the last good rules keep running", "err", err)
		return
	}
	d.mu.Lock()
	camp := d.campaigns
	d.mu.Unlock()
	if camp != nil {
		camp.SetRules(set, msgs)
	}
	seg.SetRules(set)
	if err := d.schedule(ctx, set); err != nil {
		d.log.Error("rules reloaded, but their schedules are invalid", "err", err)
	}
	d.m.reloads.WithLabelValues("applied").Inc()
	d.log.Info("rules reloaded", "segments", len(set.Segments()))
	if err := d.fullPass(ctx, nil); err != nil && ctx.Err() == nil {
		d.log.Error("pass after reload failed", "err", err)
	}
}

// observerSwitch forwards committed batches to the live updater once boot
// has built it (no batch is committed before: streams start after boot).
type observerSwitch struct {
	mu sync.Mutex
	o  ingest.Observer
}

func (s *observerSwitch) set(o ingest.Observer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.o = o
}

func (s *observerSwitch) Committed(ctx context.Context, ch *ingest.Changes) {
	s.mu.Lock()
	o := s.o
	s.mu.Unlock()
	if o != nil {
		o.Committed(ctx, ch)
	}
}

// liveUpdater applies committed changes to the profiles and re-evaluates the
// customers they touched.
type liveUpdater struct {
	d     *Daemon
	store *profile.Store
	seg   *segment.Segmenter

	mu       sync.Mutex
	caughtUp map[string]bool
}

func (u *liveUpdater) Committed(ctx context.Context, ch *ingest.Changes) {
	b := profile.Batch{Customers: ch.Customers, Deletes: ch.Deletes}
	for _, r := range ingest.Rollups(ch.Events) {
		b.Rollups = append(b.Rollups, profile.Rollup(r))
	}
	if err := u.store.Apply(b); err != nil {
		u.d.log.Warn("some changes were not applied to the in-memory profiles", "source", ch.Source, "err", err)
	}
	seen := map[string]bool{}
	var ids []string
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	for _, c := range ch.Customers {
		add(c.ID)
	}
	for _, id := range ch.Deletes {
		add(id)
	}
	for _, e := range ch.Events {
		add(e.CustomerID)
	}
	res, err := u.seg.Incremental(ctx, ids)
	if err != nil && ctx.Err() == nil {
		u.d.log.Error("incremental pass failed; the next full pass will catch up", "source", ch.Source, "err", err)
	}
	if err == nil && res != nil && res.Pass != 0 {
		u.d.mu.Lock()
		camp := u.d.campaigns
		u.d.mu.Unlock()
		if camp != nil {
			camp.Notify(campaign.Pass{ID: res.Pass})
		}
	}
	// When a source first drains its backlog, a full pass brings everything
	// computed over the whole population (RFM quintiles) up to date.
	if ch.CaughtUp {
		u.mu.Lock()
		first := !u.caughtUp[ch.Source]
		u.caughtUp[ch.Source] = true
		u.mu.Unlock()
		if first {
			if err := u.d.fullPass(ctx, nil); err != nil && ctx.Err() == nil {
				u.d.log.Error("full pass after the first import failed", "source", ch.Source, "err", err)
			}
		}
	}
}
