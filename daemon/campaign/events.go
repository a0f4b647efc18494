package campaign

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortd/cohort/daemon/unsubscribe"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// DeliveryEvents records what a channel's provider reported (from its
// webhook): each event once (by event id), unknown rows resolved by events
// proving the provider had the message, and bounces, spam reports and
// unsubscribes turned into suppressions or opt-outs. An error means nothing
// was recorded (the webhook answers 5xx and the provider retries).
func (e *Engine) DeliveryEvents(ctx context.Context, channel string, evs []sdk.DeliveryEvent) error {
	kind := ""
	if ch := e.opt.Channels[channel]; ch != nil {
		kind = ch.Kind
	}
	now := e.opt.Now()
	var missing []string
	for _, ev := range evs {
		if ev.Key == "" && ev.ProviderID != "" {
			missing = append(missing, ev.ProviderID)
		}
	}
	keys, err := e.db.KeysByProviderID(ctx, channel, missing)
	if err != nil {
		return err
	}
	stored := make([]storage.DeliveryEvent, 0, len(evs))
	var (
		suppress []storage.Suppression
		optOuts  []storage.Consent
	)
	byID := make(map[string]sdk.DeliveryEvent, len(evs))
	for _, ev := range evs {
		key := ev.Key
		if key == "" {
			key = keys[ev.ProviderID]
		}
		id := ev.EventID
		if id == "" {
			h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%d\x00%s\x00%s", key, ev.ProviderID, ev.Type, ev.Time.UnixNano(), ev.URL, ev.Address))
			id = "h:" + hex.EncodeToString(h[:12])
		}
		t := ev.Time
		if t.IsZero() {
			t = now
		}
		stored = append(stored, storage.DeliveryEvent{Channel: channel, EventID: id, Key: key, Type: ev.Type.String(), Time: t, Reason: ev.Reason})
		byID[id] = ev
		e.m.deliveries.WithLabelValues(channel, ev.Type.String()).Inc()
		if key == "" && ev.Type == sdk.DeliveryUnsubscribed && ev.Address != "" {
			// An inbound STOP carries only the address.
			suppress = append(suppress, storage.Suppression{Kind: kind, Hash: AddressHash(ev.Address), Reason: "unsubscribed at the provider",
				Source: channel, Created: t})
		}
	}
	// The events, the unknowns they resolve and the suppressions and
	// opt-outs they cause commit together: a provider's retry of a post that
	// failed finds nothing recorded, not events deduplicated without their
	// effects.
	err = e.db.WriteTx(ctx, func(tx *storage.Tx) error {
		fresh, err := tx.RecordDeliveryEvents(stored, resolution, now)
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(fresh))
		for _, f := range fresh {
			keys = append(keys, f.Key)
		}
		rows, err := tx.OutboxByKeys(keys)
		if err != nil {
			return err
		}
		for _, f := range fresh {
			r, ok := rows[f.Key]
			if !ok {
				continue
			}
			ev := byID[f.EventID]
			switch ev.Type {
			case sdk.DeliveryBounced, sdk.DeliverySpamReport:
				reason := "hard bounce"
				if ev.Type == sdk.DeliverySpamReport {
					reason = "spam report"
				}
				h := CustomerHash(r.CustomerID)
				if ev.Address != "" {
					h = AddressHash(ev.Address)
				}
				suppress = append(suppress, storage.Suppression{Kind: r.Kind, Hash: h, Reason: reason, Source: channel, Created: f.Time})
			case sdk.DeliveryUnsubscribed:
				optOuts = append(optOuts, storage.Consent{CustomerID: r.CustomerID, Kind: r.Kind, Status: storage.ConsentOptOut,
					Time: f.Time, Source: channel, Basis: "unsubscribed at the provider", RecordedAt: now})
				if ev.Address != "" && r.Kind == "sms" {
					suppress = append(suppress, storage.Suppression{Kind: r.Kind, Hash: AddressHash(ev.Address), Reason: "STOP", Source: channel, Created: f.Time})
				}
			}
		}
		if err := tx.AddSuppressions(suppress); err != nil {
			return err
		}
		if len(optOuts) > 0 {
			return tx.InsertConsents(optOuts)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(suppress) > 0 || len(optOuts) > 0 {
		e.log.Info("suppressions from delivery events", "channel", channel, "suppressed", len(suppress), "opted_out", len(optOuts))
	}
	return nil
}

// resolution is the state an unknown row takes on a delivery event: sent
// when the event proves the provider had the message, failed when it says
// the provider never sent it.
func resolution(ev storage.DeliveryEvent) string {
	switch ev.Type {
	case sdk.DeliveryDropped.String(), sdk.DeliveryFailed.String():
		return storage.OutboxFailed
	case sdk.DeliveryUnknown.String():
		return ""
	}
	return storage.OutboxSent
}

// Unsubscribe records an unsubscribe from a link (unsubscribe.Store): an
// opt-out consent record for the kind, timed when it happened, so only a
// newer opt-in can lift it.
func (e *Engine) Unsubscribe(ctx context.Context, c unsubscribe.Claims, at time.Time, via string) error {
	err := e.db.Tx(ctx, func(tx *storage.Tx) error {
		return tx.InsertConsents([]storage.Consent{{CustomerID: c.CustomerID, Kind: c.Kind, Status: storage.ConsentOptOut, Time: at,
			Source: "unsubscribe", Basis: fmt.Sprintf("unsubscribe link (%s) in campaign %s", via, c.Campaign), RecordedAt: e.opt.Now()}})
	})
	if err != nil {
		return err
	}
	e.m.unsubscribes.WithLabelValues(c.Kind, via).Inc()
	e.log.Info("customer unsubscribed", "customer", c.CustomerID, "kind", c.Kind, "campaign", c.Campaign, "via", via)
	return nil
}

// reapLoop turns rows whose leases ended into unknown (or pending, with
// on_unknown: resend), unless a delivery event already says what became of
// them.
func (e *Engine) reapLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastReport time.Time
	reported := map[string]int64{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := e.reap(ctx, false); err != nil && ctx.Err() == nil {
				e.log.Error("expired leases not settled", "err", err)
			}
			if time.Since(lastReport) >= time.Minute {
				lastReport = time.Now()
				e.reportUnknowns(ctx, reported)
			}
		}
	}
}

