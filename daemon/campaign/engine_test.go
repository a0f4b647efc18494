package campaign

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/daemon/message"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// The engine tests run the real planner and dispatcher on a real SQLite
// database; only the channel plugin is a fake (an external provider).

var engineSchema = rules.Schema{
	Traits: map[string]sdk.TraitType{
		"email":      sdk.TypeString,
		"first_name": sdk.TypeString,
		"tz":         sdk.TypeString,
		"orders":     sdk.TypeNumber,
	},
	Events: []string{"purchase"},
}

// testClock is the injected clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeChannel records what it is sent and answers with reply.
type fakeChannel struct {
	mu    sync.Mutex
	sent  []sdk.Message
	calls int
	reply func(m sdk.Message, call int) sdk.Result
	err   error
}

func (f *fakeChannel) Send(_ context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	out := make([]sdk.Result, 0, len(msgs))
	for _, m := range msgs {
		f.sent = append(f.sent, m)
		r := sdk.Result{Key: m.Key, Status: sdk.Accepted, ProviderID: "pid-" + m.Key}
		if f.reply != nil {
			r = f.reply(m, f.calls)
			r.Key = m.Key
		}
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeChannel) recipients() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.sent {
		out = append(out, m.CustomerID)
	}
	sort.Strings(out)
	return out
}

// campaignSpec is what differs between the tests' rules directories.
type campaignSpec struct {
	name     string // default "winback"
	backfill bool
	reentry  string // default "never"
	status   string // default "active"
	policies string // the email policy's YAML flow mapping, "" for none
	extra    string // more campaigns, YAML
}

func writeRules(t *testing.T, dir string, s campaignSpec) {
	t.Helper()
	if s.name == "" {
		s.name = "winback"
	}
	if s.reentry == "" {
		s.reentry = "never"
	}
	if s.status == "" {
		s.status = "active"
	}
	files := map[string]string{
		"segments.yaml":   "version: 1\nsegments:\n  buyers:\n    when: orders > 0\n",
		"templates/a.txt": "Hello {{.first_name}}, variant a.\n",
		"templates/b.txt": "Hello {{.first_name}}, variant b.\n",
	}
	y := fmt.Sprintf(`version: 1
campaigns:
  %s:
    segment: buyers
    trigger: enter
    backfill: %v
    reentry: %s
    status: %s
    channel: email_main
    holdout: 0%%
    variants:
      a: {weight: 50, subject: "Hi {{.first_name}}", text: templates/a.txt}
      b: {weight: 50, subject: "Hey {{.first_name}}", text: templates/b.txt}
%s`, s.name, s.backfill, s.reentry, s.status, s.extra)
	if s.policies != "" {
		y += "policies:\n  email: " + s.policies + "\n"
	}
	files["campaigns.yaml"] = y
	for name, body := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	}
}

type harness struct {
	t     *testing.T
	ctx   context.Context
	db    *storage.DB
	clock *testClock
	ch    *fakeChannel
	e     *Engine
	d     *dispatcher
	set   *rules.Set
}

type harnessOpt func(*Options, *Channel)

func newHarness(t *testing.T, spec campaignSpec, opts ...harnessOpt) *harness {
	t.Helper()
	ctx := context.Background()
	h := &harness{t: t, ctx: ctx, db: storagetest.OpenSQLite(t), clock: &testClock{now: time.Date(2026, 11, 24, 15, 0, 0, 0, time.UTC)},
		ch: &fakeChannel{}}
	ch := &Channel{Name: "email_main", Kind: "email", Concurrency: 1, Batch: 10, Timeout: 5 * time.Second, Send: h.ch.Send}
	opt := Options{DB: h.db, Now: h.clock.Now, Channels: map[string]*Channel{"email_main": ch},
		Contacts: Contacts{Email: "email", Timezone: "tz"}, Traits: engineSchema.Traits,
		Messages: Messages{From: "shop@example.com", Consent: ConsentOptOut}}
	for _, o := range opts {
		o(&opt, ch)
	}
	h.e = New(opt)
	h.d = newDispatcher(h.e, ch)
	h.setRules(spec)
	return h
}

