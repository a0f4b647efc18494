package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/daemon/campaign"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk/sdktest"
	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// campaignWorkspace is a config with the real csv source (for the schema)
// and file channel, a campaign "welcome" on segment "pros", and a SQLite
// database seeded as if the daemon had run it for a while.
type campaignWorkspace struct {
	cfg    string
	dir    string
	outbox string
	db     *storage.DB
	now    time.Time
	// arms by customer id; ids by what was seeded for them.
	arms map[string]string
}

const campaignRules = `version: 1
campaigns:
  welcome:
    segment: pros
    trigger: enter
    channel: mail
    holdout: 10%
    goal: {event: purchase, within: 7d}
    variants:
      a: {weight: 50, subject: "Welcome, {{trait \"first_name\" \"friend\"}}", html: templates/a.html}
      b: {weight: 50, subject: "Hello {{trait \"first_name\" \"there\"}}", text: templates/b.txt}
    winner: {metric: conversion, min_per_arm: 10}
policies:
  email: {cap: 1/7d}
`

// eachDB runs fn on a workspace over SQLite and over PostgreSQL (when
// storagetest's database URL is set, as in CI).
func eachDB(t *testing.T, fn func(t *testing.T, w *campaignWorkspace)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, newCampaignWorkspace(t, storage.Config{Driver: storage.SQLite}))
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, newCampaignWorkspace(t, storagetest.PostgresConfig(t)))
	})
}

