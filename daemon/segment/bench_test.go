package segment_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortd/cohort/daemon/profile"
	"github.com/cohortd/cohort/daemon/profile/profiletest"
	"github.com/cohortd/cohort/daemon/segment"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

// BenchmarkFullPass is issue 4's budget "a full pass of 10 rules over 1M
// in-memory profiles with 1% of customers entering or leaving in total,
// persisted to SQLite, in at most 0.3 s".
//
// N synthetic customers (COHORT_BENCH_CUSTOMERS, default 1,000,000; 14
// traits, 20 events each over the last year across 3 event names) are loaded
// into a profile.Store through Apply batches. Ten segments of every kind are
// compiled with rules.LoadFiles. A segmenter on SQLite is primed with one full
// pass (every membership inserted, untimed); then 1% of the customers get one
// trait changed so that each flips exactly one segment (N/100 entries and
// exits in total), and one FullPass(ctx, nil) is timed: evaluation of the 10
// rules, diffing, and the diff persisted in one transaction.
//
//   - subject: that pass. Besides "s" it reports where the time went
//     (eval-s: inside Profiles.Read, i.e. the 10 rules; persist-s: inside
//     Store.Tx, i.e. the SQLite transaction, which runs concurrently with
//     the evaluation: the segmenter writes each segment's diff while it
//     evaluates the next, so eval-s and persist-s overlap and "s" is about
//     the larger of the two), cpu-s (the CPU time the process spent during
//     the pass, both goroutines: less moved by other work on the machine
//     than s), the number of changes it persisted, and rfm-s,
//     the ComputeRFM the daemon runs before a full pass whose rules read
//     rfm.* (one of the ten does; not included in s). Before each pass the
//     SQLite log is checkpointed, untimed, as the daemon's background
//     checkpointer (storage.DB.CheckpointLoop) does every second.
//   - baseline: the same pass's evaluation only (rules.Set.EvalAll over
//     store.View, after the same kind of mutation, so rule bindings are
//     rebuilt as in the subject), without diffing or persistence. The ratio
//     is then the cost of turning an evaluation into persisted diffs;
//     compiled rules against hand-written predicates is BenchmarkRuleEval's
//     job (daemon/profile).
//
// The timed pass runs under the pprof label bench=fullpass, so
//
//	go test -run '^$' -bench FullPass -benchtime 1x -cpuprofile cpu.out ./daemon/segment/
//	go tool pprof -tagfocus=bench=fullpass -top cpu.out
//
// shows the timed pass alone, without data generation and priming.
func BenchmarkFullPass(b *testing.B) {
	n := fullPassCustomers(b)
	ctx := context.Background()
	d := loadFullPassData(b, n)
	// Opened here, not in the subject: a sub-benchmark's cleanups run after
	// each of its runs, and the primed membership must outlive them.
	d.db = storagetest.OpenSQLite(b)
	target := max(1, n/100)

	b.Run("subject", func(b *testing.B) {
		// Priming (a new database, every membership inserted) happens once,
		// not again when the harness calls this with a larger b.N.
		if d.seg == nil {
			d.prime(b, ctx)
		}
		var times []time.Duration
		var last fullPassTiming
		changes, rfm := 0, time.Duration(0)
		var cpu []time.Duration
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			flipped := d.mutate(b, target)
			start := time.Now()
			if err := d.store.ComputeRFM(); err != nil {
				b.Fatal(err)
			}
			rfm = time.Since(start)
			// The daemon checkpoints the SQLite log in the background
			// every second (storage.DB.CheckpointLoop), so the previous
			// pass's writes are not in the log when the next one starts.
			if _, err := d.db.Checkpoint(ctx); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			d.timer.reset()
			b.StartTimer()

			var res *segment.Result
			var err error
			c0 := sdktest.SelfCPU()
			start = time.Now()
			pprof.Do(ctx, pprof.Labels("bench", "fullpass"), func(ctx context.Context) {
				res, err = d.seg.FullPass(ctx, nil)
			})
			elapsed := time.Since(start)
			cpu = append(cpu, sdktest.SelfCPU()-c0)

			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			times = append(times, elapsed)
			last = d.timer.snapshot()
			changes = 0
			for _, diff := range res.Segments {
				changes += len(diff.Entered) + len(diff.Exited)
			}
			if changes != flipped {
				b.Errorf("the pass persisted %d changes for %d customers each flipped out of or into exactly one segment", changes, flipped)
			}
			b.StartTimer()
		}
		b.StopTimer()
		b.ReportMetric(median(times).Seconds(), "s")
		b.ReportMetric(median(cpu).Seconds(), "cpu-s")
		b.ReportMetric(last.eval.Seconds(), "eval-s")
		b.ReportMetric(last.persist.Seconds(), "persist-s")
		b.ReportMetric(float64(changes), "changes")
		b.ReportMetric(rfm.Seconds(), "rfm-s")
	})

	b.Run("baseline", func(b *testing.B) {
		var times []time.Duration
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			d.mutate(b, target) // new generation: bindings are rebuilt, as in the subject
			runtime.GC()
			b.StartTimer()
			start := time.Now()
			err := d.store.View(func(t rules.Table) error {
				_, err := d.set.EvalAll(t, fullPassNow)
				return err
			})
			elapsed := time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			times = append(times, elapsed)
		}
		b.StopTimer()
		b.ReportMetric(median(times).Seconds(), "s")
	})
}