// setRules loads a rules directory written from spec and makes it current.
func (h *harness) setRules(spec campaignSpec) {
	h.t.Helper()
	dir := h.t.TempDir()
	writeRules(h.t, dir, spec)
	set, err := rules.LoadDir(dir, rules.LoadOptions{Schema: engineSchema, Channels: map[string]string{"email_main": "email"}})
	require.NoError(h.t, err)
	msgs, err := message.Compile(dir, set.Campaigns(), engineSchema.Traits)
	require.NoError(h.t, err)
	h.e.SetRules(set, msgs)
	h.set = set
}

// customer stores a customer in New York with an address.
func (h *harness) customer(id string, traits map[string]any) {
	h.t.Helper()
	tr := map[string]any{"email": id + "@example.com", "first_name": "Ann", "tz": "America/New_York", "orders": 1}
	for k, v := range traits {
		tr[k] = v
	}
	b, err := json.Marshal(tr)
	require.NoError(h.t, err)
	require.NoError(h.t, h.db.UpsertCustomers(h.ctx, []storage.Customer{{ID: id, Traits: b}}))
}

// pass writes a segmentation pass of the buyers segment and plans it.
func (h *harness) pass(entered, exited []string) {
	h.t.Helper()
	var id int64
	now := h.clock.Now()
	require.NoError(h.t, h.db.Tx(h.ctx, func(tx *storage.Tx) error {
		var err error
		if id, err = tx.BeginPass(storage.PassFull, now); err != nil {
			return err
		}
		if err := tx.ApplyDiff("buyers", entered, exited, now, id); err != nil {
			return err
		}
		return tx.FinishPass(id, len(entered)+len(exited), len(entered)+len(exited))
	}))
	require.NoError(h.t, h.e.PlanOnce(h.ctx, &Pass{ID: id, Full: true, CaughtUp: true, Set: h.set}))
}

// dispatch runs the dispatcher until it finds nothing due.
func (h *harness) dispatch() {
	h.t.Helper()
	for range 100 {
		n, err := h.d.once(h.ctx)
		require.NoError(h.t, err)
		if n == 0 {
			return
		}
	}
	h.t.Fatal("the dispatcher never ran out of work")
}

// rows returns the outbox rows of a customer, oldest first.
func (h *harness) rows(customer string) []storage.OutboxRow {
	h.t.Helper()
	rs, err := h.db.OutboxOf(h.ctx, customer, 100)
	require.NoError(h.t, err)
	sort.Slice(rs, func(i, j int) bool { return rs[i].ID < rs[j].ID })
	return rs
}

func (h *harness) row(customer string) storage.OutboxRow {
	h.t.Helper()
	rs := h.rows(customer)
	require.Len(h.t, rs, 1, "rows of %s", customer)
	return rs[0]
}

func (h *harness) counts() map[string]int64 {
	h.t.Helper()
	c, err := h.db.OutboxCounts(h.ctx, "")
	require.NoError(h.t, err)
	return c
}

func TestEngineBaselineFiresNothing(t *testing.T) {
	h := newHarness(t, campaignSpec{})
	for _, id := range []string{"c1", "c2", "c3"} {
		h.customer(id, nil)
	}
	h.pass([]string{"c1", "c2"}, nil)
	require.Empty(t, h.counts(), "the first full pass is a baseline")
	st, ok := h.e.state("winback")
	require.True(t, ok)
	require.Equal(t, h.clock.Now(), st.Baseline)

	// An entry after the baseline fires.
	h.clock.Add(time.Minute)
	h.pass([]string{"c3"}, nil)
	require.Equal(t, map[string]int64{storage.OutboxPending: 1}, h.counts())
	r := h.row("c3")
	require.True(t, strings.HasPrefix(r.Occurrence, "enter:"), r.Occurrence)
	h.dispatch()
	require.Equal(t, []string{"c3"}, h.ch.recipients())
	r = h.row("c3")
	require.Equal(t, storage.OutboxSent, r.State)
	require.Equal(t, "pid-"+r.Key, r.ProviderID)
	m := h.ch.sent[0]
	require.Equal(t, "c3@example.com", m.To)
	require.Equal(t, "shop@example.com", m.From)
	require.Contains(t, m.Text, "variant "+r.Arm)
	a, err := h.db.Assignment(h.ctx, "winback", "c3")
	require.NoError(t, err)
	require.Equal(t, r.Arm, a.Arm)

	// A rule edit that keeps the definition (here: a reentry change) is no
	// new baseline; members that entered before do not fire.
	baseline := st.Baseline
	h.clock.Add(time.Minute)
	h.setRules(campaignSpec{reentry: "after 30d"})
	h.pass(nil, nil)
	st, ok = h.e.state("winback")
	require.True(t, ok)
	require.Equal(t, baseline, st.Baseline, "a reentry change takes no new baseline")
	require.Equal(t, map[string]int64{storage.OutboxSent: 1}, h.counts())
	h.dispatch()
	require.Len(t, h.ch.recipients(), 1)
}