func newCampaignWorkspace(t *testing.T, scfg storage.Config) *campaignWorkspace {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	plugins := filepath.Join(dir, "plugins")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "rules", "templates"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "rules", "fixtures"), 0o755))
	require.NoError(t, os.MkdirAll(plugins, 0o755))
	for _, name := range []string{"csv", "file"} {
		require.NoError(t, os.Symlink(sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/"+name), filepath.Join(plugins, name)))
	}
	write := func(name, body string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	write("customers.csv", "id,first_name,email,tz,plan\nx1,Ana,ana@example.com,UTC,pro\n")
	write("events.csv", "event_id,customer_id,event,time,value\ne1,x1,purchase,2026-11-01T10:00:00Z,10\n")
	write("rules/segments.yaml", "version: 1\nsegments:\n  pros: {when: plan == \"pro\"}\n")
	write("rules/campaigns.yaml", campaignRules)
	write("rules/templates/a.html", `<p>Hi {{trait "first_name" "there"}}</p><p><a href="{{unsubscribe_url}}">Unsubscribe</a> {{postal_address}}</p>`)
	write("rules/templates/b.txt", "Hi {{trait \"first_name\" \"there\"}}\nUnsubscribe: {{unsubscribe_url}}\n")
	write("rules/fixtures/f.yaml", `version: 1
now: 2026-11-24T12:00:00Z
customers:
  fixture_pro: {traits: {first_name: Fixy, email: fixy@example.com, plan: pro}, must_be_in: [pros]}
`)
	w := &campaignWorkspace{dir: dir, outbox: filepath.Join(dir, "outbox.jsonl"), now: time.Now().UTC(), arms: map[string]string{}}
	w.cfg = filepath.Join(dir, "config.yaml")
	if scfg.Driver == storage.SQLite {
		scfg.DSN = filepath.Join(dir, "cohort.db")
	}
	write("config.yaml", fmt.Sprintf(`storage: {driver: %s, dsn: %q}
plugins: {dir: %s}
http: {public_url: "https://cohort.example.com"}
sources:
  crm:
    plugin: csv
    config:
      path: customers.csv
      id_column: id
      email: email
      timezone: tz
      watch: false
      events: {path: events.csv, id_column: event_id, customer_column: customer_id, name_column: event, time_column: time, value_column: value, names: [purchase]}
channels:
  mail:
    plugin: file
    kind: email
    config: {path: %s, kind: email}
messages:
  from: "Shop <news@example.com>"
  postal_address: "1 Example Street"
  consent: opt_out
  unsubscribe_secret: "0123456789abcdef0123456789abcdef0123456789"
`, scfg.Driver, scfg.DSN, plugins, w.outbox))

	db, err := storage.Open(ctx, storage.Config{Driver: scfg.Driver, DSN: scfg.DSN})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	w.db = db
	w.seed(t)
	return w
}

// seed stores 40 pro customers (c00..c39) who entered "pros" 40 days ago;
// 4 of them (c36..c39) left 5 days ago. Everyone is assigned 10 days ago;
// every variant customer has a sent row except c03 (skipped: opted out),
// c05 (failed) and c06 (unknown), who are variant customers. Every third customer bought within the
// goal window; c01 and c02 opened their message. One more pro customer,
// "newbie", has no assignment.
func (w *campaignWorkspace) seed(t *testing.T) {
	ctx := context.Background()
	now := w.now
	camp := &rules.Campaign{Name: "welcome", Holdout: 1000, Variants: []rules.Variant{{Name: "a", Weight: 50}, {Name: "b", Weight: 50}}}
	var custs []storage.Customer
	var ids []string
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("c%02d", i)
		ids = append(ids, id)
		custs = append(custs, storage.Customer{ID: id, Traits: json.RawMessage(fmt.Sprintf(
			`{"first_name":"Cy%d","email":"%s@example.com","tz":"UTC","plan":"pro"}`, i, id)), CreatedAt: now, UpdatedAt: now})
	}
	custs = append(custs, storage.Customer{ID: "newbie", Traits: json.RawMessage(`{"first_name":"New","email":"newbie@example.com","plan":"pro"}`), CreatedAt: now, UpdatedAt: now})
	require.NoError(t, w.db.Tx(ctx, func(tx *storage.Tx) error {
		if err := tx.UpsertCustomers(custs); err != nil {
			return err
		}
		p1, err := tx.BeginPass("full", now.AddDate(0, 0, -40))
		if err != nil {
			return err
		}
		if err := tx.ApplyDiff("pros", ids, nil, now.AddDate(0, 0, -40), p1); err != nil {
			return err
		}
		if err := tx.RecordSize(storage.SegmentSize{Segment: "pros", Pass: p1, At: now.AddDate(0, 0, -20), Size: 40, Entered: 40}); err != nil {
			return err
		}
		p2, err := tx.BeginPass("full", now.AddDate(0, 0, -5))
		if err != nil {
			return err
		}
		if err := tx.ApplyDiff("pros", nil, ids[36:], now.AddDate(0, 0, -5), p2); err != nil {
			return err
		}
		if err := tx.RecordSize(storage.SegmentSize{Segment: "pros", Pass: p2, At: now.AddDate(0, 0, -5), Size: 36, Exited: 4}); err != nil {
			return err
		}
		var evs []storage.Event
		for i := 0; i < 40; i += 3 {
			evs = append(evs, storage.Event{Source: "crm", ID: fmt.Sprintf("p%d", i), CustomerID: ids[i], Name: "purchase",
				Time: now.AddDate(0, 0, -8), Value: 20, HasValue: true})
		}
		if _, err := tx.InsertEvents(evs); err != nil {
			return err
		}
		return tx.InsertConsents([]storage.Consent{{CustomerID: "c03", Kind: "email", Status: storage.ConsentOptOut,
			Time: now.AddDate(0, 0, -30), Source: "crm", RecordedAt: now.AddDate(0, 0, -30)}})
	}))
	assigned := now.AddDate(0, 0, -10)
	var as []storage.Assignment
	var rows []storage.OutboxRow
	for _, id := range ids {
		arm, holdout := campaign.Assign(camp, id, "")
		w.arms[id] = arm
		as = append(as, storage.Assignment{Campaign: "welcome", CustomerID: id, Arm: arm, Holdout: holdout, Assigned: assigned, Last: assigned})
		if !holdout {
			occ := "enter:1"
			rows = append(rows, storage.OutboxRow{Key: campaign.Key("welcome", occ, id, "mail"), Campaign: "welcome", Occurrence: occ,
				CustomerID: id, Channel: "mail", Kind: "email", Arm: arm, Created: assigned})
		}
	}
	for _, id := range []string{"c03", "c05", "c06"} {
		require.NotEqual(t, campaign.HoldoutArm, w.arms[id], "%s must get a message", id)
	}
	require.NoError(t, w.db.WriteTx(ctx, func(tx *storage.Tx) error {
		if err := tx.PutAssignments(as); err != nil {
			return err
		}
		_, err := tx.Enqueue(rows)
		return err
	}))
	byCustomer := map[string]int64{}
	var all []int64
	for _, id := range ids {
		r, err := w.db.OutboxOf(ctx, id, 10)
		require.NoError(t, err)
		for _, row := range r {
			byCustomer[id] = row.ID
			all = append(all, row.ID)
		}
	}
	require.NoError(t, w.db.WriteTx(ctx, func(tx *storage.Tx) error {
		if err := tx.Finish([]int64{byCustomer["c03"]}, storage.OutboxSkipped, campaign.ReasonOptedOut, now); err != nil {
			return err
		}
		_, err := tx.Claim(all, "tok", now, now.Add(time.Minute))
		return err
	}))
	var comps []storage.Completion
	for id, rid := range byCustomer {
		c := storage.Completion{ID: rid, Token: "tok", State: storage.OutboxSent, ProviderID: "pid-" + id}
		switch id {
		case "c03":
			continue
		case "c05":
			c.State, c.ProviderID, c.Reason = storage.OutboxFailed, "", "permanent: invalid address"
		case "c06":
			c.State, c.ProviderID, c.Reason = storage.OutboxUnknown, "", "call failed: connection reset"
		}
		comps = append(comps, c)
	}
	_, err := w.db.Complete(ctx, comps, now)
	require.NoError(t, err)
	var evs []storage.DeliveryEvent
	for _, id := range []string{"c01", "c02"} {
		if w.arms[id] != campaign.HoldoutArm {
			evs = append(evs, storage.DeliveryEvent{Channel: "mail", EventID: "ev-" + id, Key: campaign.Key("welcome", "enter:1", id, "mail"), Type: "opened", Time: now})
		}
	}
	_, err = w.db.RecordDeliveryEvents(ctx, evs, func(storage.DeliveryEvent) string { return "" }, now)
	require.NoError(t, err)
}

// variantCustomer is a seeded customer in a variant (not the holdout) other than the special ones.
func (w *campaignWorkspace) variantCustomer(t *testing.T) string {
	for i := 7; i < 36; i++ {
		id := fmt.Sprintf("c%02d", i)
		if w.arms[id] != campaign.HoldoutArm {
			return id
		}
	}
	t.Fatal("no variant customer")
	return ""
}

func (w *campaignWorkspace) holdoutCustomer(t *testing.T) string {
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("c%02d", i)
		if w.arms[id] == campaign.HoldoutArm {
			return id
		}
	}
	t.Fatal("no holdout customer among the seeded ones")
	return ""
}

