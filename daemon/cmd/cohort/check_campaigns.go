package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cohortd/cohort/daemon/campaign"
	"github.com/cohortd/cohort/daemon/message"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// Fixture campaign outcomes: what the campaign does for a fixture customer
// at the fixture's now.
const (
	// OutcomeSent: a message would be sent (every policy allows it).
	OutcomeSent = "sent"
	// OutcomeSkipped: a policy blocks it for good (consent, no address, an
	// ended campaign).
	OutcomeSkipped = "skipped"
	// OutcomeDeferred: quiet hours or a paused campaign hold it back.
	OutcomeDeferred = "deferred"
	// OutcomeHoldout: the customer is in the holdout and gets nothing.
	OutcomeHoldout = "holdout"
	// OutcomeNone: no occurrence (not in the segment on an enter or cron
	// trigger, still in it on an exit trigger).
	OutcomeNone = "none"
)

var outcomes = []string{OutcomeSent, OutcomeSkipped, OutcomeDeferred, OutcomeHoldout, OutcomeNone}

// campaignOutcome says what a campaign does for a fixture customer: the
// arm, the outcome and why.
func (w *workspace) campaignOutcome(c *rules.Campaign, fc *rules.FixtureCustomer, member bool, now time.Time) (arm, outcome, why string) {
	arm, _ = campaign.Assign(c, fc.ID, "")
	fires := member
	if c.Trigger.Kind == rules.TriggerExit {
		fires = !member
	}
	if !fires {
		if c.Trigger.Kind == rules.TriggerExit {
			return arm, OutcomeNone, "still in segment " + c.Segment
		}
		return arm, OutcomeNone, "not in segment " + c.Segment
	}
	switch c.Status {
	case rules.StatusPaused:
		return arm, OutcomeDeferred, campaign.ReasonPaused
	case rules.StatusEnded:
		return arm, OutcomeSkipped, campaign.ReasonEnded
	}
	if arm == campaign.HoldoutArm {
		return arm, OutcomeHoldout, fmt.Sprintf("bucket %d is in the holdout", campaign.Bucket(c.Salt, fc.ID))
	}
	kind := c.ChannelKind
	if kind == "" {
		kind = w.schema.Channels[c.Channel]
	}
	var consents []storage.Consent
	kinds := make([]string, 0, len(fc.Consent))
	for k := range fc.Consent {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		st := storage.ConsentOptIn
		if fc.Consent[k] == sdk.OptOut {
			st = storage.ConsentOptOut
		}
		consents = append(consents, storage.Consent{CustomerID: fc.ID, Kind: k, Status: st, Time: now, Source: "fixture"})
	}
	mode := campaign.ConsentMode(w.cfg.Messages.Consent)
	to, loc := w.contactOf(kind, fc.Traits)
	none := func(string) (string, bool) { return "", false }
	pc := campaign.Check(campaign.Recipient{ID: fc.ID, Kind: kind, Consents: consents, Address: to, Location: loc},
		mode, none, w.set.Policies()[kind], now)
	switch {
	case pc.Skip != "":
		return arm, OutcomeSkipped, pc.Skip
	case pc.Defer != "":
		return arm, OutcomeDeferred, fmt.Sprintf("%s until %s", pc.Defer, pc.Until.In(loc).Format(time.RFC3339))
	}
	return arm, OutcomeSent, "every policy allows it"
}

// checkCampaignFixtures verifies the fixtures' campaign expectations (arm
// and outcome); it returns one line per failure and the number checked.
func (w *workspace) checkCampaignFixtures(fixtures []*rules.Fixture) ([]string, int, error) {
	var fails []string
	checked := 0
	for _, f := range fixtures {
		var members map[string]rules.Bitmap
		for i, fc := range f.Customers {
			if len(fc.Campaigns) == 0 {
				continue
			}
			if members == nil {
				customers := make([]rules.MemCustomer, len(f.Customers))
				for j, c := range f.Customers {
					customers[j] = rules.MemCustomer{ID: c.ID, Traits: c.Traits, Events: c.Events, RFM: c.RFM}
				}
				t, err := rules.NewMemTable(w.schema.Rules, customers)
				if err != nil {
					return nil, 0, fmt.Errorf("%s: %w", f.File, err)
				}
				if members, err = w.set.EvalAll(t, f.Now); err != nil {
					return nil, 0, fmt.Errorf("%s: %w", f.File, err)
				}
			}
			names := make([]string, 0, len(fc.Campaigns))
			for n := range fc.Campaigns {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, name := range names {
				exp := fc.Campaigns[name]
				c := w.set.Campaign(name)
				if c == nil {
					continue // RunFixtures reported it
				}
				if exp.Outcome != "" && !slices.Contains(outcomes, exp.Outcome) {
					return nil, 0, fmt.Errorf("%s: customer %q: campaign %q: outcome %q: expected one of %s",
						exp.Pos, fc.ID, name, exp.Outcome, strings.Join(outcomes, ", "))
				}
				arm, outcome, why := w.campaignOutcome(c, fc, members[c.Segment].Has(uint32(i)), f.Now)
				if exp.Arm != "" {
					checked++
					if exp.Arm != arm {
						fails = append(fails, fmt.Sprintf("%s: customer %q must get arm %q of campaign %q but gets %q (bucket %d of salt %q)",
							exp.Pos, fc.ID, exp.Arm, name, arm, campaign.Bucket(c.Salt, fc.ID), c.Salt))
					}
				}
				if exp.Outcome != "" {
					checked++
					if exp.Outcome != outcome {
						fails = append(fails, fmt.Sprintf("%s: customer %q must get outcome %q from campaign %q but gets %q: %s",
							exp.Pos, fc.ID, exp.Outcome, name, outcome, why))
					}
				}
			}
		}
	}
	return fails, checked, nil
}

// fixtureProfiles are the fixture customers as message profiles.
func fixtureProfiles(fixtures []*rules.Fixture) []message.Profile {
	var ps []message.Profile
	for _, f := range fixtures {
		for _, fc := range f.Customers {
			ps = append(ps, message.Profile{ID: fc.ID, Pos: fc.Pos, Traits: message.Traits(fc.Traits)})
		}
	}
	return ps
}