// TestEngineProviderIDsIndexedOnlyWithEvents: a channel that reports
// delivery events (NoEvents nil or false) gets its provider ids indexed
// for events that name only them; one that reports none (NoEvents true)
// keeps the id on the row without an index entry.
func TestEngineProviderIDsIndexedOnlyWithEvents(t *testing.T) {
	noEvents := false
	h := newHarness(t, campaignSpec{backfill: true}, func(_ *Options, ch *Channel) {
		ch.NoEvents = func() bool { return noEvents }
	})
	h.customer("c1", nil)
	h.pass([]string{"c1"}, nil)
	h.dispatch()
	noEvents = true
	h.clock.Add(time.Minute)
	h.customer("c2", nil)
	h.pass([]string{"c2"}, nil)
	h.dispatch()

	r1, r2 := h.row("c1"), h.row("c2")
	require.Equal(t, storage.OutboxSent, r1.State)
	require.Equal(t, storage.OutboxSent, r2.State)
	require.Equal(t, "pid-"+r2.Key, r2.ProviderID, "the id is kept without an index entry")
	keys, err := h.db.KeysByProviderID(h.ctx, "email_main", []string{"pid-" + r1.Key, "pid-" + r2.Key})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"pid-" + r1.Key: r1.Key}, keys)
}

func TestEngineBackfill(t *testing.T) {
	h := newHarness(t, campaignSpec{backfill: true})
	for _, id := range []string{"c1", "c2"} {
		h.customer(id, nil)
	}
	h.pass([]string{"c1", "c2"}, nil)
	require.Equal(t, map[string]int64{storage.OutboxPending: 2}, h.counts())
	require.True(t, strings.HasPrefix(h.row("c1").Occurrence, "backfill:"))
	h.dispatch()
	require.Equal(t, []string{"c1", "c2"}, h.ch.recipients())
	// The next pass does not backfill again.
	h.pass(nil, nil)
	require.Equal(t, map[string]int64{storage.OutboxSent: 2}, h.counts())
}

func TestEngineReentry(t *testing.T) {
	t.Run("never", func(t *testing.T) {
		h := newHarness(t, campaignSpec{reentry: "never"})
		h.customer("c1", nil)
		h.pass(nil, nil) // baseline
		h.pass([]string{"c1"}, nil)
		h.pass(nil, []string{"c1"})
		h.clock.Add(400 * 24 * time.Hour)
		h.pass([]string{"c1"}, nil)
		require.Len(t, h.rows("c1"), 1)
		a, err := h.db.Assignment(h.ctx, "winback", "c1")
		require.NoError(t, err)
		require.Equal(t, 1, a.Occurrences)
	})
	t.Run("after", func(t *testing.T) {
		h := newHarness(t, campaignSpec{reentry: "after 30d"})
		h.customer("c1", nil)
		h.pass(nil, nil)
		h.pass([]string{"c1"}, nil)
		first := h.row("c1")
		// Back within 30 days: nothing.
		h.clock.Add(10 * 24 * time.Hour)
		h.pass(nil, []string{"c1"})
		h.pass([]string{"c1"}, nil)
		require.Len(t, h.rows("c1"), 1)
		// After 30 days: a new occurrence with its own key, the same arm.
		h.clock.Add(31 * 24 * time.Hour)
		h.pass(nil, []string{"c1"})
		h.pass([]string{"c1"}, nil)
		rs := h.rows("c1")
		require.Len(t, rs, 2)
		require.NotEqual(t, first.Key, rs[1].Key)
		require.NotEqual(t, first.Occurrence, rs[1].Occurrence)
		require.Equal(t, first.Arm, rs[1].Arm)
		a, err := h.db.Assignment(h.ctx, "winback", "c1")
		require.NoError(t, err)
		require.Equal(t, 2, a.Occurrences)
	})
}