func TestReportJSON(t *testing.T) {
	eachDB(t, func(t *testing.T, w *campaignWorkspace) {
		code, out, errOut := runCLI(t, "report", "welcome", "--json", "--config", w.cfg)
		require.Equal(t, 0, code, errOut)
		var rep reportJSON
		require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
		require.Equal(t, "welcome", rep.Campaign)
		require.Equal(t, "pros", rep.Segment)

		want := map[string]*armJSON{}
		for id, arm := range w.arms {
			if want[arm] == nil {
				want[arm] = &armJSON{Skipped: map[string]int64{}}
			}
			a := want[arm]
			a.Assigned++
			a.Matured++
			var n int
			fmt.Sscanf(id, "c%d", &n)
			if n%3 == 0 {
				a.Converted++
			}
			if arm == campaign.HoldoutArm {
				continue
			}
			switch id {
			case "c03":
				a.Skipped[campaign.ReasonOptedOut]++
			case "c05":
				a.Failed++
			case "c06":
				a.Unknown++
			default:
				a.Sent++
			}
		}
		require.Len(t, rep.Arms, len(want))
		require.Equal(t, campaign.HoldoutArm, rep.Arms[len(rep.Arms)-1].Arm, "the holdout comes last")
		for _, a := range rep.Arms {
			e := want[a.Arm]
			require.NotNil(t, e, a.Arm)
			require.Equal(t, e.Assigned, a.Assigned, a.Arm)
			require.Equal(t, e.Sent, a.Sent, a.Arm)
			require.Equal(t, e.Failed, a.Failed, a.Arm)
			require.Equal(t, e.Unknown, a.Unknown, a.Arm)
			require.Equal(t, e.Skipped, a.Skipped, a.Arm)
			require.Equal(t, e.Matured, a.Matured, a.Arm)
			require.Equal(t, e.Converted, a.Converted, a.Arm)
			require.InDelta(t, float64(e.Converted)/float64(e.Matured), a.Conversion.Rate, 1e-9)
			require.LessOrEqual(t, a.Conversion.Lo, a.Conversion.Rate)
			require.GreaterOrEqual(t, a.Conversion.Hi, a.Conversion.Rate)
			require.InDelta(t, 20*float64(e.Converted)/float64(e.Matured), a.RevenuePerMember, 1e-9)
			if a.Holdout {
				require.Nil(t, a.Lift)
			} else {
				require.NotNil(t, a.Lift, a.Arm)
				require.LessOrEqual(t, a.Lift.Lo, a.Lift.Diff)
			}
		}
		require.NotNil(t, rep.Decision)
		require.Equal(t, "no_winner_yet", rep.Decision.Verdict.String())

		s := rep.SegmentKPIs
		require.Equal(t, int64(36), s.Size)
		require.Len(t, s.History, 2)
		require.Equal(t, int64(40), s.RetentionCohort)
		require.NotNil(t, s.Retention)
		require.InDelta(t, 0.9, *s.Retention, 1e-9)
		var sent int64
		for _, a := range rep.Arms {
			sent += a.Sent
		}
		require.Equal(t, sent, s.Sent)
		require.Equal(t, int64(40), s.Matured)
	})
}