// reportUnknowns reports, per campaign, the unknown rows no delivery event
// resolved within the unknown TTL: logged when the count changes, and the
// cohort_campaign_unresolved_unknowns gauge.
func (e *Engine) reportUnknowns(ctx context.Context, reported map[string]int64) {
	counts, err := e.db.UnresolvedUnknowns(ctx, e.opt.Now().Add(-e.opt.Messages.UnknownTTL))
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("unresolved unknowns not counted", "err", err)
		}
		return
	}
	for c := range reported {
		if _, ok := counts[c]; !ok {
			counts[c] = 0
		}
	}
	for c, n := range counts {
		e.m.unresolved.WithLabelValues(c).Set(float64(n))
		if n != reported[c] && n > 0 {
			e.log.Warn("messages with an unknown outcome: the provider may or may not have them, and no delivery event said; they are not resent (on_unknown: report)",
				"campaign", c, "unresolved", n, "older_than", e.opt.Messages.UnknownTTL)
		}
		reported[c] = n
	}
}

func (e *Engine) reap(ctx context.Context, all bool) error {
	for {
		now := e.opt.Now()
		rows, err := e.db.ExpiredLeases(ctx, now, all, 1000)
		if err != nil || len(rows) == 0 {
			return err
		}
		keys := make([]string, 0, len(rows))
		for _, r := range rows {
			keys = append(keys, r.Key)
		}
		evs, err := e.db.DeliveryEventsOf(ctx, keys)
		if err != nil {
			return err
		}
		comps := make([]storage.Completion, 0, len(rows))
		for _, r := range rows {
			c := storage.Completion{ID: r.ID, Token: r.LeaseToken, State: storage.OutboxUnknown, Reason: ReasonLeaseExpiry}
			if all {
				c.Reason = "the daemon stopped during the call: the provider may have the message"
			}
			for _, ev := range evs[r.Key] {
				if st := resolution(ev); st != "" {
					c.State, c.Reason = st, "resolved by a delivery event: "+ev.Type
				}
			}
			if c.State == storage.OutboxUnknown {
				if ch := e.opt.Channels[r.Channel]; ch != nil && ch.Resend {
					c.State, c.NotBefore = storage.OutboxPending, now
				}
			}
			comps = append(comps, c)
		}
		applied, err := e.db.Complete(ctx, comps, now)
		if err != nil {
			return err
		}
		for _, c := range comps {
			e.log.Warn("lease ended without an outcome", "outcome", c.State, "reason", c.Reason, "row", c.ID)
		}
		for _, r := range rows {
			e.m.messages.WithLabelValues(r.Campaign, r.Arm, r.Channel, "lease_expired").Inc()
		}
		if len(applied) < len(rows) && !all {
			return nil
		}
		if len(rows) < 1000 {
			return nil
		}
	}
}