func TestEnginePaused(t *testing.T) {
	h := newHarness(t, campaignSpec{})
	h.customer("c1", nil)
	h.customer("c2", nil)
	h.pass(nil, nil)
	h.pass([]string{"c1"}, nil)
	require.Len(t, h.rows("c1"), 1)

	// Paused: the queued row is deferred, not sent; new entries make no
	// occurrences (and are not made up later).
	h.setRules(campaignSpec{status: "paused"})
	h.pass([]string{"c2"}, nil)
	require.Empty(t, h.rows("c2"))
	h.dispatch()
	require.Empty(t, h.ch.recipients())
	r := h.row("c1")
	require.Equal(t, storage.OutboxPending, r.State)
	require.Equal(t, ReasonPaused, r.DeferReason)
	require.Equal(t, h.clock.Now().Add(time.Minute), r.NotBefore)

	h.setRules(campaignSpec{status: "active"})
	h.clock.Add(time.Minute)
	h.pass(nil, nil)
	h.dispatch()
	require.Equal(t, []string{"c1"}, h.ch.recipients())
	require.Empty(t, h.rows("c2"))
}

func TestEngineQuietHours(t *testing.T) {
	h := newHarness(t, campaignSpec{policies: `{quiet_hours: "21:00-08:00"}`})
	// 03:00Z is 22:00 in New York (EST) and 04:00 in Berlin: both quiet.
	h.clock.Set(time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC))
	h.customer("ny", nil)
	h.customer("berlin", map[string]any{"tz": "Europe/Berlin"})
	h.customer("tokyo", map[string]any{"tz": "Asia/Tokyo"}) // 12:00 there
	h.pass(nil, nil)
	h.pass([]string{"ny", "berlin", "tokyo"}, nil)
	h.dispatch()
	require.Equal(t, []string{"tokyo"}, h.ch.recipients())
	ny := h.row("ny")
	require.Equal(t, storage.OutboxPending, ny.State)
	require.Equal(t, ReasonQuietHours, ny.DeferReason)
	require.Equal(t, time.Date(2026, 11, 24, 13, 0, 0, 0, time.UTC), ny.NotBefore, "08:00 EST")
	require.Equal(t, time.Date(2026, 11, 24, 7, 0, 0, 0, time.UTC), h.row("berlin").NotBefore, "08:00 CET")

	// Berlin's morning: only Berlin goes.
	h.clock.Set(time.Date(2026, 11, 24, 7, 0, 0, 0, time.UTC))
	h.dispatch()
	require.Equal(t, []string{"berlin", "tokyo"}, h.ch.recipients())
	// A minute before New York's morning nothing is due; at 08:00 it is.
	h.clock.Set(time.Date(2026, 11, 24, 12, 59, 0, 0, time.UTC))
	h.dispatch()
	require.Len(t, h.ch.recipients(), 2)
	h.clock.Set(time.Date(2026, 11, 24, 13, 0, 0, 0, time.UTC))
	h.dispatch()
	require.Equal(t, []string{"berlin", "ny", "tokyo"}, h.ch.recipients())
	ny = h.row("ny")
	require.Equal(t, storage.OutboxSent, ny.State)
	require.Equal(t, 1, ny.Deferrals)
}

func TestEngineFrequencyCap(t *testing.T) {
	// Two campaigns on the same segment; one email a calendar day.
	extra := `  welcome:
    segment: buyers
    trigger: enter
    channel: email_main
    variants:
      a: {weight: 100, subject: "Welcome {{.first_name}}", text: templates/a.txt}
`
	h := newHarness(t, campaignSpec{policies: `{cap: 1/1d}`, extra: extra})
	// 15:00Z is 10:00 in New York.
	h.customer("c1", nil)
	h.pass(nil, nil)
	h.pass([]string{"c1"}, nil)
	require.Len(t, h.rows("c1"), 2)
	h.dispatch()
	require.Len(t, h.ch.recipients(), 1, "one message today")
	rs := h.rows("c1")
	var capped storage.OutboxRow
	for _, r := range rs {
		if r.State == storage.OutboxPending {
			capped = r
		}
	}
	require.Equal(t, ReasonCap, capped.DeferReason)
	midnight := time.Date(2026, 11, 25, 5, 0, 0, 0, time.UTC) // 00:00 EST on the 25th
	require.Equal(t, midnight, capped.NotBefore)

	h.clock.Set(midnight.Add(-time.Second))
	h.dispatch()
	require.Len(t, h.ch.recipients(), 1)
	h.clock.Set(midnight)
	h.dispatch()
	require.Len(t, h.ch.recipients(), 2, "a new local day")
	require.Equal(t, map[string]int64{storage.OutboxSent: 2}, h.counts())
}