func TestReportHuman(t *testing.T) {
	eachDB(t, func(t *testing.T, w *campaignWorkspace) {
		code, out, errOut := runCLI(t, "report", "welcome", "--config", w.cfg)
		require.Equal(t, 0, code, errOut)
		for _, s := range []string{
			"campaign welcome: segment pros, channel mail, status active, goal purchase",
			"ARM", "ASSIGNED", "CONVERSION (95% CI)", "LIFT OVER HOLDOUT",
			"skipped by reason:", campaign.ReasonOptedOut,
			"winner: no winner yet (smallest Holm-adjusted p-value is ",
			"a vs b: ",
			"segment pros: 36 members now",
			"retention: 90.0% of the 40 who entered 30+ days ago are still members",
		} {
			require.Contains(t, out, s)
		}
		code, _, errOut = runCLI(t, "report", "nope", "--config", w.cfg)
		require.Equal(t, 2, code)
		require.Contains(t, errOut, `no campaign "nope"`)
	})
}

func TestExplainCampaigns(t *testing.T) {
	eachDB(t, func(t *testing.T, w *campaignWorkspace) {
		explain := func(id string) string {
			code, out, errOut := runCLI(t, "explain", id, "--config", w.cfg)
			require.Equal(t, 0, code, errOut)
			require.Contains(t, out, `campaign "welcome" (segment pros, channel mail, email, active):`)
			return out
		}
		// A variant customer with a sent row: the 1-per-7-days cap defers the next.
		id := w.variantCustomer(t)
		out := explain(id)
		require.Contains(t, out, fmt.Sprintf("    arm: %s (assigned ", w.arms[id]))
		require.Contains(t, out, fmt.Sprintf("enter:1 %s: sent, attempts: 1", w.arms[id]))
		require.Contains(t, out, "a send now: deferred (frequency cap) until ")

		// Opted out: skipped with the consent reason, the row shows it too.
		out = explain("c03")
		require.Contains(t, out, "skipped, attempts: 0, reason: "+campaign.ReasonOptedOut)
		require.Contains(t, out, "a send now: skipped ("+campaign.ReasonOptedOut+")")

		// The holdout gets nothing.
		out = explain(w.holdoutCustomer(t))
		require.Contains(t, out, "    arm: holdout (assigned ")
		require.Contains(t, out, "outbox: no messages")
		require.Contains(t, out, "a send now: none (holdout gets no message)")

		// Not assigned: what Assign would give; no message yet, nothing blocks.
		arm, _ := campaign.Assign(&rules.Campaign{Name: "welcome", Holdout: 1000, Variants: []rules.Variant{{Name: "a", Weight: 50}, {Name: "b", Weight: 50}}}, "newbie", "")
		out = explain("newbie")
		require.NotEqual(t, campaign.HoldoutArm, arm, "newbie must be a variant customer")
		require.Contains(t, out, "    arm: "+arm+" (not assigned yet: what assignment would give now)")
		require.Contains(t, out, "a send now: allowed by every policy")

		// A suppressed address blocks.
		require.NoError(t, w.db.AddSuppressions(context.Background(), []storage.Suppression{{Kind: "email",
			Hash: campaign.AddressHash("newbie@example.com"), Reason: "hard bounce", Source: "test", Created: w.now}}))
		require.Contains(t, explain("newbie"), "a send now: skipped (suppressed: hard bounce)")
	})
}

