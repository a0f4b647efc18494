package campaign_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortd/cohort/daemon/campaign"
	"github.com/cohortd/cohort/daemon/config"
	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/daemon/message"
	"github.com/cohortd/cohort/daemon/pluginhost"
	"github.com/cohortd/cohort/daemon/unsubscribe"
	"github.com/cohortd/cohort/plugins/sendgrid/sgbench"
	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/plugins/smtp/smtpsink"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// Issue 5's send benchmarks: messages/s end to end with full outbox
// bookkeeping, on SQLite and on PostgreSQL, each beside its baseline
// measured in the same run.
//
// The subject: N rows (COHORT_BENCH_MESSAGES, default 20,000) for N
// customers are queued in the outbox in one transaction (storage Enqueue,
// as the planner does), then the campaign engine (campaign.New, Run) claims
// them with its dispatchers, applying the send-time policies (opt_out
// consent read from consent records, the suppression list by customer and
// address hash, a 3/7d frequency cap counted under the recipient's time
// zone, quiet hours), renders each message (text/template with the
// customer's traits and a signed unsubscribe link, List-Unsubscribe
// headers), sends it through the channel plugin running as a real process
// under pluginhost (built from config.yaml as the daemon does) and records
// every outcome (lease-fenced Complete). The figure is N divided by the time
// from the first claim to the last outcome recorded (claimed_ms and done_ms
// of the rows, on the engine's clock, which runs at wall speed).
//
// Every message must arrive exactly once and every row end sent.

// benchMessages is the messages per run: COHORT_BENCH_MESSAGES, default 20,000.
func benchMessages(b *testing.B) int {
	v := os.Getenv("COHORT_BENCH_MESSAGES")
	if v == "" {
		return 20_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("COHORT_BENCH_MESSAGES=%q is not a number of messages; unset it for the default 20000", v)
	}
	return n
}

// smtpConns is the SMTP connections of both the plugin and BareSend;
// dispatchers is the channel's concurrency (config.yaml's default, 4).
const (
	smtpConns   = 4
	dispatchers = 4
)

// BenchmarkCampaignSMTP (a): plugins/smtp to a local sink that accepts and
// discards (smtpsink: go-smtp's server, replying as Postfix does, in one
// write per batch of pipelined commands), one transaction per message of
// about 760 bytes (plain text), over 4 connections; dispatcher concurrency 4 (the default), batches of
// 100. Baseline:
// smtpsink.BareSend, a bare go-smtp client sending the same number of
// ~760-byte messages over the same 4 connections to another sink.
func BenchmarkCampaignSMTP(b *testing.B) {
	n := benchMessages(b)
	for _, dbName := range []string{"sqlite", "postgres"} {
		b.Run(dbName, func(b *testing.B) {
			sink, bare := startSink(b), startSink(b)
			chCfg := fmt.Sprintf("host: %s\nport: %d\ntls: none\nhelo: bench.example.com\nconnections: %d\ntimeout: 30s\nmax_per_connection: 1000000\n",
				sink.Host(), sink.Port(), smtpConns)
			h := newHarness(b, dbName, "github.com/cohortd/cohort/plugins/smtp", chCfg, dispatchers, 100, smtpTemplates)
			sendPair(b, n, h, sinkReceiver(sink), sinkReceiver(bare), func(ctx context.Context, n int) (time.Duration, error) {
				return smtpsink.BareSend(ctx, bare.Addr(), n, smtpConns)
			})
		})
	}
}

