package campaign

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/cohortd/cohort/daemon/campaign/stats"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/storage"
)

// Confidence of the reported intervals.
const Confidence = 0.95

// Interval is a rate with its Wilson interval.
type Interval struct {
	Rate float64 `json:"rate"`
	Lo   float64 `json:"lo"`
	Hi   float64 `json:"hi"`
}

// ArmResult is one arm's results.
type ArmResult struct {
	storage.ArmStats
	// Sent counts rows the provider accepted.
	Sent int64
	// Delivered, Opened, Clicked are rates over sent; Conversion over
	// matured members.
	Delivered, Opened, Clicked, Conversion Interval
	// RevenuePerMember is revenue over matured members.
	RevenuePerMember float64
	// Lift is the conversion lift over the holdout (variants only, when
	// both have matured members).
	Lift *stats.LiftResult
}

// Results are a campaign's results.
type Results struct {
	Campaign string
	Segment  string
	Channel  string
	Status   string
	Goal     string
	Now      time.Time
	// Arms: variants by name, then the holdout.
	Arms []*ArmResult
	// Decision is the winner test's current decision (nil without a winner
	// block); Winner is the variant new entrants get ("" until decided).
	Decision *stats.Decision
	Winner   string
	// SRMChi2, SRMP test the current epoch's assignments against the
	// configured split; SRM is set when p < 0.001.
	Epoch   int
	SRMChi2 float64
	SRMP    float64
	SRM     bool
	// Outbox counts every row by state.
	Outbox map[string]int64
	// Baseline is when the campaign's current definition started.
	Baseline time.Time
}

// Report computes a campaign's results from storage. It is read-only: the
// winner test runs on the persisted state without advancing it.
func Report(ctx context.Context, db *storage.DB, c *rules.Campaign, now time.Time) (*Results, error) {
	states, err := db.CampaignStates(ctx)
	if err != nil {
		return nil, err
	}
	st := states[c.Name]
	res, _, err := results(ctx, db, c, st, now)
	return res, err
}

