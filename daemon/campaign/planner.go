package campaign

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/storage"
)

// changePage is how many segment changes one planning transaction takes.
const changePage = 2000

// PlanOnce runs the planner once: baselines for new or changed campaigns
// (when p is a full pass of the rules now current), occurrences for the
// segment changes after each campaign's cursor and for due cron fires.
func (e *Engine) PlanOnce(ctx context.Context, p *Pass) error {
	pl := e.plan.Load()
	if pl == nil {
		return nil
	}
	now := e.opt.Now()
	var errs []error
	for _, c := range pl.set.Campaigns() {
		if err := e.planCampaign(ctx, pl, c, p, now); err != nil {
			errs = append(errs, fmt.Errorf("campaign %s: %w", c.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) planCampaign(ctx context.Context, pl *plan, c *rules.Campaign, p *Pass, now time.Time) error {
	fp := fingerprint(pl.set, c)
	st, ok := e.state(c.Name)
	if !ok || st.Fingerprint != fp {
		// A new or changed campaign waits for the first full pass of the
		// rules that define it, once the sources' first import is done:
		// that pass is its baseline.
		if p == nil || !p.Full || !p.CaughtUp || p.Set != pl.set || (len(p.Segments) > 0 && !slices.Contains(p.Segments, c.Segment)) {
			return nil
		}
		return e.baseline(ctx, c, st, ok, fp, p, now)
	}
	if w := weightsID(c); w != st.Weights {
		st.Weights, st.Epoch = w, st.Epoch+1
		if err := e.db.PutCampaignState(ctx, st); err != nil {
			return err
		}
		e.setState(st)
		e.log.Info("campaign weights changed: a new assignment epoch starts", "campaign", c.Name, "epoch", st.Epoch, "weights", w)
	}
	hold := e.hold(c)
	if c.Trigger.Kind == rules.TriggerCron {
		return e.planCron(ctx, c, st, hold, now)
	}
	for {
		changes, err := e.db.SegmentChangesOf(ctx, c.Segment, st.Cursor, changePage)
		if err != nil || len(changes) == 0 {
			return err
		}
		want := "enter"
		if c.Trigger.Kind == rules.TriggerExit {
			want = "exit"
		}
		var occ []occurrence
		for _, ch := range changes {
			if ch.Change == want {
				occ = append(occ, occurrence{key: fmt.Sprintf("%s:%d", want, ch.Seq), customer: ch.CustomerID})
			}
		}
		st.Cursor = changes[len(changes)-1].Seq
		if hold != "" {
			if len(occ) > 0 {
				e.log.Warn("campaign held: segment changes passed over", "campaign", c.Name, "segment", c.Segment,
					"reason", hold, "occurrences", len(occ))
				e.m.held.WithLabelValues(c.Name).Add(float64(len(occ)))
			}
			occ = nil
		}
		if err := e.occur(ctx, c, &st, occ, now, true, true); err != nil {
			return err
		}
		if len(changes) < changePage {
			return nil
		}
	}
}

// hold says why a campaign makes no occurrences now ("" when it does).
func (e *Engine) hold(c *rules.Campaign) string {
	switch c.Status {
	case rules.StatusPaused:
		return ReasonPaused
	case rules.StatusEnded:
		return ReasonEnded
	}
	if e.opt.Holds != nil {
		if why := e.opt.Holds.Held(c.Segment); why != "" {
			return "segment " + c.Segment + " held: " + why
		}
	}
	return ""
}

// baseline records where a new or changed campaign starts: after every
// change of the baseline pass. With backfill, the segment's current members
// get an occurrence too (enter triggers only).
func (e *Engine) baseline(ctx context.Context, c *rules.Campaign, prev storage.CampaignState, had bool, fp string, p *Pass, now time.Time) error {
	seq, err := e.db.LastSegmentSeq(ctx, c.Segment, p.ID)
	if err != nil {
		return err
	}
	st := prev
	st.Campaign, st.Fingerprint, st.Cursor, st.Baseline = c.Name, fp, seq, now
	if st.LastCron.IsZero() || c.Trigger.Kind == rules.TriggerCron {
		st.LastCron = now
	}
	if !had {
		st.Weights = weightsID(c)
	}
	var occ []occurrence
	if c.Backfill && c.Trigger.Kind == rules.TriggerEnter && e.hold(c) == "" {
		if occ, err = e.members(ctx, c.Segment, "backfill:"+fp[:12]); err != nil {
			return err
		}
	}
	if err := e.occurChunked(ctx, c, &st, occ, now, true); err != nil {
		return err
	}
	e.log.Info("campaign baseline taken: changes up to it fire nothing", "campaign", c.Name, "segment", c.Segment,
		"cursor", seq, "backfill", len(occ), "changed", had)
	return nil
}

// planCron turns the latest due fire of a cron campaign into one occurrence
// per current member (missed earlier fires are not replayed).
func (e *Engine) planCron(ctx context.Context, c *rules.Campaign, st storage.CampaignState, hold string, now time.Time) error {
	sched := c.Trigger.Schedule
	if sched == nil {
		return nil
	}
	from := st.LastCron.In(e.opt.Location)
	next := sched.Next(from)
	if next.After(now) {
		return nil
	}
	for n := sched.Next(next); !n.After(now); n = sched.Next(n) {
		next = n
	}
	st.LastCron = next
	if hold != "" {
		e.log.Warn("campaign held: cron fire passed over", "campaign", c.Name, "fire", next.UTC(), "reason", hold)
		return e.occur(ctx, c, &st, nil, now, false, true)
	}
	occ, err := e.members(ctx, c.Segment, "cron:"+next.UTC().Format(time.RFC3339))
	if err != nil {
		return err
	}
	e.log.Info("campaign cron fire", "campaign", c.Name, "fire", next.UTC(), "members", len(occ))
	return e.occurChunked(ctx, c, &st, occ, now, false)
}

type occurrence struct {
	key      string
	customer string
}

// members makes an occurrence with key for every current member of a
// segment.
func (e *Engine) members(ctx context.Context, segment, key string) ([]occurrence, error) {
	var occ []occurrence
	err := e.db.EachSegmentMember(ctx, segment, func(_, id string) error {
		occ = append(occ, occurrence{key: key, customer: id})
		return nil
	})
	return occ, err
}

// occurChunked commits occurrences in transactions of changePage; only the
// last stores the campaign state, so a crash part way leaves the state as it
// was and the next run repeats the step (occurrence keys and stored
// assignments make the repeat harmless).
func (e *Engine) occurChunked(ctx context.Context, c *rules.Campaign, st *storage.CampaignState, occ []occurrence, now time.Time, reentry bool) error {
	for len(occ) > changePage {
		if err := e.occur(ctx, c, st, occ[:changePage], now, reentry, false); err != nil {
			return err
		}
		occ = occ[changePage:]
	}
	return e.occur(ctx, c, st, occ, now, reentry, true)
}

// occur assigns arms and queues messages for occurrences (one per customer)
// in one transaction, and with save stores the campaign state in it. With
// reentry, a customer who had an occurrence gets another only after the
// campaign's reentry period.
func (e *Engine) occur(ctx context.Context, c *rules.Campaign, st *storage.CampaignState, occ []occurrence, now time.Time, reentry, save bool) error {
	kind := c.ChannelKind
	if ch := e.opt.Channels[c.Channel]; ch != nil {
		kind = ch.Kind
	}
	seen := make(map[string]bool, len(occ))
	ids := make([]string, 0, len(occ))
	uniq := occ[:0:0]
	for _, o := range occ {
		if !seen[o.customer] {
			seen[o.customer] = true
			ids = append(ids, o.customer)
			uniq = append(uniq, o)
		}
	}
	queued, holdout, passed := 0, 0, 0
	perArm := map[string]int{}
	err := e.db.WriteTx(ctx, func(tx *storage.Tx) error {
		queued, holdout, passed = 0, 0, 0
		clear(perArm)
		have, err := tx.Assignments(c.Name, ids)
		if err != nil {
			return err
		}
		var as []storage.Assignment
		var rows []storage.OutboxRow
		for _, o := range uniq {
			a, ok := have[o.customer]
			if ok && reentry && (c.ReentryAfter == 0 || now.Sub(a.Last) < c.ReentryAfter) {
				passed++
				continue
			}
			if !ok {
				arm, ho := Assign(c, o.customer, st.Winner)
				a = storage.Assignment{Campaign: c.Name, CustomerID: o.customer, Arm: arm, Holdout: ho, Epoch: st.Epoch, Assigned: now}
			}
			a.Last = now
			as = append(as, a)
			perArm[a.Arm]++
			if a.Holdout {
				holdout++
				continue
			}
			rows = append(rows, storage.OutboxRow{Key: Key(c.Name, o.key, o.customer, c.Channel), Campaign: c.Name, Occurrence: o.key,
				CustomerID: o.customer, Channel: c.Channel, Kind: kind, Arm: a.Arm, Created: now})
		}
		if err := tx.PutAssignments(as); err != nil {
			return err
		}
		if queued, err = tx.Enqueue(rows); err != nil {
			return err
		}
		if save {
			return tx.PutCampaignState(*st)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if save {
		e.setState(*st)
	}
	for arm, n := range perArm {
		e.m.occurrences.WithLabelValues(c.Name, arm).Add(float64(n))
	}
	if queued > 0 || holdout > 0 || passed > 0 {
		e.log.Info("campaign occurrences", "campaign", c.Name, "queued", queued, "holdout", holdout, "reentry_passed", passed)
	}
	if queued > 0 {
		if w := e.wake[c.Channel]; w != nil {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
	return nil
}