func TestEngineConsent(t *testing.T) {
	h := newHarness(t, campaignSpec{}, func(o *Options, _ *Channel) { o.Messages.Consent = ConsentOptIn })
	t0 := h.clock.Now()
	for _, id := range []string{"none", "in", "out", "stale", "sms_only"} {
		h.customer(id, nil)
	}
	require.NoError(t, h.db.Tx(h.ctx, func(tx *storage.Tx) error {
		return tx.InsertConsents([]storage.Consent{
			{CustomerID: "in", Kind: "email", Status: storage.ConsentOptIn, Time: t0.Add(-48 * time.Hour), Source: "crm"},
			{CustomerID: "out", Kind: "email", Status: storage.ConsentOptIn, Time: t0.Add(-48 * time.Hour), Source: "crm"},
			{CustomerID: "out", Kind: "all", Status: storage.ConsentOptOut, Time: t0.Add(-24 * time.Hour), Source: "unsubscribe"},
			// An opt-out, then an older opt-in imported later (a stale
			// CRM export): still opted out.
			{CustomerID: "stale", Kind: "email", Status: storage.ConsentOptOut, Time: t0.Add(-24 * time.Hour), Source: "unsubscribe"},
			{CustomerID: "stale", Kind: "email", Status: storage.ConsentOptIn, Time: t0.Add(-30 * 24 * time.Hour), Source: "crm"},
			{CustomerID: "sms_only", Kind: "sms", Status: storage.ConsentOptIn, Time: t0.Add(-48 * time.Hour), Source: "crm"},
		})
	}))
	h.pass(nil, nil)
	h.pass([]string{"none", "in", "out", "stale", "sms_only"}, nil)
	h.dispatch()
	require.Equal(t, []string{"in"}, h.ch.recipients())
	for id, why := range map[string]string{"none": ReasonNoConsent, "out": ReasonOptedOut, "stale": ReasonOptedOut, "sms_only": ReasonNoConsent} {
		r := h.row(id)
		require.Equal(t, storage.OutboxSkipped, r.State, id)
		require.Equal(t, why, r.Reason, id)
	}
}

func TestEngineSuppressions(t *testing.T) {
	h := newHarness(t, campaignSpec{})
	for _, id := range []string{"addr", "cust", "sms", "ok", "noaddr"} {
		h.customer(id, nil)
	}
	h.customer("noaddr", map[string]any{"email": nil})
	require.NoError(t, h.db.AddSuppressions(h.ctx, []storage.Suppression{
		{Kind: "email", Hash: AddressHash("ADDR@example.com "), Reason: "hard bounce", Source: "sg", Created: h.clock.Now()},
		{Kind: "all", Hash: CustomerHash("cust"), Reason: "erased (forget)", Source: "forget", Created: h.clock.Now()},
		{Kind: "sms", Hash: AddressHash("sms@example.com"), Reason: "STOP", Source: "tw", Created: h.clock.Now()},
	}))
	h.pass(nil, nil)
	h.pass([]string{"addr", "cust", "sms", "ok", "noaddr"}, nil)
	h.dispatch()
	require.Equal(t, []string{"ok", "sms"}, h.ch.recipients(), "an sms suppression does not stop email")
	require.Equal(t, ReasonSuppressed+": hard bounce", h.row("addr").Reason)
	require.Equal(t, ReasonSuppressed+": erased (forget)", h.row("cust").Reason)
	require.Equal(t, storage.OutboxSkipped, h.row("noaddr").State)
	require.Equal(t, ReasonNoAddress, h.row("noaddr").Reason)
}

