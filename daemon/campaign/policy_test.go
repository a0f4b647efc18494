package campaign

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/storage"
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	require.NoError(t, err)
	return l
}

func TestConsented(t *testing.T) {
	t0 := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	rec := func(kind, status string, days int) storage.Consent {
		return storage.Consent{CustomerID: "c1", Kind: kind, Status: status, Time: t0.AddDate(0, 0, days), Source: "crm"}
	}
	in, out := storage.ConsentOptIn, storage.ConsentOptOut
	for _, tc := range []struct {
		name    string
		records []storage.Consent
		kind    string
		optIn   string // want in opt_in mode
		optOut  string // want in opt_out mode
	}{
		{"no records", nil, "email", ReasonNoConsent, ""},
		{"opt-in", []storage.Consent{rec("email", in, 0)}, "email", "", ""},
		{"opt-in of another kind", []storage.Consent{rec("sms", in, 0)}, "email", ReasonNoConsent, ""},
		{"opt-out of another kind", []storage.Consent{rec("sms", out, 0)}, "email", ReasonNoConsent, ""},
		{"opt-out", []storage.Consent{rec("email", out, 0)}, "email", ReasonOptedOut, ReasonOptedOut},
		{"newer opt-out wins", []storage.Consent{rec("email", in, 0), rec("email", out, 1)}, "email", ReasonOptedOut, ReasonOptedOut},
		{"newer opt-in wins", []storage.Consent{rec("email", out, 0), rec("email", in, 1)}, "email", "", ""},
		{"all: newer opt-out of all beats an opt-in of the kind", []storage.Consent{rec("email", in, 0), rec("all", out, 1)}, "email", ReasonOptedOut, ReasonOptedOut},
		{"all: newer opt-in of the kind beats an opt-out of all", []storage.Consent{rec("all", out, 0), rec("email", in, 1)}, "email", "", ""},
		{"all: opt-in of all", []storage.Consent{rec("all", in, 0)}, "sms", "", ""},
		{"all: newer opt-out of the kind beats an opt-in of all", []storage.Consent{rec("all", in, 0), rec("email", out, 1)}, "email", ReasonOptedOut, ReasonOptedOut},
		// A stale opt-in (an old CRM export imported late, so it comes
		// after the opt-out in the list) never lifts a newer opt-out.
		{"stale opt-in imported later", []storage.Consent{rec("email", out, 5), rec("email", in, 1)}, "email", ReasonOptedOut, ReasonOptedOut},
		{"stale opt-in of all imported later", []storage.Consent{rec("email", out, 5), rec("all", in, 1)}, "email", ReasonOptedOut, ReasonOptedOut},
		{"another kind's newer opt-out does not count", []storage.Consent{rec("email", in, 0), rec("sms", out, 1)}, "email", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.optIn, Consented(tc.records, tc.kind, ConsentOptIn), "opt_in mode")
			require.Equal(t, tc.optOut, Consented(tc.records, tc.kind, ConsentOptOut), "opt_out mode")
		})
	}
}

