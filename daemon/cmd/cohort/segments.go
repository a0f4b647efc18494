package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"path/filepath"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cohortd/cohort/daemon"
	"github.com/cohortd/cohort/daemon/config"
	"github.com/cohortd/cohort/daemon/logging"
	"github.com/cohortd/cohort/daemon/message"
	"github.com/cohortd/cohort/daemon/pluginhost"
	"github.com/cohortd/cohort/daemon/profile"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/storage"
)

// workspace is what the offline tools (check, preview, explain) load: the
// config, the plugins (for the sources' schemas), the compiled rules, and
// for preview/explain the stored profiles.
type workspace struct {
	// progress draws a live counter on a terminal while profiles load.
	progress func(customers int, done bool)

	cfg    *config.Config
	log    *slog.Logger
	host   *pluginhost.Host
	schema *daemon.Schema
	set    *rules.Set
	db     *storage.DB
	store  *profile.Store
}

func (w *workspace) close() {
	if w.host != nil {
		w.host.Close()
	}
	if w.db != nil {
		w.db.Close()
	}
}

// openWorkspace loads config, starts the plugins and compiles the rules.
// Rule errors are usage errors (exit 2).
func openWorkspace(ctx context.Context, g *globalFlags, stderr io.Writer) (*workspace, error) {
	return openWorkspaceWith(ctx, g, stderr, false)
}

// openWorkspaceWith is openWorkspace; with sourcesOnly it starts the
// source plugins only and takes each channel's kind from config.yaml
// (send-test then starts the one channel it needs).
func openWorkspaceWith(ctx context.Context, g *globalFlags, stderr io.Writer, sourcesOnly bool) (*workspace, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	w := &workspace{cfg: cfg, log: logging.New(stderr, "error", cfg.Log.Format), progress: terminalProgress(stderr, "loading profiles")}
	hostCfg := cfg
	if sourcesOnly {
		c := *cfg
		c.Channels = config.Instances{ByName: map[string]*config.Instance{}}
		hostCfg = &c
	}
	w.host = pluginhost.New(hostCfg, w.log, prometheus.NewRegistry(), pluginhost.Options{})
	sctx, cancel := context.WithTimeout(ctx, cfg.Plugins.StartTimeout+10*time.Second)
	defer cancel()
	w.host.Start(sctx)
	w.schema = daemon.LoadSchema(sctx, hostCfg, w.host)
	if sourcesOnly {
		for _, name := range cfg.Channels.Names {
			w.schema.Channels[name] = cfg.Channels.ByName[name].Kind
		}
	}
	for _, p := range w.schema.Problems {
		fmt.Fprintln(stderr, "warning:", p)
	}
	w.set, err = daemon.LoadRules(cfg, w.schema)
	if err != nil {
		w.close()
		return nil, usageError{fmt.Errorf("rules in %s:\n%w", cfg.Path(cfg.Rules.Dir), err)}
	}
	return w, nil
}

// openDB opens storage (once).
func (w *workspace) openDB(ctx context.Context) error {
	if w.db != nil {
		return nil
	}
	dsn := w.cfg.Storage.DSN
	if w.cfg.Storage.Driver == "sqlite" {
		dsn = w.cfg.SQLitePath()
	}
	db, err := storage.Open(ctx, storage.Config{Driver: storage.Dialect(w.cfg.Storage.Driver), DSN: dsn, Logger: w.log})
	if err != nil {
		return usageError{err}
	}
	w.db = db
	return nil
}

// loadProfiles opens storage and builds the profiles from it.
func (w *workspace) loadProfiles(ctx context.Context) error {
	if err := w.openDB(ctx); err != nil {
		return err
	}
	var err error
	var progress []func(int, bool)
	if w.progress != nil {
		// LoadProfiles calls every function it is given: a nil one panics.
		progress = append(progress, w.progress)
	}
	w.store, err = daemon.LoadProfiles(ctx, w.db, w.schema.Rules, w.log, progress...)
	if err != nil {
		return err
	}
	if w.schema.Rules.RFMEvent != "" {
		_ = w.store.ComputeRFM()
	}
	return nil
}

