package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohortd/cohort/daemon/campaign"
	"github.com/cohortd/cohort/daemon/campaign/stats"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/storage"
)

// RetentionAge is how long ago a member must have entered the segment to
// count in its retention: retention is the share of the customers who
// first entered at least RetentionAge ago that are members now.
const RetentionAge = 30 * 24 * time.Hour

// historyWindow is how far back the report's size history goes.
const historyWindow = 30 * 24 * time.Hour

// rateJSON is a rate with its 95% Wilson interval.
type rateJSON struct {
	Rate float64 `json:"rate"`
	Lo   float64 `json:"lo"`
	Hi   float64 `json:"hi"`
}

func rateOf(i campaign.Interval) rateJSON { return rateJSON{Rate: i.Rate, Lo: i.Lo, Hi: i.Hi} }

type liftJSON struct {
	Diff     float64  `json:"diff"`
	Lo       float64  `json:"lo"`
	Hi       float64  `json:"hi"`
	Relative *float64 `json:"relative,omitempty"`
}

type armJSON struct {
	Arm              string           `json:"arm"`
	Holdout          bool             `json:"holdout"`
	Assigned         int64            `json:"assigned"`
	Sent             int64            `json:"sent"`
	Skipped          map[string]int64 `json:"skipped"`
	Deferred         int64            `json:"deferred"`
	Failed           int64            `json:"failed"`
	Unknown          int64            `json:"unknown"`
	Pending          int64            `json:"pending"`
	Delivered        rateJSON         `json:"delivered"`
	Opened           rateJSON         `json:"opened"`
	Clicked          rateJSON         `json:"clicked"`
	Matured          int64            `json:"matured"`
	Converted        int64            `json:"converted"`
	Conversion       rateJSON         `json:"conversion"`
	Revenue          float64          `json:"revenue"`
	RevenuePerMember float64          `json:"revenue_per_member"`
	Lift             *liftJSON        `json:"lift,omitempty"`
}

type sizeJSON struct {
	At      time.Time `json:"at"`
	Size    int64     `json:"size"`
	Entered int64     `json:"entered"`
	Exited  int64     `json:"exited"`
}

type segmentJSON struct {
	Name      string     `json:"name"`
	Size      int64      `json:"size"`
	History   []sizeJSON `json:"history"`
	Sent      int64      `json:"sent"`
	Opened    rateJSON   `json:"opened"`
	Clicked   rateJSON   `json:"clicked"`
	Matured   int64      `json:"matured"`
	Converted int64      `json:"converted"`
	// Conversion and RevenuePerMember cover the matured members of every
	// campaign on the segment.
	Conversion       rateJSON `json:"conversion"`
	RevenuePerMember float64  `json:"revenue_per_member"`
	// Retention: of the customers who first entered at least 30 days ago
	// (RetentionCohort), the share that are members now.
	RetentionCohort int64    `json:"retention_cohort"`
	Retention       *float64 `json:"retention,omitempty"`
}

type reportJSON struct {
	Campaign    string           `json:"campaign"`
	Segment     string           `json:"segment"`
	Channel     string           `json:"channel"`
	Status      string           `json:"status"`
	Goal        string           `json:"goal,omitempty"`
	Now         time.Time        `json:"now"`
	Baseline    *time.Time       `json:"baseline,omitempty"`
	Arms        []armJSON        `json:"arms"`
	Decision    *stats.Decision  `json:"decision,omitempty"`
	Winner      string           `json:"winner,omitempty"`
	SRM         srmJSON          `json:"srm"`
	Outbox      map[string]int64 `json:"outbox"`
	SegmentKPIs *segmentJSON     `json:"segment_kpis"`
}

type srmJSON struct {
	Epoch   int     `json:"epoch"`
	Chi2    float64 `json:"chi2"`
	P       float64 `json:"p"`
	Flagged bool    `json:"flagged"`
}

func newReportCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "report CAMPAIGN",
		Short: "Show a campaign's results per arm, the winner test, and its segment's KPIs, from storage",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			w, err := openWorkspace(ctx, g, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer w.close()
			c := w.set.Campaign(args[0])
			if c == nil {
				return usageError{fmt.Errorf("no campaign %q in %s; campaigns: %s", args[0], w.cfg.Path(w.cfg.Rules.Dir), campaignNames(w.set))}
			}
			if err := w.openDB(ctx); err != nil {
				return err
			}
			rep, err := buildReport(ctx, w.db, w.set, c, time.Now().UTC())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printReport(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of tables")
	return cmd
}

func campaignNames(set *rules.Set) string {
	var names []string
	for _, c := range set.Campaigns() {
		names = append(names, c.Name)
	}
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

// buildReport reads a campaign's results and its segment's KPIs.
func buildReport(ctx context.Context, db *storage.DB, set *rules.Set, c *rules.Campaign, now time.Time) (*reportJSON, error) {
	res, err := campaign.Report(ctx, db, c, now)
	if err != nil {
		return nil, fmt.Errorf("campaign %s: %w", c.Name, err)
	}
	rep := &reportJSON{Campaign: res.Campaign, Segment: res.Segment, Channel: res.Channel, Status: res.Status, Goal: res.Goal,
		Now: now, Decision: res.Decision, Winner: res.Winner, Outbox: res.Outbox,
		SRM: srmJSON{Epoch: res.Epoch, Chi2: res.SRMChi2, P: res.SRMP, Flagged: res.SRM}}
	if rep.Outbox == nil {
		rep.Outbox = map[string]int64{}
	}
	if !res.Baseline.IsZero() {
		b := res.Baseline
		rep.Baseline = &b
	}
	for _, a := range res.Arms {
		aj := armJSON{Arm: a.Arm, Holdout: a.Holdout, Assigned: a.Assigned, Sent: a.Sent, Skipped: a.Skipped,
			Deferred: a.Deferred, Failed: a.States[storage.OutboxFailed], Unknown: a.States[storage.OutboxUnknown],
			Pending:   a.States[storage.OutboxPending] + a.States[storage.OutboxSending],
			Delivered: rateOf(a.Delivered), Opened: rateOf(a.Opened), Clicked: rateOf(a.Clicked),
			Matured: a.Matured, Converted: a.Converted, Conversion: rateOf(a.Conversion), Revenue: a.Revenue,
			RevenuePerMember: a.RevenuePerMember}
		if aj.Skipped == nil {
			aj.Skipped = map[string]int64{}
		}
		if a.Lift != nil {
			l := &liftJSON{Diff: a.Lift.Diff, Lo: a.Lift.DiffLo, Hi: a.Lift.DiffHi}
			if a.Lift.HasRelative {
				r := a.Lift.Relative
				l.Relative = &r
			}
			aj.Lift = l
		}
		rep.Arms = append(rep.Arms, aj)
	}
	seg, err := segmentKPIs(ctx, db, set, c.Segment, now)
	if err != nil {
		return nil, err
	}
	rep.SegmentKPIs = seg
	return rep, nil
}

// segmentKPIs computes a segment's size, size history, retention, and the
// engagement, conversion and revenue of every campaign on it.
func segmentKPIs(ctx context.Context, db *storage.DB, set *rules.Set, segment string, now time.Time) (*segmentJSON, error) {
	s := &segmentJSON{Name: segment, History: []sizeJSON{}}
	members := map[string]bool{}
	if err := db.EachSegmentMember(ctx, segment, func(_, id string) error { members[id] = true; return nil }); err != nil {
		return nil, err
	}
	s.Size = int64(len(members))
	hist, err := db.SizeHistory(ctx, segment, now.Add(-historyWindow))
	if err != nil {
		return nil, err
	}
	for _, h := range hist {
		s.History = append(s.History, sizeJSON{At: h.At, Size: h.Size, Entered: h.Entered, Exited: h.Exited})
	}
	// Retention from the change log: first entries at least RetentionAge ago.
	first := map[string]time.Time{}
	var after int64
	for {
		chs, err := db.SegmentChangesOf(ctx, segment, after, 5000)
		if err != nil {
			return nil, err
		}
		for _, ch := range chs {
			after = ch.Seq
			if _, seen := first[ch.CustomerID]; ch.Change == "enter" && !seen {
				first[ch.CustomerID] = ch.At
			}
		}
		if len(chs) < 5000 {
			break
		}
	}
	var retained int64
	for id, at := range first {
		if now.Sub(at) >= RetentionAge {
			s.RetentionCohort++
			if members[id] {
				retained++
			}
		}
	}
	if s.RetentionCohort > 0 {
		r := float64(retained) / float64(s.RetentionCohort)
		s.Retention = &r
	}
	var opened, clicked int64
	var revenue float64
	for _, c := range set.Campaigns() {
		if c.Segment != segment {
			continue
		}
		goal, within := "", time.Duration(0)
		if c.Goal != nil {
			goal, within = c.Goal.Event, c.Goal.Within
		}
		arms, err := db.CampaignArms(ctx, c.Name, goal, within, now)
		if err != nil {
			return nil, err
		}
		for _, a := range arms {
			s.Sent += a.States[storage.OutboxSent]
			opened += a.Events["opened"]
			clicked += a.Events["clicked"]
			if goal != "" {
				s.Matured += a.Matured
				s.Converted += a.Converted
				revenue += a.Revenue
			}
		}
	}
	s.Opened = wilson(opened, s.Sent)
	s.Clicked = wilson(clicked, s.Sent)
	s.Conversion = wilson(s.Converted, s.Matured)
	if s.Matured > 0 {
		s.RevenuePerMember = revenue / float64(s.Matured)
	}
	return s, nil
}

func wilson(x, n int64) rateJSON {
	if n <= 0 {
		return rateJSON{}
	}
	lo, hi := stats.Wilson(int(x), int(n), campaign.Confidence)
	return rateJSON{Rate: stats.Rate(int(x), int(n)), Lo: lo, Hi: hi}
}

func pct(r rateJSON, n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%% [%.1f, %.1f]", 100*r.Rate, 100*r.Lo, 100*r.Hi)
}

func printReport(out io.Writer, r *reportJSON) {
	fmt.Fprintf(out, "campaign %s: segment %s, channel %s, status %s", r.Campaign, r.Segment, r.Channel, r.Status)
	if r.Goal != "" {
		fmt.Fprintf(out, ", goal %s", r.Goal)
	}
	fmt.Fprintln(out)
	if r.Baseline != nil {
		fmt.Fprintf(out, "  definition since %s\n", r.Baseline.Format(time.RFC3339))
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ARM\tASSIGNED\tSENT\tSKIPPED\tDEFERRED\tFAILED\tUNKNOWN\tPENDING\tDELIVERED\tOPENED\tCLICKED")
	for _, a := range r.Arms {
		var skipped int64
		for _, n := range a.Skipped {
			skipped += n
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", a.Arm, a.Assigned, a.Sent, skipped, a.Deferred, a.Failed,
			a.Unknown, a.Pending, pct(a.Delivered, a.Sent), pct(a.Opened, a.Sent), pct(a.Clicked, a.Sent))
	}
	tw.Flush()
	if r.Goal != "" {
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ARM\tMATURED\tCONVERTED\tCONVERSION (95% CI)\tREVENUE/MEMBER\tLIFT OVER HOLDOUT (95% CI)")
		for _, a := range r.Arms {
			lift := "-"
			if a.Lift != nil {
				lift = fmt.Sprintf("%+.1f pts [%+.1f, %+.1f]", 100*a.Lift.Diff, 100*a.Lift.Lo, 100*a.Lift.Hi)
				if a.Lift.Relative != nil {
					lift += fmt.Sprintf(" (%+.0f%%)", 100**a.Lift.Relative)
				}
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.2f\t%s\n", a.Arm, a.Matured, a.Converted, pct(a.Conversion, a.Matured), a.RevenuePerMember, lift)
		}
		tw.Flush()
	}
	var reasons []string
	for _, a := range r.Arms {
		for why, n := range a.Skipped {
			reasons = append(reasons, fmt.Sprintf("    %s: %s: %d", a.Arm, why, n))
		}
	}
	if len(reasons) > 0 {
		sort.Strings(reasons)
		fmt.Fprintln(out, "\nskipped by reason:")
		fmt.Fprintln(out, strings.Join(reasons, "\n"))
	}
	fmt.Fprintln(out)
	switch {
	case r.Decision == nil && r.Winner != "":
		fmt.Fprintf(out, "winner: %s\n", r.Winner)
	case r.Decision == nil:
		fmt.Fprintln(out, "winner: no winner test configured (no winner yet)")
	case r.Decision.Verdict == stats.WinnerFound:
		fmt.Fprintf(out, "winner: %s (%s)\n", r.Decision.Winner, r.Decision.Reason)
	case r.Decision.Verdict == stats.NoWinnerYet:
		fmt.Fprintf(out, "winner: no winner yet (%s)\n", strings.TrimPrefix(r.Decision.Reason, "no winner yet: "))
	default:
		fmt.Fprintf(out, "winner: none, no winner yet (%s: %s)\n", r.Decision.Verdict, r.Decision.Reason)
	}
	if r.Decision != nil {
		for _, p := range r.Decision.Pairs {
			sig := ""
			if p.Significant {
				sig = ", significant"
			}
			fmt.Fprintf(out, "  %s vs %s: %.1f%% vs %.1f%%, p=%.4g, Holm-adjusted p=%.4g%s\n", p.A, p.B, 100*p.RateA, 100*p.RateB, p.P, p.Adjusted, sig)
		}
	}
	if r.SRM.Flagged {
		fmt.Fprintf(out, "SAMPLE RATIO MISMATCH: epoch %d assignments do not match the configured split (chi2=%.2f, p=%.2g); do not trust the comparison\n", r.SRM.Epoch, r.SRM.Chi2, r.SRM.P)
	} else {
		fmt.Fprintf(out, "sample ratio: ok (epoch %d, p=%.3g)\n", r.SRM.Epoch, r.SRM.P)
	}
	states := make([]string, 0, len(r.Outbox))
	for st, n := range r.Outbox {
		states = append(states, fmt.Sprintf("%s %d", st, n))
	}
	sort.Strings(states)
	if len(states) > 0 {
		fmt.Fprintf(out, "outbox: %s\n", strings.Join(states, ", "))
	}
	s := r.SegmentKPIs
	fmt.Fprintf(out, "\nsegment %s: %d members now\n", s.Name, s.Size)
	if len(s.History) > 0 {
		h0, h1 := s.History[0], s.History[len(s.History)-1]
		lo, hi := h0.Size, h0.Size
		for _, h := range s.History {
			lo, hi = min(lo, h.Size), max(hi, h.Size)
		}
		fmt.Fprintf(out, "  size over the last 30 days: %d at %s, %d at %s (min %d, max %d, %d passes)\n",
			h0.Size, h0.At.Format(time.DateOnly), h1.Size, h1.At.Format(time.DateOnly), lo, hi, len(s.History))
	}
	fmt.Fprintf(out, "  engagement: %d sent, opened %s, clicked %s\n", s.Sent, pct(s.Opened, s.Sent), pct(s.Clicked, s.Sent))
	fmt.Fprintf(out, "  conversion: %d of %d matured, %s; revenue per member %.2f\n", s.Converted, s.Matured, pct(s.Conversion, s.Matured), s.RevenuePerMember)
	if s.Retention != nil {
		fmt.Fprintf(out, "  retention: %.1f%% of the %d who entered 30+ days ago are still members\n", 100**s.Retention, s.RetentionCohort)
	} else {
		fmt.Fprintln(out, "  retention: - (nobody entered 30+ days ago)")
	}
}