func TestEngineSuppressResult(t *testing.T) {
	h := newHarness(t, campaignSpec{reentry: "after 1d"})
	h.ch.reply = func(m sdk.Message, _ int) sdk.Result {
		if m.CustomerID == "bad" {
			return sdk.Result{Status: sdk.Suppress, Code: "550", Reason: "mailbox does not exist"}
		}
		return sdk.Result{Status: sdk.Accepted, ProviderID: "p"}
	}
	h.customer("bad", nil)
	h.customer("good", nil)
	h.pass(nil, nil)
	h.pass([]string{"bad", "good"}, nil)
	h.dispatch()
	r := h.row("bad")
	require.Equal(t, storage.OutboxSkipped, r.State)
	require.Equal(t, ReasonSuppressed+": 550: mailbox does not exist", r.Reason)
	require.Equal(t, storage.OutboxSent, h.row("good").State)
	require.NoError(t, h.db.Tx(h.ctx, func(tx *storage.Tx) error {
		sup, err := tx.Suppressions("email", []string{AddressHash("bad@example.com")})
		if err != nil {
			return err
		}
		require.Len(t, sup, 1)
		return nil
	}))
	// The next occurrence is skipped before any call.
	h.clock.Add(2 * 24 * time.Hour)
	h.pass(nil, []string{"bad"})
	h.pass([]string{"bad"}, nil)
	calls := h.ch.calls
	h.dispatch()
	require.Equal(t, calls, h.ch.calls)
	rs := h.rows("bad")
	require.Len(t, rs, 2)
	require.Equal(t, storage.OutboxSkipped, rs[1].State)
	require.True(t, strings.HasPrefix(rs[1].Reason, ReasonSuppressed), rs[1].Reason)
}

func TestEngineRetryAfter(t *testing.T) {
	h := newHarness(t, campaignSpec{})
	h.ch.reply = func(m sdk.Message, call int) sdk.Result {
		if call == 1 {
			return sdk.Result{Status: sdk.Retryable, RetryAfter: 10 * time.Minute, Code: "429", Reason: "too many requests"}
		}
		return sdk.Result{Status: sdk.Accepted, ProviderID: "p-2"}
	}
	h.customer("c1", nil)
	h.pass(nil, nil)
	h.pass([]string{"c1"}, nil)
	start := h.clock.Now()
	h.dispatch()
	r := h.row("c1")
	require.Equal(t, storage.OutboxPending, r.State)
	require.Equal(t, start.Add(10*time.Minute), r.NotBefore, "Retry-After beats the first backoff (at most 1s)")
	require.Equal(t, "429: too many requests", r.Reason)
	require.Equal(t, 0, r.Attempts, "a rate-limit refusal is not a failed attempt")

	h.clock.Set(start.Add(10*time.Minute - time.Second))
	h.dispatch()
	require.Equal(t, 1, h.ch.calls)
	h.clock.Set(start.Add(10 * time.Minute))
	h.dispatch()
	require.Equal(t, 2, h.ch.calls)
	r = h.row("c1")
	require.Equal(t, storage.OutboxSent, r.State)
	require.Equal(t, "p-2", r.ProviderID)
	require.Equal(t, 1, r.Attempts)
}

// A rate-limit storm longer than the attempt limit delays a message but
// never fails it; other retryable errors still count.
func TestEngineRateLimitDoesNotExhaustAttempts(t *testing.T) {
	h := newHarness(t, campaignSpec{}, func(o *Options, _ *Channel) { o.Messages.MaxAttempts = 3 })
	h.ch.reply = func(m sdk.Message, call int) sdk.Result {
		if call <= 6 {
			return sdk.Result{Status: sdk.Retryable, RetryAfter: time.Second, Code: "429", Reason: "too many requests"}
		}
		return sdk.Result{Status: sdk.Accepted, ProviderID: "p-7"}
	}
	h.customer("c1", nil)
	h.pass(nil, nil)
	h.pass([]string{"c1"}, nil)
	for range 10 {
		h.dispatch()
		h.clock.Add(time.Minute)
	}
	r := h.row("c1")
	require.Equal(t, storage.OutboxSent, r.State, r.Reason)
	require.Equal(t, 7, h.ch.calls)
	require.Equal(t, 1, r.Attempts)
}

