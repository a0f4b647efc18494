package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// Changes is what one committed batch changed, handed to observers (the
// in-memory profiles and the segmenter's incremental re-evaluation).
type Changes struct {
	Source    string
	Customers []sdk.Customer // upserts, validated against the schema
	Deletes   []string
	Events    []storage.Event // new events only (replays removed)
	Consents  []storage.Consent
	// CaughtUp is set when the batch ended the source's backlog.
	CaughtUp bool
}

// Observer is told about every committed batch, after the commit.
type Observer interface {
	Committed(ctx context.Context, ch *Changes)
}

// Store is what ingestion needs of storage.
type Store interface {
	Tx(ctx context.Context, fn func(*storage.Tx) error) error
	Cursor(ctx context.Context, source string) (string, bool, error)
}

var _ Store = (*storage.DB)(nil)

// Options tune ingestion.
type Options struct {
	// Now is the clock (tests inject one).
	Now func() time.Time
	// Repoll is how long to wait before pulling again from a finite source
	// whose stream ended (default 1m).
	Repoll time.Duration
	// MaxFuture is how far ahead of now an event may be (default 24h); events
	// before 2000-01-01 or beyond it are rejected as absurd.
	MaxFuture time.Duration
}

// Ingester turns source batches into stored profiles.
type Ingester struct {
	store     Store
	log       *slog.Logger
	opts      Options
	observers []Observer
	m         *metrics

	mu       sync.Mutex
	caughtUp map[string]bool
	progress map[string]*progress
}

// progress tracks a source's backlog import until it first catches up.
type progress struct {
	start, last         time.Time
	customers, events   int
	lastCust, lastEvent int
}

// New returns an ingester writing to store.
func New(store Store, log *slog.Logger, reg prometheus.Registerer, opts Options, observers ...Observer) *Ingester {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Repoll == 0 {
		opts.Repoll = time.Minute
	}
	if opts.MaxFuture == 0 {
		opts.MaxFuture = 24 * time.Hour
	}
	return &Ingester{store: store, log: log.With("component", "ingest"), opts: opts, observers: observers,
		m: newMetrics(reg), caughtUp: map[string]bool{}, progress: map[string]*progress{}}
}

// CaughtUp reports whether the source has drained its backlog since start.
func (g *Ingester) CaughtUp(source string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.caughtUp[source]
}

