package campaign

import (
	"sort"
	"time"

	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/storage"
)

// ConsentMode says who may be messaged on a channel kind.
type ConsentMode string

const (
	// ConsentOptIn (the default) messages only customers whose latest
	// consent record for the kind (or "all") is an opt-in.
	ConsentOptIn ConsentMode = "opt_in"
	// ConsentOptOut messages everyone whose latest record is not an opt-out.
	ConsentOptOut ConsentMode = "opt_out"
)

// Skip and deferral reasons recorded on outbox rows.
const (
	ReasonNoConsent   = "consent: no opt-in for this channel kind"
	ReasonOptedOut    = "consent: opted out"
	ReasonSuppressed  = "suppressed"
	ReasonNoAddress   = "no address"
	ReasonCap         = "frequency cap"
	ReasonQuietHours  = "quiet hours"
	ReasonPaused      = "campaign paused"
	ReasonEnded       = "campaign ended"
	ReasonNoCampaign  = "campaign removed from the rules"
	ReasonRender      = "template"
	ReasonRetries     = "retries exhausted"
	ReasonLeaseExpiry = "lease expired during the call: the provider may have the message"
)

// Consented applies the consent records of one customer (oldest first) to a
// channel kind: the latest record of the kind or of "all" decides, by the
// time the source gives it, so a stale opt-in (an old CRM export) never
// lifts a newer unsubscribe. A record repeating its source's previous
// status for the kind is not a change and is ignored: a CRM export that
// still says "yes" when re-imported after an unsubscribe does not
// re-subscribe anyone (only a change in the CRM, to no and back to yes,
// does). It returns "" when the customer may be messaged, else the skip
// reason.
func Consented(records []storage.Consent, kind string, mode ConsentMode) string {
	var latest *storage.Consent
	last := map[[2]string]string{}
	for i := range records {
		r := &records[i]
		if r.Kind != kind && r.Kind != "all" {
			continue
		}
		k := [2]string{r.Source, r.Kind}
		if last[k] == r.Status {
			continue
		}
		last[k] = r.Status
		if latest == nil || !r.Time.Before(latest.Time) {
			latest = r
		}
	}
	switch {
	case latest != nil && latest.Status == storage.ConsentOptOut:
		return ReasonOptedOut
	case latest != nil && latest.Status == storage.ConsentOptIn:
		return ""
	case mode == ConsentOptOut:
		return ""
	}
	return ReasonNoConsent
}

// Recipient is what the send-time policies read of one customer for one
// channel kind.
type Recipient struct {
	ID   string
	Kind string
	// Consents are the customer's consent records, oldest first.
	Consents []storage.Consent
	// Address is the customer's address on Kind ("" when none).
	Address  string
	Location *time.Location
	// Recent are the claim times of the customer's messages of Kind that
	// count against frequency caps.
	Recent []time.Time
}

// Verdict is what the send-time policies decide for one message now: Skip
// is the reason it must not be sent ("" when it may be); otherwise Defer,
// when set, is why it waits until Until.
type Verdict struct {
	Skip  string
	Defer string
	Until time.Time
}

// Check applies the send-time policies of DESIGN.md section 5 to a message
// to r, in the dispatcher's order: consent, suppression of the customer, an
// address, suppression of the address, quiet hours, frequency cap.
// suppressed reports a suppression-list entry's reason by hash; pol is the
// kind's policy (nil: none).
func Check(r Recipient, mode ConsentMode, suppressed func(hash string) (string, bool), pol *rules.Policy, now time.Time) Verdict {
	if why := Consented(r.Consents, r.Kind, mode); why != "" {
		return Verdict{Skip: why}
	}
	if why, ok := suppressed(CustomerHash(r.ID)); ok {
		return Verdict{Skip: ReasonSuppressed + ": " + why}
	}
	if r.Address == "" && r.Kind != "webhook" {
		return Verdict{Skip: ReasonNoAddress}
	}
	if r.Address != "" {
		if why, ok := suppressed(AddressHash(r.Address)); ok {
			return Verdict{Skip: ReasonSuppressed + ": " + why}
		}
	}
	if pol != nil {
		if until, quiet := QuietUntil(pol.QuietHours, now, r.Location); quiet {
			return Verdict{Defer: ReasonQuietHours, Until: until}
		}
		if until, capped := CapUntil(pol.Cap, r.Recent, now, r.Location); capped {
			return Verdict{Defer: ReasonCap, Until: until}
		}
	}
	return Verdict{}
}

// QuietUntil reports whether now falls in the quiet hours in loc and, if so,
// the moment they end (the next allowed send time).
func QuietUntil(q *rules.QuietHours, now time.Time, loc *time.Location) (time.Time, bool) {
	if q == nil {
		return time.Time{}, false
	}
	local := now.In(loc)
	if !q.Contains(local) {
		return time.Time{}, false
	}
	end := localMinute(local.Year(), local.Month(), local.Day(), q.End, loc)
	if !end.After(local) {
		end = localMinute(local.Year(), local.Month(), local.Day()+1, q.End, loc)
	}
	return end, true
}

// localMinute is the moment a local day reaches minute m after midnight in
// loc. When a clock change skips that time of day (a spring-forward gap),
// it is the moment of the jump: time.Date returns a time an hour before or
// after the gap, whichever zone it picks.
func localMinute(y int, mon time.Month, d, m int, loc *time.Location) time.Time {
	t := time.Date(y, mon, d, m/60, m%60, 0, 0, loc)
	want := time.Date(y, mon, d, m/60, m%60, 0, 0, time.UTC)
	wall := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
	if wall.Equal(want) {
		return t
	}
	start, end := t.ZoneBounds()
	if wall.Before(want) {
		return end
	}
	return start
}

// CapStart is where a cap of days calendar days starts in loc: local
// midnight days-1 days before now's local day.
func CapStart(days int, now time.Time, loc *time.Location) time.Time {
	l := now.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day()-(days-1), 0, 0, 0, 0, loc)
}

// CapUntil applies a frequency cap to the times of the customer's counted
// messages (sent, sending, unknown) of the kind: when Count of them fall in
// the last Days calendar days of loc, it returns the local midnight at which
// enough of them leave the window for one more.
func CapUntil(c *rules.Cap, sent []time.Time, now time.Time, loc *time.Location) (time.Time, bool) {
	if c == nil || c.Count <= 0 {
		return time.Time{}, false
	}
	start := CapStart(c.Days, now, loc)
	var in []time.Time
	for _, t := range sent {
		if !t.Before(start) {
			in = append(in, t)
		}
	}
	if len(in) < c.Count {
		return time.Time{}, false
	}
	sort.Slice(in, func(i, j int) bool { return in[i].Before(in[j]) })
	// Dropping in[0..k] leaves Count-1: they all leave the window when the
	// day after in[k]'s local day + Days-1 begins.
	k := len(in) - c.Count
	d := in[k].In(loc)
	return time.Date(d.Year(), d.Month(), d.Day()+c.Days, 0, 0, 0, 0, loc), true
}