func TestQuietUntil(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	berlin := mustLoc(t, "Europe/Berlin")
	night := &rules.QuietHours{Start: 21 * 60, End: 8 * 60}     // 21:00-08:00, wraps midnight
	lunch := &rules.QuietHours{Start: 12 * 60, End: 13*60 + 30} // 12:00-13:30
	gap := &rules.QuietHours{Start: 22 * 60, End: 2*60 + 30}    // ends at 02:30, inside a spring-forward gap
	utc := func(s string) time.Time {
		tt, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return tt
	}
	for _, tc := range []struct {
		name  string
		q     *rules.QuietHours
		loc   *time.Location
		now   string
		quiet bool
		until string
	}{
		{"no quiet hours", nil, ny, "2026-11-24T03:00:00Z", false, ""},
		// 2026-11-24 is EST (UTC-5).
		{"evening before midnight", night, ny, "2026-11-24T03:30:00Z" /* 22:30 */, true, "2026-11-24T13:00:00Z"},
		{"start is quiet", night, ny, "2026-11-24T02:00:00Z" /* 21:00 */, true, "2026-11-24T13:00:00Z"},
		{"just before start", night, ny, "2026-11-24T01:59:00Z" /* 20:59 */, false, ""},
		{"after midnight", night, ny, "2026-11-24T07:00:00Z" /* 02:00 */, true, "2026-11-24T13:00:00Z"},
		{"end is allowed", night, ny, "2026-11-24T13:00:00Z" /* 08:00 */, false, ""},
		{"day time", night, ny, "2026-11-24T17:00:00Z" /* 12:00 */, false, ""},
		{"same instant, other zone", night, berlin, "2026-11-24T03:30:00Z" /* 04:30 CET */, true, "2026-11-24T07:00:00Z"},
		{"window inside a day", lunch, berlin, "2026-11-24T11:15:00Z" /* 12:15 CET */, true, "2026-11-24T12:30:00Z"},
		{"window inside a day, after it", lunch, berlin, "2026-11-24T12:30:00Z" /* 13:30 CET */, false, ""},
		// Spring forward, New York 2026-03-08 02:00 EST -> 03:00 EDT: the
		// night is an hour shorter; 08:00 EDT is 12:00Z.
		{"NY spring forward, evening before", night, ny, "2026-03-08T03:00:00Z" /* 22:00 EST */, true, "2026-03-08T12:00:00Z"},
		{"NY spring forward, after the jump", night, ny, "2026-03-08T07:30:00Z" /* 03:30 EDT */, true, "2026-03-08T12:00:00Z"},
		// Fall back, New York 2026-11-01 02:00 EDT -> 01:00 EST: 08:00 EST is 13:00Z.
		{"NY fall back, evening before", night, ny, "2026-11-01T02:00:00Z" /* 22:00 EDT */, true, "2026-11-01T13:00:00Z"},
		{"NY fall back, second 01:30", night, ny, "2026-11-01T06:30:00Z" /* 01:30 EST */, true, "2026-11-01T13:00:00Z"},
		// Berlin 2026-03-29 02:00 CET -> 03:00 CEST; 08:00 CEST is 06:00Z.
		{"Berlin spring forward", night, berlin, "2026-03-28T21:00:00Z" /* 22:00 CET */, true, "2026-03-29T06:00:00Z"},
		// Berlin 2026-10-25 03:00 CEST -> 02:00 CET; 08:00 CET is 07:00Z.
		{"Berlin fall back", night, berlin, "2026-10-24T20:00:00Z" /* 22:00 CEST */, true, "2026-10-25T07:00:00Z"},
		{"Berlin fall back, repeated hour", night, berlin, "2026-10-25T01:30:00Z" /* 02:30 CET, second time */, true, "2026-10-25T07:00:00Z"},
		// Quiet hours ending at 02:30 on the night 02:30 does not exist:
		// they end when the clock jumps to 03:00 EDT (07:00Z), not a day
		// later.
		{"NY end inside the gap, before it", gap, ny, "2026-03-08T06:15:00Z" /* 01:15 EST */, true, "2026-03-08T07:00:00Z"},
		{"NY end inside the gap, last minutes", gap, ny, "2026-03-08T06:45:00Z" /* 01:45 EST */, true, "2026-03-08T07:00:00Z"},
		{"Berlin end inside the gap", gap, berlin, "2026-03-29T00:45:00Z" /* 01:45 CET */, true, "2026-03-29T01:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			until, quiet := QuietUntil(tc.q, utc(tc.now), tc.loc)
			require.Equal(t, tc.quiet, quiet)
			if !tc.quiet {
				require.True(t, until.IsZero())
				return
			}
			require.Equal(t, utc(tc.until), until.UTC(), "until %s local", until.In(tc.loc))
			// The moment it returns is allowed.
			_, still := QuietUntil(tc.q, until, tc.loc)
			require.False(t, still, "still quiet at %s local", until.In(tc.loc))
		})
	}
}

func TestCapStartCalendarDays(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	berlin := mustLoc(t, "Europe/Berlin")
	// 2026-11-24 10:00 EST: 7 calendar days start 2026-11-18 00:00 EST.
	now := time.Date(2026, 11, 24, 15, 0, 0, 0, time.UTC)
	require.Equal(t, time.Date(2026, 11, 18, 5, 0, 0, 0, time.UTC), CapStart(7, now, ny).UTC())
	require.Equal(t, time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC), CapStart(1, now, ny).UTC())
	require.Equal(t, time.Date(2026, 11, 23, 23, 0, 0, 0, time.UTC), CapStart(1, now, berlin).UTC())
	// The local day, not the UTC day: at 02:00Z on the 24th it is still
	// the 23rd in New York.
	early := time.Date(2026, 11, 24, 2, 0, 0, 0, time.UTC)
	require.Equal(t, time.Date(2026, 11, 23, 5, 0, 0, 0, time.UTC), CapStart(1, early, ny).UTC())
	// Across fall back (2026-11-01): midnight of 2026-10-28 is EDT (04:00Z).
	afterDST := time.Date(2026, 11, 3, 15, 0, 0, 0, time.UTC)
	require.Equal(t, time.Date(2026, 10, 28, 4, 0, 0, 0, time.UTC), CapStart(7, afterDST, ny).UTC())
}