// Run pulls from a source until ctx is done, resuming from the last
// committed cursor after every error or restart, with backoff.
func (g *Ingester) Run(ctx context.Context, source string, src sdk.Source, info sdk.SourceInfo) {
	log := g.log.With("source", source)
	v := NewValidator(source, info, g.opts.Now, g.opts.MaxFuture)
	attempt := 0
	for ctx.Err() == nil {
		cursor, _, err := g.store.Cursor(ctx, source)
		if err == nil {
			err = g.pull(ctx, v, src, cursor, func() { attempt = 0 })
		}
		if ctx.Err() != nil {
			return
		}
		wait := g.opts.Repoll
		if err != nil {
			attempt++
			wait = min(time.Duration(1<<min(attempt, 6))*250*time.Millisecond, 30*time.Second)
			wait = wait/2 + time.Duration(rand.Int64N(int64(wait/2)+1))
			log.Error("pull failed; resuming from the last committed cursor", "err", err, "in", wait.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Pipeline bounds: batches prepared ahead of the writer, and how much one
// transaction may take of what is waiting.
const (
	pipelineDepth = 4
	groupBatches  = 8
	groupRows     = 8192
)

// Pull streams src from cursor into storage until the stream ends, then
// returns once everything received is committed. It reads batches in flat
// form (sdk.PullFlat): while one goroutine validates and encodes a batch,
// another writes the ones before it, and batches already waiting when a
// write begins are committed together in one transaction, with the last
// cursor among them. A restart thus resumes after the last committed batch,
// as when batches are committed one by one. The first error ends the pull.
func (g *Ingester) Pull(ctx context.Context, v *Validator, src sdk.Source, cursor string) error {
	return g.pull(ctx, v, src, cursor, nil)
}

// pull is Pull; committed, if not nil, is called after each commit, on
// another goroutine but before pull returns.
func (g *Ingester) pull(ctx context.Context, v *Validator, src sdk.Source, cursor string, committed func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	queue := make(chan *prepared, pipelineDepth)
	werr := make(chan error, 1)
	go func() {
		err := g.write(ctx, v.source, queue, committed)
		if err != nil {
			cancel() // stops the pull below
		}
		werr <- err
	}()
	stream := newFlatStream(v)
	maps := len(g.observers) > 0
	err := sdk.PullFlat(ctx, src, cursor, func(b *sdk.FlatBatch) error {
		g.logPluginProblems(v.source, b.Problems)
		p, problems := stream.prepare(b, maps)
		g.logProblems(v.source, problems)
		select {
		case queue <- p:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(queue)
	if wErr := <-werr; wErr != nil {
		return wErr
	}
	return err
}

// write commits what arrives on queue until it is closed, taking together
// the batches waiting when a commit starts. After an error it returns at
// once; the caller stops feeding the queue.
func (g *Ingester) write(ctx context.Context, source string, queue <-chan *prepared, committed func()) error {
	var group []*prepared
	for p := range queue {
		group = append(group[:0], p)
		rows := len(p.rows)
	more:
		for len(group) < groupBatches && rows < groupRows {
			select {
			case q, ok := <-queue:
				if !ok {
					break more
				}
				group = append(group, q)
				rows += len(q.rows)
			default:
				break more
			}
		}
		if err := g.commit(ctx, source, group); err != nil {
			return err
		}
		if committed != nil {
			committed()
		}
	}
	return nil
}

// Commit validates a batch and commits it with its cursor in one
// transaction, then tells the observers. Bad records are counted, logged with
// the customer id and field, and skipped; the rest of the batch is kept.
func (g *Ingester) Commit(ctx context.Context, v *Validator, b *sdk.Batch) error {
	g.logPluginProblems(v.source, b.Problems)
	p, problems, err := prepareBatch(v, b)
	if err != nil {
		return err
	}
	g.logProblems(v.source, problems)
	return g.commit(ctx, v.source, []*prepared{p})
}

func (g *Ingester) logPluginProblems(source string, ps []sdk.Problem) {
	for _, p := range ps {
		g.m.problems.WithLabelValues(source, "plugin").Inc()
		g.log.Warn("source skipped a record", "source", source, "customer", p.CustomerID, "field", p.Field, "line", p.Line, "column", p.Column, "problem", p.Message)
	}
}

func (g *Ingester) logProblems(source string, ps []Problem) {
	for _, p := range ps {
		g.m.problems.WithLabelValues(source, p.Kind).Inc()
		g.log.Warn("skipped bad input", "source", source, "customer", p.CustomerID, "field", p.Field, "problem", p.Message)
	}
}

// commit writes prepared batches of a source, in order, in one transaction
// with the last cursor among them, then tells the observers about each.
func (g *Ingester) commit(ctx context.Context, source string, group []*prepared) error {
	err := g.store.Tx(ctx, func(tx *storage.Tx) error {
		var last *prepared
		for _, p := range group {
			ch := p.ch
			if err := tx.UpsertCustomers(p.rows); err != nil {
				return err
			}
			if err := tx.DeleteCustomers(ch.Deletes); err != nil {
				return err
			}
			fresh, err := tx.InsertEvents(ch.Events)
			if err != nil {
				return err
			}
			ch.Events = fresh
			if ids := customerIDs(fresh); len(ids) > 0 {
				if err := tx.EnsureCustomers(ids); err != nil {
					return err
				}
			}
			if err := tx.AddRollups(Rollups(fresh)); err != nil {
				return err
			}
			if err := tx.InsertConsents(ch.Consents); err != nil {
				return err
			}
			// An empty cursor means "no new position": keep the stored one.
			if p.cursor != "" {
				last = p
			}
		}
		if last != nil {
			return tx.SetCursor(source, last.cursor, last.ch.CaughtUp)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit batch from %q: %w", source, err)
	}
	for _, p := range group {
		ch := p.ch
		g.m.customers.WithLabelValues(source).Add(float64(len(p.rows)))
		g.m.events.WithLabelValues(source, "new").Add(float64(len(ch.Events)))
		g.m.batches.WithLabelValues(source).Inc()
		g.reportProgress(source, len(p.rows), len(ch.Events), ch.CaughtUp)
		for _, o := range g.observers {
			o.Committed(ctx, ch)
		}
	}
	return nil
}

// reportProgress logs a source's first import: a progress line every 5 s
// while the backlog drains (customers, events, rate), then a summary when it
// is caught up. Live changes after that are not reported here.
func (g *Ingester) reportProgress(source string, customers, events int, caughtUp bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.caughtUp[source] {
		return
	}
	now := g.opts.Now()
	p := g.progress[source]
	if p == nil {
		p = &progress{start: now, last: now}
		g.progress[source] = p
	}
	p.customers += customers
	p.events += events
	if caughtUp {
		g.caughtUp[source] = true
		took := now.Sub(p.start)
		g.log.Info("source caught up", "source", source, "customers", p.customers, "events", p.events,
			"took", took.Round(time.Millisecond), "per_second", perSecond(p.customers+p.events, took))
		return
	}
	if now.Sub(p.last) >= 5*time.Second {
		g.log.Info("importing", "source", source, "customers", p.customers, "events", p.events,
			"per_second", perSecond(p.customers+p.events-p.lastCust-p.lastEvent, now.Sub(p.last)))
		p.last, p.lastCust, p.lastEvent = now, p.customers, p.events
	}
}

func perSecond(n int, d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int(float64(n) / d.Seconds())
}

func customerIDs(evs []storage.Event) []string {
	seen := map[string]bool{}
	var ids []string
	for _, e := range evs {
		if !seen[e.CustomerID] {
			seen[e.CustomerID] = true
			ids = append(ids, e.CustomerID)
		}
	}
	return ids
}

// Rollups aggregates events into per customer, name and UTC day deltas.
func Rollups(evs []storage.Event) []storage.Rollup {
	type key struct {
		customer, name string
		day            int32
	}
	idx := map[key]int{}
	var out []storage.Rollup
	for _, e := range evs {
		k := key{e.CustomerID, e.Name, Day(e.Time)}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, storage.Rollup{CustomerID: e.CustomerID, Name: e.Name, Day: k.day, First: e.Time, Last: e.Time})
		}
		r := &out[i]
		r.Count++
		if e.HasValue {
			r.Sum += e.Value
		}
		if e.Time.Before(r.First) {
			r.First = e.Time
		}
		if e.Time.After(r.Last) {
			r.Last = e.Time
		}
	}
	return out
}

// Day is t's UTC calendar day as days since 1970-01-01.
func Day(t time.Time) int32 {
	return int32(t.UTC().Unix() / 86400)
}

type metrics struct {
	customers *prometheus.CounterVec
	events    *prometheus.CounterVec
	batches   *prometheus.CounterVec
	problems  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		customers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "ingest", Name: "customers_total", Help: "Customer upserts committed, by source."}, []string{"source"}),
		events:    prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "ingest", Name: "events_total", Help: "Events committed (new; replays are not counted), by source."}, []string{"source", "result"}),
		batches:   prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "ingest", Name: "batches_total", Help: "Batches committed with their cursor, by source."}, []string{"source"}),
		problems:  prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "ingest", Name: "problems_total", Help: "Records or fields skipped as bad input, by source and kind."}, []string{"source", "kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.customers, m.events, m.batches, m.problems)
	}
	return m
}