// fullPassCustomers reads COHORT_BENCH_CUSTOMERS (default 1,000,000).
func fullPassCustomers(b *testing.B) int {
	v := os.Getenv("COHORT_BENCH_CUSTOMERS")
	if v == "" {
		return 1_000_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 100 {
		b.Skipf("COHORT_BENCH_CUSTOMERS=%q is not a number of customers of at least 100 (1%% of them must flip); unset it for the default 1000000", v)
	}
	return n
}

var fullPassNow = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

var fullPassSchema = rules.Schema{
	Traits: map[string]sdk.TraitType{
		"age": sdk.TypeNumber, "lifetime_value": sdk.TypeNumber, "orders": sdk.TypeNumber,
		"sessions": sdk.TypeNumber, "score": sdk.TypeNumber,
		"country": sdk.TypeString, "city": sdk.TypeString, "gender": sdk.TypeString,
		"plan": sdk.TypeString, "device": sdk.TypeString, "app_version": sdk.TypeString,
		"signed_up_at": sdk.TypeTime, "vip": sdk.TypeBool, "interests": sdk.TypeStringList,
	},
	Events:   []string{"purchase", "page_view", "email_open"},
	RFMEvent: "purchase",
}

// fullPassRules are ten segments of every kind. The traits the benchmark
// changes (gender, country, device, plan, interests, vip) are each read by
// one rule only, and no rule reads vip_buyers with in_segment, so a change
// flips exactly one segment.
const fullPassRules = `version: 1
refresh: "0 3 * * *"
segments:
  young_women:            # demographic
    when: age >= 25 && age <= 34 && gender == "female"
  dach:                   # geographic
    when: country in ["DE", "AT", "CH"] && city != "Berlin"
  modern_mobile:          # technographic
    when: device in ["ios", "android"] && app_version >= "5.0"
  outdoor_runners:        # interests (list)
    when: '"running" in interests && ("outdoor" in interests || "travel" in interests)'
  frequent_buyers:        # events() window
    when: events("purchase", "90d") >= 2
  high_value:             # total() and events()
    when: total("purchase", "365d") > 200 && events("page_view", "30d") >= 1
  lapsed_buyers:          # days_since(last_time())
    when: ever("purchase") && days_since(last_time("purchase")) > 90
  new_free:               # lifecycle on a time trait
    when: days_since(signed_up_at) <= 30 && plan == "free"
  champions:              # rfm
    when: rfm.r >= 4 && rfm.f >= 4 && rfm.m >= 4
  vip_buyers:             # in_segment
    when: in_segment("high_value") && vip && lifetime_value > 500
`

// fullPassProfiles adapts the profile store to segment.Profiles, timing
// Read (the evaluation of a pass).
type fullPassProfiles struct {
	s *profile.Store
	t *fullPassTimer
}

var _ segment.Profiles = fullPassProfiles{}

func (p fullPassProfiles) Read(fn func(rules.Table) error) error {
	start := time.Now()
	defer func() { p.t.eval += time.Since(start) }()
	return p.s.View(fn)
}
func (p fullPassProfiles) Row(id string) (uint32, bool) { return p.s.Row(id) }
func (p fullPassProfiles) ID(row uint32) string         { return p.s.ID(row) }

// fullPassStore is storage, timing Tx (the persistence of a pass).
type fullPassStore struct {
	*storage.DB
	t *fullPassTimer
}

var _ segment.Store = fullPassStore{}

func (s fullPassStore) Tx(ctx context.Context, fn func(*storage.Tx) error) error {
	start := time.Now()
	defer func() { s.t.persist += time.Since(start) }()
	return s.DB.Tx(ctx, fn)
}

// fullPassTimer accumulates time spent in Read and Tx. They overlap, but
// each is called by one goroutine at a time; the pass's end orders them
// before snapshot.
type fullPassTimer struct{ eval, persist time.Duration }

func (t *fullPassTimer) reset() { *t = fullPassTimer{} }

type fullPassTiming struct{ eval, persist time.Duration }

func (t *fullPassTimer) snapshot() fullPassTiming {
	return fullPassTiming{eval: t.eval, persist: t.persist}
}

type fullPassData struct {
	n     int
	store *profile.Store
	set   *rules.Set
	timer *fullPassTimer
	db    *storage.DB
	seg   *segment.Segmenter
	// perm is the order in which customers are considered for a change.
	perm []int
}

// loadFullPassData generates the customers into a profile store through
// Apply batches, computes RFM, and compiles the rules.
func loadFullPassData(b *testing.B, n int) *fullPassData {
	b.Helper()
	start := time.Now()
	today := rules.Day(fullPassNow)
	store := profile.New(fullPassSchema)
	r := rand.New(rand.NewPCG(4, 4))
	var (
		batch   profile.Batch
		rollups []storage.Rollup
	)
	flush := func() {
		if err := store.Apply(batch); err != nil {
			b.Fatal(err)
		}
		batch.Customers, batch.Rollups = batch.Customers[:0], batch.Rollups[:0]
	}
	for i := range n {
		id := "cus_" + strconv.Itoa(i)
		batch.Customers = append(batch.Customers, sdk.Customer{ID: id, Traits: profiletest.Traits(r, today)})
		rollups = profiletest.Rollups(r, id, today, rollups[:0])
		for _, x := range rollups {
			batch.Rollups = append(batch.Rollups, profile.Rollup(x))
		}
		if len(batch.Customers) == 4096 {
			flush()
		}
	}
	flush()
	store.Compact()
	if err := store.ComputeRFM(); err != nil {
		b.Fatal(err)
	}
	set, err := rules.LoadFiles(map[string][]byte{"bench.yaml": []byte(fullPassRules)}, rules.LoadOptions{Schema: fullPassSchema})
	if err != nil {
		b.Fatal(err)
	}
	if len(set.Segments()) != 10 {
		b.Fatalf("%d segments, want 10", len(set.Segments()))
	}
	b.Logf("%d customers generated and loaded in %s", n, time.Since(start).Round(time.Millisecond))
	return &fullPassData{n: n, store: store, set: set, timer: &fullPassTimer{},
		perm: rand.New(rand.NewPCG(5, 5)).Perm(n)}
}

// prime makes the segmenter on the empty database and runs the first full
// pass (every membership inserted).
func (d *fullPassData) prime(b *testing.B, ctx context.Context) {
	b.Helper()
	d.seg = segment.New(fullPassStore{DB: d.db, t: d.timer}, fullPassProfiles{s: d.store, t: d.timer}, d.set,
		slog.New(slog.DiscardHandler), prometheus.NewRegistry(), func() time.Time { return fullPassNow })
	if err := d.seg.Load(ctx); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	res, err := d.seg.FullPass(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	total := 0
	sizes := ""
	for _, seg := range d.set.Segments() {
		diff := res.Segments[seg.Name]
		total += len(diff.Entered)
		sizes += fmt.Sprintf(" %s=%d", seg.Name, diff.Size)
	}
	b.Logf("primed: %d memberships inserted in %s;%s", total, time.Since(start).Round(time.Millisecond), sizes)
}

// mutate changes one trait of `target` customers so that each flips exactly
// one segment (entering or leaving it), about evenly over six segments, and
// returns how many it changed. Calling it again on the same data flips the
// same customers back.
func (d *fullPassData) mutate(b *testing.B, target int) int {
	b.Helper()
	type change struct {
		row   uint32
		trait string
		value sdk.Value
	}
	var changes []change
	err := d.store.View(func(t rules.Table) error {
		env := rules.Env{Now: fullPassNow}
		highValue, err := d.set.Segment("high_value").EvalAll(t, env)
		if err != nil {
			return err
		}
		runners, err := d.set.Segment("outdoor_runners").EvalAll(t, env)
		if err != nil {
			return err
		}
		today := int32(rules.Day(fullPassNow))
		age, _ := t.Number("age")
		ltv, _ := t.Number("lifetime_value")
		gender, _ := t.String("gender")
		country, _ := t.String("country")
		city, _ := t.String("city")
		device, _ := t.String("device")
		app, _ := t.String("app_version")
		plan, _ := t.String("plan")
		signedUp, _ := t.Time("signed_up_at")
		vip, _ := t.Bool("vip")
		str := func(c rules.StringColumn, r int) string { return c.Dict[c.Codes[r]] }
		// Each kind tests whether a change of its trait flips its segment
		// for row r, and returns that change.
		kinds := []func(r int) (string, sdk.Value, bool){
			func(r int) (string, sdk.Value, bool) { // young_women
				if !age.Present.Has(uint32(r)) || age.Values[r] < 25 || age.Values[r] > 34 {
					return "", sdk.Value{}, false
				}
				if str(gender, r) == "female" {
					return "gender", sdk.String("male"), true
				}
				return "gender", sdk.String("female"), true
			},
			func(r int) (string, sdk.Value, bool) { // dach
				if c := str(city, r); c == "" || c == "Berlin" {
					return "", sdk.Value{}, false
				}
				switch str(country, r) {
				case "DE", "AT", "CH":
					return "country", sdk.String("FR"), true
				}
				return "country", sdk.String("DE"), true
			},
			func(r int) (string, sdk.Value, bool) { // modern_mobile
				if v := str(app, r); v == "" || v < "5.0" {
					return "", sdk.Value{}, false
				}
				switch str(device, r) {
				case "ios", "android":
					return "device", sdk.String("web"), true
				}
				return "device", sdk.String("ios"), true
			},
			func(r int) (string, sdk.Value, bool) { // outdoor_runners
				if runners.Has(uint32(r)) {
					return "interests", sdk.List("books"), true
				}
				return "interests", sdk.List("running", "outdoor"), true
			},
			func(r int) (string, sdk.Value, bool) { // new_free
				if !signedUp.Present.Has(uint32(r)) || today-signedUp.Days[r] > 30 {
					return "", sdk.Value{}, false
				}
				if str(plan, r) == "free" {
					return "plan", sdk.String("pro"), true
				}
				return "plan", sdk.String("free"), true
			},
			func(r int) (string, sdk.Value, bool) { // vip_buyers
				if !highValue.Has(uint32(r)) || !ltv.Present.Has(uint32(r)) || ltv.Values[r] <= 500 {
					return "", sdk.Value{}, false
				}
				return "vip", sdk.Bool(!(vip.Present.Has(uint32(r)) && vip.Values.Has(uint32(r)))), true
			},
		}
		k := 0
		for _, r := range d.perm {
			if len(changes) == target {
				break
			}
			for try := range len(kinds) {
				kind := (k + try) % len(kinds)
				if trait, v, ok := kinds[kind](r); ok {
					changes = append(changes, change{uint32(r), trait, v})
					k = kind + 1
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if len(changes) < target {
		b.Fatalf("only %d of %d customers could be flipped", len(changes), target)
	}
	batch := profile.Batch{Customers: make([]sdk.Customer, len(changes))}
	for i, c := range changes {
		batch.Customers[i] = sdk.Customer{ID: d.store.ID(c.row), Traits: map[string]sdk.Value{c.trait: c.value}}
	}
	if err := d.store.Apply(batch); err != nil {
		b.Fatal(err)
	}
	return len(changes)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