func TestCapUntil(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	berlin := mustLoc(t, "Europe/Berlin")
	at := func(loc *time.Location, y int, m time.Month, d, h, min int) time.Time {
		return time.Date(y, m, d, h, min, 0, 0, loc)
	}
	t.Run("no cap", func(t *testing.T) {
		_, capped := CapUntil(nil, []time.Time{at(ny, 2026, 11, 24, 9, 0)}, at(ny, 2026, 11, 24, 10, 0), ny)
		require.False(t, capped)
		_, capped = CapUntil(&rules.Cap{Count: 0, Days: 1}, nil, at(ny, 2026, 11, 24, 10, 0), ny)
		require.False(t, capped)
	})
	t.Run("calendar days, not 168 hours", func(t *testing.T) {
		c := &rules.Cap{Count: 1, Days: 7}
		now := at(ny, 2026, 11, 24, 10, 0)
		// 23:30 on the 17th is within 168 hours of now but before the
		// window's first day (the 18th): not counted.
		_, capped := CapUntil(c, []time.Time{at(ny, 2026, 11, 17, 23, 30)}, now, ny)
		require.False(t, capped)
		// 00:10 on the 18th is counted; one more is allowed when the 25th
		// begins (the 18th leaves the 7-day window).
		until, capped := CapUntil(c, []time.Time{at(ny, 2026, 11, 18, 0, 10)}, now, ny)
		require.True(t, capped)
		require.Equal(t, at(ny, 2026, 11, 25, 0, 0), until)
	})
	t.Run("recipient's zone, not UTC", func(t *testing.T) {
		c := &rules.Cap{Count: 1, Days: 1}
		// A send at 02:00Z on the 24th was the 23rd in New York: a new
		// day has begun there by 15:00Z, though not by UTC's count...
		sent := time.Date(2026, 11, 24, 2, 0, 0, 0, time.UTC)
		now := time.Date(2026, 11, 24, 15, 0, 0, 0, time.UTC)
		_, capped := CapUntil(c, []time.Time{sent}, now, ny)
		require.False(t, capped)
		// ...whereas in Berlin both are the 24th: capped until Berlin's
		// midnight (23:00Z).
		until, capped := CapUntil(c, []time.Time{sent}, now, berlin)
		require.True(t, capped)
		require.Equal(t, time.Date(2026, 11, 24, 23, 0, 0, 0, time.UTC), until.UTC())
	})
	t.Run("count within the window", func(t *testing.T) {
		c := &rules.Cap{Count: 3, Days: 7}
		now := at(ny, 2026, 11, 24, 10, 0)
		two := []time.Time{at(ny, 2026, 11, 20, 9, 0), at(ny, 2026, 11, 24, 9, 0)}
		_, capped := CapUntil(c, two, now, ny)
		require.False(t, capped)
		// Three in the window, unsorted: the oldest (the 19th) leaves it
		// when the 26th begins.
		three := []time.Time{at(ny, 2026, 11, 24, 9, 0), at(ny, 2026, 11, 19, 9, 0), at(ny, 2026, 11, 22, 9, 0)}
		until, capped := CapUntil(c, three, now, ny)
		require.True(t, capped)
		require.Equal(t, at(ny, 2026, 11, 26, 0, 0), until)
		// Four (a cap lowered in the rules leaves more than Count in the
		// window): two must leave, the 19th and the 20th; the 20th leaves
		// when the 27th begins.
		four := append(three, at(ny, 2026, 11, 20, 9, 0))
		until, capped = CapUntil(c, four, now, ny)
		require.True(t, capped)
		require.Equal(t, at(ny, 2026, 11, 27, 0, 0), until)
	})
	t.Run("across spring forward in Berlin", func(t *testing.T) {
		c := &rules.Cap{Count: 2, Days: 2}
		now := at(berlin, 2026, 3, 28, 20, 0)
		sent := []time.Time{at(berlin, 2026, 3, 27, 10, 0), at(berlin, 2026, 3, 28, 9, 0)}
		until, capped := CapUntil(c, sent, now, berlin)
		require.True(t, capped)
		// Midnight of the 29th is still CET (23:00Z on the 28th).
		require.Equal(t, time.Date(2026, 3, 28, 23, 0, 0, 0, time.UTC), until.UTC())
		sent = []time.Time{at(berlin, 2026, 3, 28, 10, 0), at(berlin, 2026, 3, 29, 9, 0)}
		until, capped = CapUntil(c, sent, at(berlin, 2026, 3, 29, 12, 0), berlin)
		require.True(t, capped)
		// Midnight of the 30th is CEST (22:00Z on the 29th): 23 hours of
		// the 29th, still a whole calendar day.
		require.Equal(t, time.Date(2026, 3, 29, 22, 0, 0, 0, time.UTC), until.UTC())
	})
}
