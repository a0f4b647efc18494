package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/cohortd/cohort/daemon/config"
	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/daemon/pluginhost"
	"github.com/cohortd/cohort/daemon/profile"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// Schema is what rules compile against: the union of the running sources'
// declared traits and event names, and the channel instances' kinds.
type Schema struct {
	Rules    rules.Schema
	Channels map[string]string
	// Sources holds each running source's Configure info.
	Sources map[string]sdk.SourceInfo
	// Problems are trait conflicts between sources and sources that did not
	// start; each is logged.
	Problems []string
}

// LoadSchema waits (bounded by ctx) for the plugin instances to start and
// merges what the sources declare. A source that does not start contributes
// nothing, and is reported in Problems.
func LoadSchema(ctx context.Context, cfg *config.Config, host *pluginhost.Host) *Schema {
	errs := host.WaitStarted(ctx)
	s := &Schema{
		Rules:    rules.Schema{Traits: map[string]sdk.TraitType{}, RFMEvent: cfg.RFM.Event},
		Channels: map[string]string{},
		Sources:  map[string]sdk.SourceInfo{},
	}
	events := map[string]bool{}
	owner := map[string]string{}
	for _, name := range cfg.Sources.Names {
		if err := errs[name]; err != nil {
			s.Problems = append(s.Problems, fmt.Sprintf("source %q is not running, so its traits are unknown to rules: %v", name, err))
			continue
		}
		info := host.Instance(name).SourceInfo()
		s.Sources[name] = info
		for _, t := range info.Traits {
			if prev, ok := s.Rules.Traits[t.Name]; ok && prev != t.Type {
				s.Problems = append(s.Problems, fmt.Sprintf("trait %q is a %s in source %q but a %s in source %q; rules use the %s",
					t.Name, prev, owner[t.Name], t.Type, name, prev))
				continue
			}
			if _, ok := s.Rules.Traits[t.Name]; !ok {
				s.Rules.Traits[t.Name], owner[t.Name] = t.Type, name
			}
		}
		for _, e := range info.EventNames {
			events[e] = true
		}
	}
	for e := range events {
		s.Rules.Events = append(s.Rules.Events, e)
	}
	sort.Strings(s.Rules.Events)
	for _, name := range cfg.Channels.Names {
		kind := cfg.Channels.ByName[name].Kind
		if errs[name] == nil {
			if k := host.Instance(name).ChannelInfo().Kind; k != "" {
				kind = k
			}
		}
		s.Channels[name] = kind
	}
	return s
}

// LoadRules loads and compiles the rules directory against the schema.
func LoadRules(cfg *config.Config, s *Schema) (*rules.Set, error) {
	return rules.LoadDir(cfg.Path(cfg.Rules.Dir), rules.LoadOptions{Schema: s.Rules, Channels: s.Channels})
}

// LoadProfiles builds the in-memory profile store from storage. progress,
// when not nil, is called as customers load (for a terminal progress line).
func LoadProfiles(ctx context.Context, db *storage.DB, schema rules.Schema, log *slog.Logger, progress ...func(customers int, done bool)) (*profile.Store, error) {
	start := time.Now()
	progress = slices.DeleteFunc(progress, func(p func(int, bool)) bool { return p == nil })
	store := profile.New(schema)
	var (
		batch   profile.Batch
		skipped = map[string]int{}
		loaded  int
	)
	flush := func() error {
		err := store.Apply(batch)
		batch = profile.Batch{}
		return err
	}
	err := db.EachCustomer(ctx, func(c storage.Customer) error {
		traits, bad, err := ingest.TraitsFromJSON(c.Traits, schema.Traits)
		if err != nil {
			return fmt.Errorf("customer %q: %w", c.ID, err)
		}
		for _, b := range bad {
			skipped[b]++
		}
		batch.Customers = append(batch.Customers, sdk.Customer{ID: c.ID, Traits: traits})
		loaded++
		if len(batch.Customers) >= 4096 {
			for _, p := range progress {
				p(loaded, false)
			}
			return flush()
		}
		return nil
	})
	for _, p := range progress {
		p(loaded, true)
	}
	if err == nil {
		err = flush()
	}
	if err != nil {
		return nil, fmt.Errorf("load profiles: %w", err)
	}
	err = db.EachRollup(ctx, func(r storage.Rollup) error {
		batch.Rollups = append(batch.Rollups, profile.Rollup(r))
		if len(batch.Rollups) >= 8192 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return nil, fmt.Errorf("load event rollups: %w", err)
	}
	for name, n := range skipped {
		log.Warn("stored trait values no longer match the source's type; skipped", "trait", name, "customers", n)
	}
	log.Info("profiles loaded", "customers", store.Customers(), "took", time.Since(start).Round(time.Millisecond))
	return store, nil
}

// profiles adapts the profile store to what the segmenter reads.
type profiles struct{ s *profile.Store }

func (p profiles) Read(fn func(rules.Table) error) error { return p.s.View(fn) }
func (p profiles) Row(id string) (uint32, bool)          { return p.s.Row(id) }
func (p profiles) ID(row uint32) string                  { return p.s.ID(row) }

// refreshGroups groups segments by their refresh schedule.
func refreshGroups(set *rules.Set) map[string][]string {
	out := map[string][]string{}
	for _, seg := range set.Segments() {
		out[seg.Refresh] = append(out[seg.Refresh], seg.Name)
	}
	return out
}