// Forget erases a customer (GDPR Art. 17), keeping hashed suppressions of
// their id and of the given addresses on every kind, so they are never
// messaged again even if a source brings them back.
func Forget(ctx context.Context, db *storage.DB, customerID string, addresses []string, now time.Time) (bool, error) {
	keep := []storage.Suppression{{Kind: "all", Hash: CustomerHash(customerID), Reason: "erased (forget)", Source: "forget", Created: now}}
	for _, a := range addresses {
		if a != "" {
			keep = append(keep, storage.Suppression{Kind: "all", Hash: AddressHash(a), Reason: "erased (forget)", Source: "forget", Created: now})
		}
	}
	return db.Forget(ctx, customerID, keep)
}

type metrics struct {
	occurrences  *prometheus.CounterVec
	messages     *prometheus.CounterVec
	deferred     *prometheus.CounterVec
	deliveries   *prometheus.CounterVec
	held         *prometheus.CounterVec
	unsubscribes *prometheus.CounterVec
	winners      *prometheus.CounterVec
	unresolved   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		occurrences: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "campaign", Name: "occurrences_total",
			Help: "Campaign occurrences by campaign and arm (holdout included)."}, []string{"campaign", "arm"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "campaign", Name: "messages_total",
			Help: "Message outcomes by campaign, variant, channel and outcome (sent, failed, skipped, unknown, retry, lease_expired)."},
			[]string{"campaign", "variant", "channel", "outcome"}),
		deferred: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "campaign", Name: "deferrals_total",
			Help: "Messages deferred by a send-time policy, by campaign, channel and reason."}, []string{"campaign", "channel", "reason"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "campaign", Name: "delivery_events_total",
			Help: "Provider delivery events received, by channel and type."}, []string{"channel", "type"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "campaign", Name: "held_occurrences_total",
			Help: "Occurrences passed over while a campaign was held (paused, ended, or its segment outside min_size/max_size)."}, []string{"campaign"}),
		unsubscribes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "campaign", Name: "unsubscribes_total",
			Help: "Unsubscribes from links, by kind and how (one-click, page)."}, []string{"kind", "via"}),
		winners: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "campaign", Name: "winner_decisions_total",
			Help: "Winner decisions, by campaign and winning variant."}, []string{"campaign", "variant"}),
		unresolved: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "cohort", Subsystem: "campaign", Name: "unresolved_unknowns",
			Help: "Messages whose outcome stayed unknown past messages.unknown_ttl, by campaign."}, []string{"campaign"}),
	}
	reg.MustRegister(m.occurrences, m.messages, m.deferred, m.deliveries, m.held, m.unsubscribes, m.winners, m.unresolved)
	return m
}

var (
	locMu    sync.Mutex
	locCache = map[string]*time.Location{}
)

func loadLocation(name string) (*time.Location, error) {
	locMu.Lock()
	defer locMu.Unlock()
	if l, ok := locCache[name]; ok {
		if l == nil {
			return nil, fmt.Errorf("unknown time zone %q", name)
		}
		return l, nil
	}
	l, err := time.LoadLocation(name)
	locCache[name] = l
	return l, err
}