func startSink(b *testing.B) *smtpsink.Sink {
	s, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func sinkReceiver(s *smtpsink.Sink) receiver {
	return receiver{accepted: s.Accepted, dups: func() int { return len(s.Duplicates()) }, reset: s.Reset}
}

// sgInFlight is the requests in flight on both sides: the dispatcher's 4
// concurrent Sends with the plugin's parallel 2, and DirectSend's 8.
const (
	sgConcurrency = dispatchers
	sgParallel    = 2
	sgInFlight    = sgConcurrency * sgParallel
)

// BenchmarkCampaignSendGrid (b): plugins/sendgrid to the local SendGrid
// server (sgserver), one request per message with a subject, a text part,
// a ~1.5 KB HTML part, List-Unsubscribe and custom_args, as sgbench.Message
// builds them; 8 requests in flight (dispatcher concurrency 4 x plugin
// parallel 2), batches of 100. Baseline: sgbench.DirectSend, sendgrid-go
// posting the same number of such requests with 8 in flight to another
// server.
func BenchmarkCampaignSendGrid(b *testing.B) {
	n := benchMessages(b)
	for _, dbName := range []string{"sqlite", "postgres"} {
		b.Run(dbName, func(b *testing.B) {
			s, bare := startSG(b), startSG(b)
			chCfg := fmt.Sprintf("api_key: %s\nbase_url: %s\nparallel: %d\n", s.APIKey(), s.URL, sgParallel)
			h := newHarness(b, dbName, "github.com/cohortd/cohort/plugins/sendgrid", chCfg, sgConcurrency, 100, sgTemplates)
			sendPair(b, n, h, sgReceiver(s), sgReceiver(bare), func(ctx context.Context, n int) (time.Duration, error) {
				return sgbench.DirectSend(ctx, bare.URL, bare.APIKey(), n, sgInFlight)
			})
		})
	}
}

func startSG(b *testing.B) *sgserver.Server {
	s, err := sgserver.Start(sgserver.Config{KeysOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func sgReceiver(s *sgserver.Server) receiver {
	return receiver{accepted: func() int { return len(s.CountByKey()) }, dups: func() int { return len(s.Duplicates()) }, reset: s.Reset}
}

// receiver is what a run's checks read off a provider's test server.
type receiver struct {
	accepted func() int // distinct messages accepted
	dups     func() int // keys that arrived more than once
	reset    func()
}

// check verifies that a run delivered n messages, each once, and resets
// the server for the next run.
func (r receiver) check(n int) error {
	if got := r.accepted(); got != n {
		return fmt.Errorf("server accepted %d messages, want %d", got, n)
	}
	if d := r.dups(); d > 0 {
		return fmt.Errorf("%d keys arrived more than once", d)
	}
	r.reset()
	return nil
}

// sendPair runs one database's subject (h, its plugin sending to sub) and
// baseline (bare, sending to base) in turn (see inTurn).
func sendPair(b *testing.B, n int, h *harness, sub, base receiver, bare func(ctx context.Context, n int) (time.Duration, error)) {
	inTurn(b, n, func(n int) time.Duration {
		return h.once(b, n, sub.check)
	}, func(n int) time.Duration {
		self0, _ := cpuTimes()
		d, err := bare(b.Context(), n)
		self1, _ := cpuTimes()
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("baseline: %d messages in %s; CPU per message: %.0f µs in this process (client and server)", n, d, float64((self1-self0).Microseconds())/float64(n))
		if got := base.accepted(); got != n {
			b.Fatalf("server accepted %d messages, want %d", got, n)
		}
		base.reset()
		return d
	})
}

// templates are a campaign's rules files and template files.
type templates struct {
	variant string            // the variant's line in campaigns.yaml
	files   map[string]string // template files under rules/
}

// smtpTemplates: a text-only email whose rendering is about 760 bytes with
// the headers the plugin adds.
var smtpTemplates = templates{
	variant: `{weight: 100, subject: "Your weekly digest, {{.first_name}}", text: templates/digest.txt}`,
	files: map[string]string{"templates/digest.txt": "Hello {{.first_name}},\n\n" +
		strings.Repeat("This is the body of a benchmark message, about as long as a short campaign.\n", 4) +
		"\n{{postal_address}}\nUnsubscribe: {{unsubscribe_url}}\n"},
}

// sgTemplates: subject, text and HTML as sgbench.Message has them.
var sgTemplates = templates{
	variant: `{weight: 100, subject: "Spring offers for {{.first_name}}", text: templates/offers.txt, html: templates/offers.html}`,
	files: map[string]string{
		"templates/offers.txt": "Our spring collection is here. Unsubscribe: {{unsubscribe_url}}\n",
		"templates/offers.html": "<html><body><h1>Spring offers</h1>" +
			strings.Repeat("<p>Our spring collection is here: light jackets, linen shirts and more.</p>", 18) +
			`<p><a href="{{unsubscribe_url}}">Unsubscribe</a></p></body></html>`,
	},
}

// campaignName and channelName name the benchmark's campaign and channel
// instance.
const (
	campaignName = "digest"
	channelName  = "mail"
)

var benchTraits = map[string]sdk.TraitType{
	"email": sdk.TypeString, "first_name": sdk.TypeString, "timezone": sdk.TypeString, "plan": sdk.TypeString,
}

// harness is a database, a running channel plugin and a running engine.
type harness struct {
	db     *storage.DB
	reg    *prometheus.Registry
	now    func() time.Time
	engine *campaign.Engine
	iter   int
	sent   int // messages of every run so far
	// concurrency is the dispatcher's; inSend sums the time its workers
	// spent in the plugin's Send (ns).
	concurrency int
	inSend      atomic.Int64
}

func newHarness(b *testing.B, dbName, pluginPkg, chCfg string, concurrency, batch int, tpl templates) *harness {
	b.Helper()
	ctx := b.Context()
	reg := prometheus.NewRegistry()
	var scfg storage.Config
	if dbName == "postgres" {
		scfg = storagetest.PostgresConfig(b)
	} else {
		scfg = storagetest.SQLiteConfig(b)
	}
	db, err := storage.Open(ctx, scfg)
	if err != nil {
		b.Fatalf("open %s: %v", dbName, err)
	}
	b.Cleanup(func() { db.Close() })

	dir := b.TempDir()
	bin := sdktest.BuildPlugin(b, pluginPkg)
	var cfgYAML strings.Builder
	fmt.Fprintf(&cfgYAML, "storage:\n  driver: sqlite\n  dsn: unused.db\nhttp:\n  listen: 127.0.0.1:0\n  public_url: https://cohort.example.com\n")
	fmt.Fprintf(&cfgYAML, "timezone: UTC\nrules:\n  dir: rules\n")
	fmt.Fprintf(&cfgYAML, "channels:\n  %s:\n    plugin: %s\n    concurrency: %d\n    batch: %d\n    timeout: 30s\n    config:\n", channelName, bin, concurrency, batch)
	for _, l := range strings.Split(strings.TrimRight(chCfg, "\n"), "\n") {
		fmt.Fprintf(&cfgYAML, "      %s\n", l)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	must(b, os.WriteFile(cfgPath, []byte(cfgYAML.String()), 0o644))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		b.Fatal(err)
	}

	// Rules: a segment, the campaign and the email policies.
	rulesDir := filepath.Join(dir, "rules")
	files := map[string][]byte{
		filepath.Join(rulesDir, "segments.yaml"): []byte("version: 1\nsegments:\n  pro:\n    when: plan == \"pro\"\n"),
		filepath.Join(rulesDir, "campaigns.yaml"): fmt.Appendf(nil, `version: 1
campaigns:
  %s:
    segment: pro
    trigger: enter
    channel: %s
    variants:
      a: %s
policies:
  email: {cap: 3/7d, quiet_hours: "22:00-07:00"}
`, campaignName, channelName, tpl.variant),
	}
	for name, body := range tpl.files {
		p := filepath.Join(rulesDir, name)
		must(b, os.MkdirAll(filepath.Dir(p), 0o755))
		must(b, os.WriteFile(p, []byte(body), 0o644))
	}
	set, err := rules.LoadFiles(files, rules.LoadOptions{Schema: rules.Schema{Traits: benchTraits}, Channels: map[string]string{channelName: "email"}})
	if err != nil {
		b.Fatal(err)
	}
	msgs, err := message.Compile(rulesDir, set.Campaigns(), benchTraits)
	if err != nil {
		b.Fatal(err)
	}

	// The plugin, as the daemon runs it.
	log := slog.New(slog.NewTextHandler(&warnLog{b: b}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	host := pluginhost.New(cfg, log, prometheus.NewRegistry(), pluginhost.Options{})
	hostCtx, stopHost := context.WithCancel(context.WithoutCancel(ctx))
	host.Start(hostCtx)
	b.Cleanup(func() { stopHost(); host.Close() })
	for name, err := range host.WaitStarted(ctx) {
		if err != nil {
			b.Fatalf("plugin %s: %v", name, err)
		}
	}

	// The channel, as daemon/campaigns.go builds it.
	in := cfg.Channels.ByName[channelName]
	inst := host.Instance(channelName)
	info := inst.ChannelInfo()
	ch := &campaign.Channel{Name: channelName, Kind: "email", Concurrency: in.Concurrency, Batch: in.Batch, Rate: in.Rate,
		Timeout: in.Timeout, Resend: in.OnUnknown == "resend"}
	if info.MaxBatch > 0 {
		ch.Batch = min(ch.Batch, info.MaxBatch)
	}
	ch.Ready = func() bool { return inst.Status().State == pluginhost.StateRunning }
	ch.NoEvents = inst.NoDeliveryEvents
	h := &harness{db: db, reg: reg}
	ch.Send = func(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
		c, err := host.Channel(channelName)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", campaign.ErrNotSent, err)
		}
		start := time.Now()
		defer func() { h.inSend.Add(int64(time.Since(start))) }()
		return c.Send(ctx, msgs)
	}
	signer, err := unsubscribe.NewSigner([]byte(strings.Repeat("bench-unsubscribe-secret-", 2)), 90*24*time.Hour)
	if err != nil {
		b.Fatal(err)
	}

	// The engine's clock runs at wall speed from 15:00 UTC today, when no
	// recipient (Europe, New York) is in quiet hours.
	y, m, d := time.Now().UTC().Date()
	base, start := time.Date(y, m, d, 15, 0, 0, 0, time.UTC), time.Now()
	now := func() time.Time { return base.Add(time.Since(start)) }
	e := campaign.New(campaign.Options{
		DB: db, Log: log, Registry: reg, Now: now, Location: time.UTC,
		Channels: map[string]*campaign.Channel{channelName: ch},
		Contacts: campaign.Contacts{Email: "email", Timezone: "timezone"},
		Traits:   benchTraits,
		Signer:   signer, Single: dbName == "sqlite",
		Messages: campaign.Messages{From: "Cohort News <news@example.com>", ReplyTo: "help@example.com",
			PostalAddress: "Example Ltd, 1 Example Street, Springfield", PublicURL: cfg.HTTP.PublicURL,
			Consent: campaign.ConsentOptOut},
	})
	e.SetRules(set, msgs)
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- e.Run(runCtx) }()
	// The daemon checkpoints SQLite's write-ahead log every second beside
	// the engine (daemon/boot.go); so does this (a no-op on PostgreSQL).
	ckDone := make(chan struct{})
	go func() { defer close(ckDone); db.CheckpointLoop(runCtx, time.Second, log) }()
	b.Cleanup(func() { <-ckDone })
	b.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				b.Errorf("engine: %v", err)
			}
		case <-time.After(2 * time.Minute):
			b.Errorf("the engine did not stop within 2 minutes")
		}
	})
	h.now, h.engine, h.concurrency = now, e, ch.Concurrency
	return h
}

