package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cohortd/cohort/daemon/campaign"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// outboxShown is how many of a customer's outbox rows explain lists per
// campaign.
const outboxShown = 20

// contactOf is a customer's address for a channel kind and their time
// zone, as the dispatcher reads them.
func (w *workspace) contactOf(kind string, vals map[string]sdk.Value) (string, *time.Location) {
	ct := w.schema.Contacts()
	return campaign.Address(ct, kind, vals), campaign.Location(ct, w.cfg.Location, vals)
}

// explainCampaigns prints, for each campaign, the customer's arm, their
// outbox rows, and which policy would block or defer a send now.
func (w *workspace) explainCampaigns(ctx context.Context, out io.Writer, id string, vals map[string]sdk.Value, now time.Time) error {
	camps := w.set.Campaigns()
	if len(camps) == 0 {
		return nil
	}
	states, err := w.db.CampaignStates(ctx)
	if err != nil {
		return err
	}
	rows, err := w.db.OutboxOf(ctx, id, 1000)
	if err != nil {
		return err
	}
	consents, err := w.db.Consents(ctx, id)
	if err != nil {
		return err
	}
	mode := campaign.ConsentMode(w.cfg.Messages.Consent)
	fmt.Fprintln(out, "campaigns:")
	for _, c := range camps {
		kind := c.ChannelKind
		if kind == "" {
			kind = w.schema.Channels[c.Channel]
		}
		fmt.Fprintf(out, "  campaign %q (segment %s, channel %s, %s, %s):\n", c.Name, c.Segment, c.Channel, kind, c.Status)
		a, err := w.db.Assignment(ctx, c.Name, id)
		switch {
		case err == nil:
			fmt.Fprintf(out, "    arm: %s (assigned %s, epoch %d, %d occurrences)\n", a.Arm, a.Assigned.Format(time.RFC3339), a.Epoch, a.Occurrences)
		case errors.Is(err, storage.ErrNotFound):
			arm, _ := campaign.Assign(c, id, states[c.Name].Winner)
			fmt.Fprintf(out, "    arm: %s (not assigned yet: what assignment would give now)\n", arm)
			a.Arm = arm
		default:
			return err
		}
		shown := 0
		for _, r := range rows {
			if r.Campaign != c.Name {
				continue
			}
			if shown == 0 {
				fmt.Fprintln(out, "    outbox:")
			}
			if shown++; shown > outboxShown {
				continue
			}
			line := fmt.Sprintf("      %s %s %s: %s, attempts: %d", r.Created.Format(time.RFC3339), r.Occurrence, r.Arm, r.State, r.Attempts)
			if r.Reason != "" {
				line += ", reason: " + r.Reason
			}
			if r.Deferrals > 0 {
				line += fmt.Sprintf(", deferrals: %d (last: %s)", r.Deferrals, r.DeferReason)
			}
			if r.State == storage.OutboxPending && r.NotBefore.After(now) {
				line += ", not before " + r.NotBefore.Format(time.RFC3339)
			}
			if r.Delivery != "" {
				line += ", delivery: " + r.Delivery
			}
			fmt.Fprintln(out, line)
		}
		if shown > outboxShown {
			fmt.Fprintf(out, "      ... %d more\n", shown-outboxShown)
		}
		if shown == 0 {
			fmt.Fprintln(out, "    outbox: no messages")
		}
		switch {
		case c.Status == rules.StatusPaused:
			fmt.Fprintf(out, "    a send now: deferred (%s)\n", campaign.ReasonPaused)
			continue
		case c.Status == rules.StatusEnded:
			fmt.Fprintf(out, "    a send now: skipped (%s)\n", campaign.ReasonEnded)
			continue
		case a.Arm == campaign.HoldoutArm:
			fmt.Fprintln(out, "    a send now: none (holdout gets no message)")
			continue
		}
		to, loc := w.contactOf(kind, vals)
		var sup map[string]storage.Suppression
		var recent map[string][]time.Time
		pol := w.set.Policies()[kind]
		err = w.db.Tx(ctx, func(tx *storage.Tx) error {
			hashes := []string{campaign.CustomerHash(id)}
			if to != "" {
				hashes = append(hashes, campaign.AddressHash(to))
			}
			var err error
			if sup, err = tx.Suppressions(kind, hashes); err != nil {
				return err
			}
			if pol != nil && pol.Cap != nil {
				recent, err = tx.RecentContacts(kind, []string{id}, now.AddDate(0, 0, -pol.Cap.Days-1))
			}
			return err
		})
		if err != nil {
			return err
		}
		suppressed := func(h string) (string, bool) {
			s, ok := sup[h]
			return s.Reason, ok
		}
		pc := campaign.Check(campaign.Recipient{ID: id, Kind: kind, Consents: consents, Address: to, Location: loc, Recent: recent[id]},
			mode, suppressed, pol, now)
		switch {
		case pc.Skip != "":
			fmt.Fprintf(out, "    a send now: skipped (%s)\n", pc.Skip)
		case pc.Defer != "":
			fmt.Fprintf(out, "    a send now: deferred (%s) until %s\n", pc.Defer, pc.Until.In(loc).Format(time.RFC3339))
		default:
			fmt.Fprintln(out, "    a send now: allowed by every policy")
		}
	}
	return nil
}