func TestEngineRetriesExhausted(t *testing.T) {
	h := newHarness(t, campaignSpec{}, func(o *Options, _ *Channel) { o.Messages.MaxAttempts = 3 })
	h.ch.reply = func(sdk.Message, int) sdk.Result {
		return sdk.Result{Status: sdk.Retryable, Code: "503", Reason: "unavailable"}
	}
	h.customer("c1", nil)
	h.pass(nil, nil)
	h.pass([]string{"c1"}, nil)
	for range 5 {
		h.dispatch()
		h.clock.Add(time.Hour)
	}
	r := h.row("c1")
	require.Equal(t, storage.OutboxFailed, r.State)
	require.Equal(t, 3, h.ch.calls)
	require.True(t, strings.HasPrefix(r.Reason, ReasonRetries), r.Reason)
}

func TestEngineOutcomeUnknownStaysUnknown(t *testing.T) {
	h := newHarness(t, campaignSpec{})
	h.ch.reply = func(sdk.Message, int) sdk.Result {
		return sdk.Result{Status: sdk.OutcomeUnknown, Reason: "timeout after the request was written"}
	}
	h.customer("c1", nil)
	h.pass(nil, nil)
	h.pass([]string{"c1"}, nil)
	h.dispatch()
	require.Equal(t, storage.OutboxUnknown, h.row("c1").State)
	// Never sent again, not by the dispatcher, not by the reaper.
	h.clock.Add(7 * 24 * time.Hour)
	h.dispatch()
	require.NoError(t, h.e.reap(h.ctx, false))
	require.Equal(t, 1, h.ch.calls)
	require.Equal(t, storage.OutboxUnknown, h.row("c1").State)

	// A delivery event resolves it.
	r := h.row("c1")
	require.NoError(t, h.e.DeliveryEvents(h.ctx, "email_main", []sdk.DeliveryEvent{{Key: r.Key, Type: sdk.DeliveryDelivered, EventID: "ev-1", Time: h.clock.Now()}}))
	r = h.row("c1")
	require.Equal(t, storage.OutboxSent, r.State)
	require.Equal(t, "delivered", r.Delivery)
}

func TestEngineSendError(t *testing.T) {
	t.Run("unknown", func(t *testing.T) {
		h := newHarness(t, campaignSpec{})
		h.ch.err = fmt.Errorf("connection reset by peer")
		h.customer("c1", nil)
		h.pass(nil, nil)
		h.pass([]string{"c1"}, nil)
		h.dispatch()
		r := h.row("c1")
		require.Equal(t, storage.OutboxUnknown, r.State)
		require.Contains(t, r.Reason, "connection reset by peer")
		h.ch.err = nil
		h.clock.Add(time.Hour)
		h.dispatch()
		require.Equal(t, 1, h.ch.calls)
	})
	t.Run("resend", func(t *testing.T) {
		h := newHarness(t, campaignSpec{}, func(_ *Options, ch *Channel) { ch.Resend = true })
		h.ch.err = fmt.Errorf("connection reset by peer")
		h.customer("c1", nil)
		h.pass(nil, nil)
		h.pass([]string{"c1"}, nil)
		h.dispatch()
		r := h.row("c1")
		require.Equal(t, storage.OutboxPending, r.State)
		require.True(t, r.NotBefore.After(h.clock.Now()), "backed off")
		h.ch.err = nil
		h.clock.Add(time.Hour)
		h.dispatch()
		require.Equal(t, 2, h.ch.calls)
		require.Equal(t, storage.OutboxSent, h.row("c1").State)
	})
	t.Run("not sent", func(t *testing.T) {
		h := newHarness(t, campaignSpec{})
		h.ch.err = fmt.Errorf("plugin restarting: %w", ErrNotSent)
		h.customer("c1", nil)
		h.pass(nil, nil)
		h.pass([]string{"c1"}, nil)
		h.dispatch()
		require.Equal(t, storage.OutboxPending, h.row("c1").State)
		h.ch.err = nil
		h.clock.Add(time.Hour)
		h.dispatch()
		require.Equal(t, storage.OutboxSent, h.row("c1").State)
	})
}