func results(ctx context.Context, db *storage.DB, c *rules.Campaign, st storage.CampaignState, now time.Time) (*Results, stats.State, error) {
	goal, within := "", time.Duration(0)
	if c.Goal != nil {
		goal, within = c.Goal.Event, c.Goal.Within
	}
	arms, err := db.CampaignArms(ctx, c.Name, goal, within, now)
	if err != nil {
		return nil, stats.State{}, err
	}
	counts, err := db.OutboxCounts(ctx, c.Name)
	if err != nil {
		return nil, stats.State{}, err
	}
	r := &Results{Campaign: c.Name, Segment: c.Segment, Channel: c.Channel, Status: string(c.Status), Goal: goal, Now: now,
		Winner: st.Winner, Epoch: st.Epoch, Outbox: counts, Baseline: st.Baseline}
	for _, v := range c.Variants {
		if arms[v.Name] == nil {
			arms[v.Name] = &storage.ArmStats{Arm: v.Name}
		}
	}
	if c.Holdout > 0 && arms[HoldoutArm] == nil {
		arms[HoldoutArm] = &storage.ArmStats{Arm: HoldoutArm, Holdout: true}
	}
	names := make([]string, 0, len(arms))
	for n := range arms {
		if n != HoldoutArm {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if arms[HoldoutArm] != nil {
		names = append(names, HoldoutArm)
	}
	hold := arms[HoldoutArm]
	for _, n := range names {
		a := arms[n]
		ar := &ArmResult{ArmStats: *a, Sent: a.States[storage.OutboxSent]}
		ar.Holdout = n == HoldoutArm
		sent := int(ar.Sent)
		ar.Delivered = interval(int(a.Events["delivered"]), sent)
		ar.Opened = interval(int(a.Events["opened"]), sent)
		ar.Clicked = interval(int(a.Events["clicked"]), sent)
		ar.Conversion = interval(int(a.Converted), int(a.Matured))
		if a.Matured > 0 {
			ar.RevenuePerMember = a.Revenue / float64(a.Matured)
		}
		if !ar.Holdout && hold != nil && hold.Matured > 0 && a.Matured > 0 && goal != "" {
			l := stats.Lift(int(a.Converted), int(a.Matured), int(hold.Converted), int(hold.Matured), Confidence)
			ar.Lift = &l
		}
		r.Arms = append(r.Arms, ar)
	}
	// Sample-ratio mismatch on the current epoch, before any winner (after
	// it, new entrants no longer follow the weights).
	if st.Winner == "" {
		var obs []int
		var w []float64
		rest := float64(Buckets-c.Holdout) / Buckets
		for _, ar := range r.Arms {
			obs = append(obs, int(ar.AssignedByEpoch[st.Epoch]))
			if ar.Holdout {
				w = append(w, float64(c.Holdout)/Buckets)
				continue
			}
			weight := 0.0
			for _, v := range c.Variants {
				if v.Name == ar.Arm {
					weight = float64(v.Weight) / 100 * rest
				}
			}
			w = append(w, weight)
		}
		total := 0
		for _, o := range obs {
			total += o
		}
		if len(obs) > 1 && total > 0 {
			r.SRMChi2, r.SRMP = stats.SRM(obs, w)
			r.SRM = r.SRMP < 0.001
		}
	}
	var next stats.State
	if c.Winner != nil {
		var prev stats.State
		if len(st.Experiment) > 0 {
			if err := json.Unmarshal(st.Experiment, &prev); err != nil {
				return nil, stats.State{}, fmt.Errorf("campaign %s: stored winner-test state: %w", c.Name, err)
			}
		}
		var sarms []stats.Arm
		for _, ar := range r.Arms {
			if ar.Holdout {
				continue
			}
			a := stats.Arm{Name: ar.Arm, Kind: stats.Variant, Assigned: int(ar.Assigned)}
			switch c.Winner.Metric {
			case "click":
				a.Matured, a.Converted = int(ar.Sent), int(ar.Events["clicked"])
			case "open":
				a.Matured, a.Converted = int(ar.Sent), int(ar.Events["opened"])
			default:
				a.Matured, a.Converted = int(ar.Matured), int(ar.Converted)
			}
			a.Matured = min(a.Matured, a.Assigned)
			a.Converted = min(a.Converted, a.Matured)
			sarms = append(sarms, a)
		}
		rule := stats.WinnerRule{MinPerArm: c.Winner.MinPerArm, Alpha: c.Winner.Alpha, Tau: c.Winner.Tau}
		d, s := stats.Decide(sarms, rule, prev)
		r.Decision, next = &d, s
	}
	return r, next, nil
}

func interval(x, n int) Interval {
	if n <= 0 {
		return Interval{}
	}
	lo, hi := stats.Wilson(x, n, Confidence)
	return Interval{Rate: stats.Rate(x, n), Lo: lo, Hi: hi}
}

// winnerLoop runs the winner test of every undecided campaign with a winner
// block every 30 seconds, persisting the test's state; a decision makes new
// entrants get the winner.
func (e *Engine) winnerLoop(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := e.EvaluateWinners(ctx); err != nil && ctx.Err() == nil {
				e.log.Error("winner test failed", "err", err)
			}
		}
	}
}

// EvaluateWinners runs the winner test once for every undecided campaign.
func (e *Engine) EvaluateWinners(ctx context.Context) error {
	pl := e.plan.Load()
	if pl == nil {
		return nil
	}
	for _, c := range pl.set.Campaigns() {
		st, ok := e.state(c.Name)
		if !ok || c.Winner == nil || st.Winner != "" || c.Status != rules.StatusActive {
			continue
		}
		res, next, err := results(ctx, e.db, c, st, e.opt.Now())
		if err != nil {
			return err
		}
		d := res.Decision
		if d == nil || d.Verdict == stats.InvalidInput {
			if d != nil {
				e.log.Warn("winner test not run", "campaign", c.Name, "reason", d.Reason)
			}
			continue
		}
		b, err := json.Marshal(next)
		if err != nil {
			return err
		}
		st.Experiment = b
		if d.Verdict == stats.WinnerFound {
			st.Winner = d.Winner
		}
		if err := e.db.PutCampaignState(ctx, st); err != nil {
			return err
		}
		e.setState(st)
		if res.SRM {
			e.log.Warn("sample ratio mismatch: assignments do not follow the configured split; check the experiment before trusting its results",
				"campaign", c.Name, "epoch", st.Epoch, "chi2", res.SRMChi2, "p", res.SRMP)
		}
		if d.Verdict == stats.WinnerFound {
			e.m.winners.WithLabelValues(c.Name, d.Winner).Inc()
			e.log.Info("campaign winner decided: new entrants get it; the holdout keeps its share", "campaign", c.Name,
				"winner", d.Winner, "reason", d.Reason)
		}
	}
	return nil
}