// checkRules compiles the rules and runs the fixtures; used by `cohort check`.
func checkRules(cmd *cobra.Command, g *globalFlags) error {
	ctx := cmd.Context()
	w, err := openWorkspace(ctx, g, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer w.close()
	rulesDir := w.cfg.Path(w.cfg.Rules.Dir)
	msgs, err := daemon.CompileMessages(w.cfg, w.set, w.schema)
	if err != nil {
		return usageError{fmt.Errorf("templates in %s:\n%w", rulesDir, err)}
	}
	fixDir := filepath.Join(rulesDir, rules.FixturesDir)
	fixtures, err := rules.LoadFixtures(fixDir, w.schema.Rules)
	if err != nil {
		return usageError{fmt.Errorf("fixtures in %s:\n%w", fixDir, err)}
	}
	failures, err := rules.RunFixtures(w.set, fixtures)
	if err != nil {
		return usageError{fmt.Errorf("fixtures in %s:\n%w", fixDir, err)}
	}
	out := cmd.OutOrStdout()
	campFails, campChecked, err := w.checkCampaignFixtures(fixtures)
	if err != nil {
		return usageError{fmt.Errorf("fixtures in %s:\n%w", fixDir, err)}
	}
	if len(failures)+len(campFails) > 0 {
		for _, f := range failures {
			fmt.Fprintln(out, f.Error())
		}
		for _, f := range campFails {
			fmt.Fprintln(out, f)
		}
		return usageError{fmt.Errorf("%d fixture expectation(s) failed", len(failures)+len(campFails))}
	}
	profiles := fixtureProfiles(fixtures)
	if err := msgs.CheckProfiles(profiles, message.Data{PostalAddress: w.cfg.Messages.PostalAddress}); err != nil {
		return usageError{fmt.Errorf("templates do not render for fixture customers:\n%w", err)}
	}
	checked := campChecked
	for _, f := range fixtures {
		for _, c := range f.Customers {
			checked += len(c.MustBeIn) + len(c.MustNotBeIn)
		}
	}
	fmt.Fprintf(out, "rules: ok (%d segments, %d campaigns in %d files; %d fixture expectations hold)\n",
		len(w.set.Segments()), len(w.set.Campaigns()), len(w.set.Files()), checked)
	if n := len(w.set.Campaigns()); n > 0 {
		variants := 0
		for _, c := range w.set.Campaigns() {
			variants += len(c.Variants)
		}
		fmt.Fprintf(out, "templates: ok (%d variants of %d campaigns render for %d fixture customers)\n", variants, n, len(profiles))
	}
	return nil
}

func newPreviewCmd(g *globalFlags) *cobra.Command {
	var sample int
	cmd := &cobra.Command{
		Use:   "preview SEGMENT",
		Short: "Evaluate a segment on the stored customers now: size, sample members, and the diff against the last pass",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			w, err := openWorkspace(ctx, g, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer w.close()
			seg := w.set.Segment(args[0])
			if seg == nil {
				return usageError{fmt.Errorf("no segment %q in %s; segments: %s", args[0], w.cfg.Path(w.cfg.Rules.Dir), segmentNames(w.set))}
			}
			if err := w.loadProfiles(ctx); err != nil {
				return err
			}
			var members rules.Bitmap
			if err := w.store.View(func(t rules.Table) error {
				all, err := w.set.EvalAll(t, time.Now())
				members = all[seg.Name]
				return err
			}); err != nil {
				return err
			}
			stored := map[string]bool{}
			if err := w.db.EachSegmentMember(ctx, seg.Name, func(_, id string) error { stored[id] = true; return nil }); err != nil {
				return err
			}
			var ids []string
			for wi, word := range members {
				for ; word != 0; word &= word - 1 {
					ids = append(ids, w.store.ID(uint32(wi*64+bits.TrailingZeros64(word))))
				}
			}
			entering, leaving := 0, 0
			now := map[string]bool{}
			for _, id := range ids {
				now[id] = true
				if !stored[id] {
					entering++
				}
			}
			for id := range stored {
				if !now[id] {
					leaving++
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "segment %s: %s\n  when: %s\n", seg.Name, seg.Description, seg.When)
			fmt.Fprintf(out, "  size: %d of %d customers\n", len(ids), w.store.Customers())
			fmt.Fprintf(out, "  against the last pass: %d would enter, %d would leave (stored size %d)\n", entering, leaving, len(stored))
			sort.Strings(ids)
			if len(ids) > sample {
				ids = ids[:sample]
			}
			if len(ids) > 0 {
				fmt.Fprintf(out, "  sample: %v\n", ids)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&sample, "sample", 10, "how many member ids to show")
	return cmd
}

func newExplainCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "explain CUSTOMER",
		Short: "Show each segment a customer is in or out of, with the values each part of the rule saw, and per campaign the arm, the messages and which policy would block a send now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			w, err := openWorkspace(ctx, g, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer w.close()
			if err := w.loadProfiles(ctx); err != nil {
				return err
			}
			row, ok := w.store.Row(args[0])
			if !ok {
				return usageError{fmt.Errorf("no customer %q in the stored profiles", args[0])}
			}
			var exps []*rules.Explanation
			if err := w.store.View(func(t rules.Table) error {
				var err error
				exps, err = w.set.Explain(t, row, time.Now())
				return err
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "customer %s\n", args[0])
			for _, e := range exps {
				fmt.Fprint(out, e.String())
			}
			vals, _, err := w.storedTraits(ctx, args[0])
			if err != nil {
				return err
			}
			return w.explainCampaigns(ctx, out, args[0], vals, time.Now().UTC())
		},
	}
}

func segmentNames(set *rules.Set) string {
	var names []string
	for _, s := range set.Segments() {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "(none)"
	}
	return fmt.Sprint(names)
}

// terminalProgress returns a progress callback that redraws one line on a
// terminal ("loading profiles: 420,000 customers"), or nil when w is not one.
func terminalProgress(w io.Writer, what string) func(int, bool) {
	if !logging.IsTerminal(w) {
		return nil
	}
	var last time.Time
	return func(n int, done bool) {
		if !done && time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		end := ""
		if done {
			end = "\n"
		}
		fmt.Fprintf(w, "\r%s: %s customers%s", what, thousands(n), end)
	}
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