var benchZones = []string{"Europe/Berlin", "Europe/London", "America/New_York", "Europe/Paris"}

// warmup is the messages of the untimed run before the timed ones, for the
// subject and the baseline alike: a quarter of a run. The first run after
// a start is slower on both sides for reasons a daemon that has been
// running does not have (heaps that start small and are collected often
// until they grow, caches and connections still empty), and a single cold
// run of each swung the ratio by a third from one make bench to the next.
func warmup(n int) int { return max(n/4, 1) }

// sendRounds is how many timed runs the subject and the baseline each have,
// in turn.
const sendRounds = 3

// inTurn runs the subject and the baseline (each sends n messages and
// returns the time the figure counts) once each untimed with warmup(n)
// messages, then sendRounds times each in turn, and reports each row's
// median rate as the sub-benchmarks "subject" and "baseline". Runs in turn
// meet the same conditions, where all of one and then all of the other
// meet whatever the machine did meanwhile; the median keeps one disturbed
// run from moving the figure.
func inTurn(b *testing.B, n int, subject, baseline func(n int) time.Duration) {
	subject(warmup(n))
	baseline(warmup(n))
	var rates [2][]float64
	for range sendRounds {
		for i, run := range []func(int) time.Duration{subject, baseline} {
			rates[i] = append(rates[i], float64(n)/run(n).Seconds())
		}
	}
	for i, name := range []string{"subject", "baseline"} {
		b.Run(name, func(b *testing.B) {
			var s strings.Builder
			for j, r := range rates[i] {
				if j > 0 {
					s.WriteString(", ")
				}
				fmt.Fprintf(&s, "%.0f", r)
			}
			b.Logf("msgs/s of each run, in turn with the other row's: %s", s.String())
			b.ReportMetric(median(rates[i]), "msgs/s")
		})
	}
}