// TestEngineOutcomesWithNextClaim: a worker records a batch's outcomes in
// the transaction claiming its next batch, so it never holds more than one
// batch, and the last batch's outcomes when there is nothing to claim.
func TestEngineOutcomesWithNextClaim(t *testing.T) {
	h := newHarness(t, campaignSpec{}, func(_ *Options, ch *Channel) { ch.Batch = 1 })
	h.customer("c1", nil)
	h.customer("c2", nil)
	h.pass(nil, nil)
	h.pass([]string{"c1", "c2"}, nil)
	states := func() map[string]int {
		out := map[string]int{}
		for _, c := range []string{"c1", "c2"} {
			out[h.row(c).State]++
		}
		return out
	}
	n, first, err := h.d.step(h.ctx, nil)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Len(t, first.comps, 1)
	require.Equal(t, map[string]int{storage.OutboxSending: 1, storage.OutboxPending: 1}, states(), "sent, not yet recorded")

	n, second, err := h.d.step(h.ctx, first)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, map[string]int{storage.OutboxSent: 1, storage.OutboxSending: 1}, states(), "recorded with the next claim")

	n, last, err := h.d.step(h.ctx, second)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Nil(t, last)
	require.Equal(t, map[string]int{storage.OutboxSent: 2}, states(), "recorded though nothing more was claimed")
	require.Equal(t, 2, h.ch.calls)
}

func TestEngineLeaseExpiry(t *testing.T) {
	h := newHarness(t, campaignSpec{})
	h.customer("c1", nil)
	h.customer("c2", nil)
	h.pass(nil, nil)
	h.pass([]string{"c1", "c2"}, nil)
	// A dispatcher claims and dies before any outcome.
	now := h.clock.Now()
	claimed, _, err := h.d.claim(h.ctx, "dead-token", 10)
	require.NoError(t, err)
	require.Len(t, claimed, 2)
	require.Equal(t, now.Add(10*time.Second), h.row("c1").LeaseUntil, "twice the call timeout")

	// Not yet expired.
	h.clock.Set(now.Add(10 * time.Second))
	require.NoError(t, h.e.reap(h.ctx, false))
	require.Equal(t, storage.OutboxSending, h.row("c1").State)

	// c2's message reached the provider: its event arrives first.
	r2 := h.row("c2")
	require.NoError(t, h.e.DeliveryEvents(h.ctx, "email_main", []sdk.DeliveryEvent{{Key: r2.Key, Type: sdk.DeliveryDelivered, EventID: "ev-2", Time: now}}))
	h.clock.Set(now.Add(11 * time.Second))
	require.NoError(t, h.e.reap(h.ctx, false))
	r1 := h.row("c1")
	require.Equal(t, storage.OutboxUnknown, r1.State)
	require.Equal(t, ReasonLeaseExpiry, r1.Reason)
	require.Equal(t, storage.OutboxSent, h.row("c2").State)

	// The dead dispatcher's late outcome changes nothing; nothing is resent.
	applied, err := h.db.Complete(h.ctx, []storage.Completion{{ID: r1.ID, Token: "dead-token", State: storage.OutboxSent}}, h.clock.Now())
	require.NoError(t, err)
	require.Empty(t, applied)
	h.dispatch()
	require.Zero(t, h.ch.calls)
	require.Equal(t, storage.OutboxUnknown, h.row("c1").State)
}

type fakeHolds map[string]string

func (f fakeHolds) Held(segment string) string { return f[segment] }

// While the segmenter holds the campaign's segment (outside min_size /
// max_size), its entries are passed over, not queued later.
func TestEngineHeldSegment(t *testing.T) {
	holds := fakeHolds{}
	h := newHarness(t, campaignSpec{}, func(o *Options, _ *Channel) { o.Holds = holds })
	h.customer("c1", nil)
	h.customer("c2", nil)
	h.pass(nil, nil)
	seg := h.set.Campaign("winback").Segment
	holds[seg] = "size 1 is above max_size 0"
	h.pass([]string{"c1"}, nil)
	require.Empty(t, h.rows("c1"), "a held campaign queues nothing")
	delete(holds, seg)
	h.pass([]string{"c2"}, nil)
	require.Len(t, h.rows("c2"), 1)
	require.Empty(t, h.rows("c1"), "entries passed over while held are not queued later")
}