func TestForget(t *testing.T) {
	eachDB(t, func(t *testing.T, w *campaignWorkspace) {
		ctx := context.Background()
		id := w.variantCustomer(t)

		// Without --yes, anything but y keeps the customer.
		var out, errb bytes.Buffer
		code := runIO([]string{"forget", id, "--config", w.cfg}, strings.NewReader("n\n"), &out, &errb)
		require.Equal(t, 2, code, errb.String())
		require.Contains(t, out.String(), fmt.Sprintf("Erase customer %q", id))
		require.Contains(t, errb.String(), "not erased")
		_, err := w.db.GetCustomer(ctx, id)
		require.NoError(t, err)

		out.Reset()
		errb.Reset()
		code = runIO([]string{"forget", id, "--config", w.cfg}, strings.NewReader("yes\n"), &out, &errb)
		require.Equal(t, 0, code, errb.String())
		require.Contains(t, out.String(), "customer "+id+" erased:")
		require.Contains(t, out.String(), "outbox rows: 1")
		require.Contains(t, out.String(), "campaign assignments: welcome")
		require.Contains(t, out.String(), "kept: hashed suppressions of the customer id, email")
		_, err = w.db.GetCustomer(ctx, id)
		require.ErrorIs(t, err, storage.ErrNotFound)
		rows, err := w.db.OutboxOf(ctx, id, 10)
		require.NoError(t, err)
		require.Empty(t, rows)
		var sup map[string]storage.Suppression
		require.NoError(t, w.db.Tx(ctx, func(tx *storage.Tx) error {
			var err error
			sup, err = tx.Suppressions("email", []string{campaign.CustomerHash(id), campaign.AddressHash(id + "@example.com")})
			return err
		}))
		require.Len(t, sup, 2, "the id and the address stay suppressed")

		// --yes skips the question.
		other := "newbie"
		code, stdout, errOut := runCLI(t, "forget", other, "--yes", "--config", w.cfg)
		require.Equal(t, 0, code, errOut)
		require.NotContains(t, stdout, "Erase customer")
		require.Contains(t, stdout, "customer newbie erased:")
	})
}

func TestSendTest(t *testing.T) {
	eachDB(t, func(t *testing.T, w *campaignWorkspace) {
		ctx := context.Background()
		before, err := w.db.OutboxCounts(ctx, "")
		require.NoError(t, err)

		id := w.variantCustomer(t)
		code, out, errOut := runCLI(t, "send-test", "welcome", "--to", "qa@example.com", "--customer", id, "--config", w.cfg)
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "campaign welcome: 2 variants to qa@example.com through mail (email), rendered for customer "+id)
		require.Contains(t, out, "  a: accepted")
		require.Contains(t, out, "  b: accepted")

		code, out, errOut = runCLI(t, "send-test", "welcome", "--to", "qa@example.com", "--config", w.cfg)
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "rendered for customer fixture_pro")

		type line struct {
			To, Subject, Text, HTML, From string
			Headers                       map[string][]string
			Metadata                      map[string]string
		}
		f, err := os.Open(w.outbox)
		require.NoError(t, err)
		defer f.Close()
		var got []line
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l line
			require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
			got = append(got, l)
		}
		require.Len(t, got, 4, "two variants, twice")
		n := 0
		fmt.Sscanf(id, "c%d", &n)
		wantSubject := map[string]string{"a": fmt.Sprintf("[test] Welcome, Cy%d", n), "b": fmt.Sprintf("[test] Hello Cy%d", n)}
		for i, l := range got {
			require.Equal(t, "qa@example.com", l.To)
			require.True(t, strings.HasPrefix(l.Subject, "[test] "), l.Subject)
			require.Equal(t, "true", l.Metadata["test"])
			require.Equal(t, "Shop <news@example.com>", l.From)
			if i < 2 {
				require.Equal(t, wantSubject[l.Metadata["variant"]], l.Subject)
			} else {
				require.Contains(t, l.Subject, "Fixy")
			}
			require.Contains(t, l.Text+l.HTML, "https://cohort.example.com/unsubscribe?")
		}
		after, err := w.db.OutboxCounts(ctx, "")
		require.NoError(t, err)
		require.Equal(t, before, after, "send-test writes no outbox rows")

		code, _, errOut = runCLI(t, "send-test", "welcome", "--config", w.cfg)
		require.Equal(t, 2, code)
		require.Contains(t, errOut, "send-test needs --to ADDRESS")
	})
}