// median of xs (not empty); xs is left as it is.
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// once sends n messages and returns the time from the first claim to the
// last outcome.
func (h *harness) once(b *testing.B, n int, check func(n int) error) time.Duration {
	ctx := b.Context()
	b.StopTimer()
	h.iter++
	iter := h.iter
	h.sent += n
	// n new customers (a cap of 3/7d must not defer a later run's rows).
	cs := make([]sdk.Customer, 0, n)
	for i := range n {
		id := fmt.Sprintf("cus_%d_%07d", iter, i)
		cs = append(cs, sdk.Customer{ID: id, Traits: map[string]sdk.Value{
			"email":      sdk.String(fmt.Sprintf("customer-%d-%d@example.com", iter, i)),
			"first_name": sdk.String(fmt.Sprintf("Name%d", i)),
			"timezone":   sdk.String(benchZones[i%len(benchZones)]),
			"plan":       sdk.String("pro"),
		}})
	}
	rows, err := ingest.Customers(cs)
	must(b, err)
	occ := fmt.Sprintf("bench:%d", iter)
	created := time.Now()
	out := make([]storage.OutboxRow, 0, n)
	keys := make([]string, 0, n)
	for _, c := range cs {
		k := campaign.Key(campaignName, occ, c.ID, channelName)
		keys = append(keys, k)
		out = append(out, storage.OutboxRow{Key: k, Campaign: campaignName, Occurrence: occ, CustomerID: c.ID,
			Channel: channelName, Kind: "email", Arm: "a", Created: created})
	}
	must(b, h.db.Tx(ctx, func(tx *storage.Tx) error { return tx.UpsertCustomers(rows) }))
	// All rows appear at once: the dispatchers see none before the commit.
	must(b, h.db.WriteTx(ctx, func(tx *storage.Tx) error { _, err := tx.Enqueue(out); return err }))
	h.inSend.Store(0)
	committed := h.now()
	self0, plug0 := cpuTimes()
	b.StartTimer()
	h.engine.Kick()
	kicked := time.Now()
	h.wait(b, h.sent)
	wall := time.Since(kicked)
	b.StopTimer()
	self1, plug1 := cpuTimes()

	span, states := h.span(b, keys, committed)
	if states[storage.OutboxSent] != n {
		b.Fatalf("rows by state %v, want all %d sent", states, n)
	}
	if err := check(n); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d messages: first claim to last outcome %s (%.0f msgs/s); Kick to all terminal %s; "+
		"the %d dispatcher workers were in the plugin's Send %.0f%% of the time (the rest: claims and outcomes in the database); "+
		"CPU per message: %.0f µs in this process (engine, database client or SQLite, provider server), %.0f µs in the plugin process",
		n, span, float64(n)/span.Seconds(), wall.Round(time.Millisecond),
		h.concurrency, 100*time.Duration(h.inSend.Load()).Seconds()/(float64(h.concurrency)*span.Seconds()),
		float64((self1-self0).Microseconds())/float64(n), float64((plug1-plug0).Microseconds())/float64(n))
	b.StartTimer()
	return span
}

