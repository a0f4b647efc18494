package daemon_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/daemon"
	"github.com/cohortd/cohort/daemon/campaign"
	"github.com/cohortd/cohort/daemon/config"
	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk/sdktest"
	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// TestCampaignEndToEnd runs the daemon in-process (so the test owns the
// clock) with the real csv source and sendgrid channel plugin processes
// against the local SendGrid server: a campaign with two variants and a 10%
// holdout on customers entering a segment.
//
// The first pass is the campaign's baseline: the customers already in the
// segment get nothing. Customers appended to the CRM export afterwards enter
// the segment and get the campaign: the split between arms is within
// sampling bounds, nobody in the holdout, opted out or suppressed gets a
// message, recipients whose local time is in the quiet hours are deferred
// and sent when their window opens, and a rule edit does not re-fire the
// campaign. Delivery events posted by the provider are recorded, a bounce
// suppresses its address.
//
// It runs on SQLite and, when a test database is configured, on PostgreSQL.
func TestCampaignEndToEnd(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		campaignEndToEnd(t, dir, storage.Config{Driver: storage.SQLite, DSN: filepath.Join(dir, "cohort.db")}, "driver: sqlite\n  dsn: cohort.db")
	})
	t.Run("postgres", func(t *testing.T) {
		sc := storagetest.PostgresConfig(t)
		campaignEndToEnd(t, t.TempDir(), sc, fmt.Sprintf("driver: postgres\n  dsn: %q", sc.DSN))
	})
}

func campaignEndToEnd(t *testing.T, dir string, sc storage.Config, storageYAML string) {
	const (
		initial  = 100
		entrants = 1500
	)
	ctx := context.Background()
	sg, err := sgserver.Start(sgserver.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { sg.Close() })

	// 12:00 UTC: 21:00 in Tokyo, inside the quiet hours 21:00-08:00.
	var clock atomic.Int64
	clock.Store(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }

	type person struct {
		id, email, tz, optIn string
	}
	people := func(from, to int) []person {
		var ps []person
		for i := from; i < to; i++ {
			p := person{id: fmt.Sprintf("c%05d", i), email: fmt.Sprintf("c%05d@example.com", i), tz: "UTC", optIn: "yes"}
			switch {
			case i%20 == 1:
				p.optIn = "no"
			case i%10 == 3:
				p.tz = "Asia/Tokyo"
			}
			ps = append(ps, p)
		}
		return ps
	}
	csvPath := filepath.Join(dir, "customers.csv")
	// Customers on the free plan are outside the segment until the rule
	// edit at the end brings them in.
	var free []string
	for i := range 30 {
		free = append(free, fmt.Sprintf("f%05d", i))
	}
	writeCSV := func(ps []person) {
		var b strings.Builder
		b.WriteString("id,first_name,email,tz,plan,email_opt_in\n")
		for _, p := range ps {
			fmt.Fprintf(&b, "%s,Ana,%s,%s,pro,%s\n", p.id, p.email, p.tz, p.optIn)
		}
		for _, id := range free {
			fmt.Fprintf(&b, "%s,Bo,%s@example.com,UTC,free,yes\n", id, id)
		}
		tmp := csvPath + ".tmp"
		require.NoError(t, os.WriteFile(tmp, []byte(b.String()), 0o644))
		require.NoError(t, os.Rename(tmp, csvPath))
	}
	first := people(0, initial)
	writeCSV(first)

	rulesDir := filepath.Join(dir, "rules")
	require.NoError(t, os.MkdirAll(filepath.Join(rulesDir, "templates"), 0o755))
	writeSegments := func(when string) {
		require.NoError(t, os.WriteFile(filepath.Join(rulesDir, "segments.yaml"), []byte(`version: 1
refresh: "0 3 * * *"
segments:
  pros:
    when: `+when+`
`), 0o644))
	}
	writeSegments(`plan == "pro"`)
	require.NoError(t, os.WriteFile(filepath.Join(rulesDir, "campaigns.yaml"), []byte(`version: 1
campaigns:
  welcome:
    segment: pros
    trigger: enter
    channel: email
    holdout: 10%
    variants:
      a: {weight: 50, subject: "Welcome, {{.first_name}}", html: templates/a.html}
      b: {weight: 50, subject: "Hello {{.first_name}}", text: templates/b.txt}
policies:
  email: {quiet_hours: "21:00-08:00"}
`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(rulesDir, "templates", "a.html"),
		[]byte(`<p>Hi {{.first_name}}</p><p><a href="{{unsubscribe_url}}">Unsubscribe</a> {{postal_address}}</p>`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(rulesDir, "templates", "b.txt"),
		[]byte("Hi {{.first_name}}\nUnsubscribe: {{unsubscribe_url}}\n{{postal_address}}\n"), 0o644))

	// Suppressed before the campaign: every 50th entrant's address.
	db, err := storage.Open(ctx, sc)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	all := append(first, people(initial, initial+entrants)...)
	suppressed := map[string]bool{}
	var sups []storage.Suppression
	for i, p := range all[initial:] {
		if i%50 == 7 {
			suppressed[p.id] = true
			sups = append(sups, storage.Suppression{Kind: "email", Hash: campaign.AddressHash(p.email), Reason: "hard bounce", Source: "test", Created: now()})
		}
	}
	require.NoError(t, db.AddSuppressions(ctx, sups))

	csvBin := sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/csv")
	sgBin := sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/sendgrid")
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`storage:
  %s
http:
  listen: 127.0.0.1:0
  public_url: https://cohort.example.com
timezone: UTC
rules:
  dir: rules
messages:
  from: "Example Shop <news@example.com>"
  postal_address: "1 Example Street, Springfield"
sources:
  crm:
    plugin: %s
    config:
      path: customers.csv
      id_column: id
      email: email
      timezone: tz
      consent: {column: email_opt_in}
channels:
  email:
    plugin: %s
    concurrency: 2
    batch: 20
    timeout: 10s
    config:
      api_key: %s
      base_url: %s
      webhook_public_key: %s
`, storageYAML, csvBin, sgBin, sg.APIKey(), sg.URL, sg.PublicKeyBase64())), 0o644))
	cfg, err := config.Load(cfgPath)
	require.NoError(t, err)

	d := daemon.New(cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	d.SetClock(now)
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-runErr:
			require.NoError(t, err)
		case <-time.After(2 * time.Minute):
			t.Error("the daemon did not stop within 2 minutes")
		}
	})
	select {
	case <-d.Ready():
	case err := <-runErr:
		t.Fatalf("daemon did not start: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("daemon not serving after 2 minutes")
	}

	// The baseline: the first pass after the first import fires nothing.
	waitFor(t, 2*time.Minute, "the campaign's baseline", func() bool {
		st, err := db.CampaignStates(ctx)
		return err == nil && st["welcome"].Fingerprint != ""
	})
	counts, err := db.OutboxCounts(ctx, "welcome")
	require.NoError(t, err)
	require.Empty(t, counts, "the baseline must not queue messages to the customers already in the segment")

	// New customers enter the segment.
	writeCSV(all)
	tokyo := 0
	expectSend := map[string]bool{}
	waitFor(t, 2*time.Minute, "every entrant to be assigned", func() bool {
		n := 0
		for _, p := range all[initial:] {
			if _, err := db.Assignment(ctx, "welcome", p.id); err == nil {
				n++
			}
		}
		return n == entrants
	})
	arms := map[string]int{}
	holdout := map[string]bool{}
	for _, p := range all[initial:] {
		a, err := db.Assignment(ctx, "welcome", p.id)
		require.NoError(t, err)
		arms[a.Arm]++
		if a.Holdout {
			holdout[p.id] = true
			continue
		}
		if p.optIn == "yes" && !suppressed[p.id] {
			expectSend[p.id] = true
			if p.tz == "Asia/Tokyo" {
				tokyo++
			}
		}
	}
	for _, p := range all[:initial] {
		_, err := db.Assignment(ctx, "welcome", p.id)
		require.ErrorIs(t, err, storage.ErrNotFound, "customer %s was in the segment at the baseline", p.id)
	}
	// Sampling bounds: 4.5 standard deviations of the binomial counts.
	within := func(arm string, p float64) {
		mean := p * entrants
		sd := math.Sqrt(entrants * p * (1 - p))
		require.InDelta(t, mean, float64(arms[arm]), 4.5*sd, "arm %s: %v", arm, arms)
	}
	within(campaign.HoldoutArm, 0.10)
	within("a", 0.45)
	within("b", 0.45)
	require.Greater(t, tokyo, 0)

	// Everyone but the quiet-hours recipients is sent now.
	waitFor(t, 2*time.Minute, "every message outside the quiet hours to be sent", func() bool {
		return len(sg.CountByKey()) >= len(expectSend)-tokyo
	})
	pending := func() int64 {
		c, err := db.OutboxCounts(ctx, "welcome")
		require.NoError(t, err)
		return c[storage.OutboxPending] + c[storage.OutboxSending]
	}
	waitFor(t, time.Minute, "only the quiet-hours recipients to wait", func() bool { return pending() == int64(tokyo) })
	require.Len(t, sg.CountByKey(), len(expectSend)-tokyo, "quiet-hours recipients were sent")

	// 23:05 UTC is 08:05 in Tokyo: their window opens.
	clock.Store(time.Date(2026, 11, 24, 23, 5, 0, 0, time.UTC).UnixNano())
	d.Campaigns().Kick()
	waitFor(t, 2*time.Minute, "the quiet-hours recipients to be sent", func() bool {
		d.Campaigns().Kick()
		return len(sg.CountByKey()) == len(expectSend)
	})
	waitFor(t, time.Minute, "every outcome to be recorded", func() bool { return pending() == 0 })
	require.Empty(t, sg.Duplicates(), "the provider was asked twice for the same message")

	// Who got what: only consented, unsuppressed, non-holdout entrants.
	rows := map[string]storage.OutboxRow{}
	perVariant := map[string]int{}
	for _, p := range all[initial:] {
		rs, err := db.OutboxOf(ctx, p.id, 10)
		require.NoError(t, err)
		if holdout[p.id] {
			require.Empty(t, rs, "holdout customer %s has an outbox row", p.id)
			continue
		}
		require.Len(t, rs, 1, "customer %s", p.id)
		r := rs[0]
		rows[p.id] = r
		switch {
		case p.optIn == "no":
			require.Equal(t, storage.OutboxSkipped, r.State, p.id)
			require.Equal(t, campaign.ReasonOptedOut, r.Reason, p.id)
		case suppressed[p.id]:
			require.Equal(t, storage.OutboxSkipped, r.State, p.id)
			require.Contains(t, r.Reason, campaign.ReasonSuppressed, p.id)
		default:
			require.Equal(t, storage.OutboxSent, r.State, p.id)
			require.NotEmpty(t, r.ProviderID, p.id)
			perVariant[r.Arm]++
			if p.tz == "Asia/Tokyo" {
				require.Equal(t, campaign.ReasonQuietHours, r.DeferReason, p.id)
			}
		}
	}
	byEmail := map[string]string{}
	for _, p := range all {
		byEmail[p.email] = p.id
	}
	for _, m := range sg.Accepted() {
		for _, pz := range m.Personalizations {
			id := byEmail[pz.To[0].Email]
			require.True(t, expectSend[id], "message to %s, who must not get one", id)
			require.Equal(t, rows[id].Key, pz.CustomArgs["cohort_key"])
			require.Contains(t, m.Headers["List-Unsubscribe"], "https://cohort.example.com/unsubscribe?")
			require.Equal(t, "List-Unsubscribe=One-Click", m.Headers["List-Unsubscribe-Post"])
		}
	}
	require.Equal(t, len(expectSend), perVariant["a"]+perVariant["b"])

	// Delivery events: one address bounces, the rest are delivered.
	var bounced string
	for id := range expectSend {
		bounced = id
		break
	}
	bounceEmail := fmt.Sprintf("%s@example.com", bounced)
	base := "http://" + d.Addr().String()
	status, err := sg.PostEvents(ctx, base+"/webhooks/email", sg.EventsFor(sgserver.EventOptions{Bounce: []string{bounceEmail}}))
	require.NoError(t, err)
	require.Equal(t, 200, status)
	waitFor(t, time.Minute, "the bounce to be recorded", func() bool {
		rs, err := db.OutboxOf(ctx, bounced, 1)
		return err == nil && len(rs) == 1 && rs[0].Delivery == "bounced"
	})
	err = db.Tx(ctx, func(tx *storage.Tx) error {
		s, err := tx.Suppressions("email", []string{campaign.AddressHash(bounceEmail)})
		if err != nil {
			return err
		}
		require.Len(t, s, 1)
		return nil
	})
	require.NoError(t, err)

	// A rule edit that brings the free-plan customers into the segment
	// takes a new baseline: they entered with the edit and get nothing. A
	// customer who enters afterwards is planned as usual, which shows the
	// planner has read past the baseline.
	st0, err := db.CampaignStates(ctx)
	require.NoError(t, err)
	writeSegments(`plan == "pro" || plan == "free"`)
	waitFor(t, 2*time.Minute, "the new baseline after the rule edit", func() bool {
		st, err := db.CampaignStates(ctx)
		return err == nil && st["welcome"].Fingerprint != st0["welcome"].Fingerprint
	})
	newcomer := person{id: "n00001", email: "n00001@example.com", tz: "UTC", optIn: "yes"}
	writeCSV(append(all, newcomer))
	waitFor(t, 2*time.Minute, "the customer entering after the edit to be assigned", func() bool {
		_, err := db.Assignment(ctx, "welcome", newcomer.id)
		return err == nil
	})
	for _, id := range free {
		_, err := db.Assignment(ctx, "welcome", id)
		require.ErrorIs(t, err, storage.ErrNotFound, "the rule edit re-fired the campaign at %s", id)
	}

	res, err := campaign.Report(ctx, db, mustCampaign(t, d), now())
	require.NoError(t, err)
	require.Len(t, res.Arms, 3)
	var assigned int64
	for _, a := range res.Arms {
		assigned += a.Assigned
	}
	require.EqualValues(t, entrants+1, assigned)
	require.False(t, res.SRM, "sample ratio mismatch: %v", arms)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustCampaign(t *testing.T, d *daemon.Daemon) *rules.Campaign {
	t.Helper()
	c := d.Campaigns().Campaign("welcome")
	require.NotNil(t, c)
	return c
}

// testWriter sends the daemon's log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