// wait waits until want rows have a terminal outcome, watching the
// engine's messages_total counter every 10 ms (in memory: polling the
// outbox would take CPU from the engine; gathering the registry is not free
// either, and its CPU counts as this process's, so not more often: the
// figure itself comes from the rows' claim and outcome times, not from when
// this notices), then checks the outbox itself. The deadline is generous: 2
// minutes plus 1 ms per message.
func (h *harness) wait(b *testing.B, want int) {
	deadline := time.Now().Add(2*time.Minute + time.Duration(want)*time.Millisecond)
	for h.terminal(b) < want {
		if time.Now().After(deadline) {
			counts, err := h.db.OutboxCounts(b.Context(), campaignName)
			b.Fatalf("rows by state %v (%v) after the deadline, want %d terminal", counts, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	counts, err := h.db.OutboxCounts(b.Context(), campaignName)
	must(b, err)
	if counts[storage.OutboxPending] != 0 || counts[storage.OutboxSending] != 0 {
		b.Fatalf("rows by state %v, want none pending or sending", counts)
	}
}

// terminal sums the engine's messages_total over terminal outcomes.
func (h *harness) terminal(b *testing.B) int {
	mfs, err := h.reg.Gather()
	must(b, err)
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "cohort_campaign_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					switch l.GetValue() {
					case storage.OutboxSent, storage.OutboxFailed, storage.OutboxSkipped, storage.OutboxUnknown:
						n += m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return int(n)
}

// span is the time from the first claim to the last outcome of the rows,
// and their count per state. A claim's claimed_ms is the time its
// dispatcher read the clock, before it waited for the write lock (on
// SQLite, held by the Enqueue), so the first claim counts from the
// Enqueue's commit at the earliest.
func (h *harness) span(b *testing.B, keys []string, committed time.Time) (time.Duration, map[string]int) {
	var first, last time.Time
	states := map[string]int{}
	for lo := 0; lo < len(keys); lo += 5000 {
		rows, err := h.db.OutboxByKeys(b.Context(), keys[lo:min(lo+5000, len(keys))])
		must(b, err)
		for _, r := range rows {
			states[r.State]++
			if first.IsZero() || r.Claimed.Before(first) {
				first = r.Claimed
			}
			if r.Done.After(last) {
				last = r.Done
			}
		}
	}
	if first.Before(committed) {
		first = committed
	}
	return last.Sub(first), states
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// warnLog sends warnings and errors of the engine and the plugin host to
// the benchmark's log.
type warnLog struct{ b *testing.B }

func (w *warnLog) Write(p []byte) (int, error) {
	w.b.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// cpuTimes is the CPU time used so far by this process and by its child
// processes (the plugin), read from /proc (zero where it cannot be read).
func cpuTimes() (self, children time.Duration) {
	return sdktest.SelfCPU(), sdktest.ChildCPU()
}
