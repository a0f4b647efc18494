// Package segment keeps every segment's membership current: full passes on
// cron schedules and at start, incremental re-evaluation of the customers
// ingestion changed, membership diffs (entered, exited, when, numbered) and
// size history persisted, size bounds recorded so campaigns can hold, and
// swing alerts.
package segment

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/storage"
)

// Profiles is what the segmenter needs of the in-memory profile store.
type Profiles interface {
	// Read runs fn with a consistent view of the table (under the store's
	// read lock); fn must not keep the table.
	Read(fn func(t rules.Table) error) error
	// Row returns a customer's row, if the customer exists.
	Row(id string) (uint32, bool)
	// ID returns the customer id of a row.
	ID(row uint32) string
}

// Store is what the segmenter needs of storage.
type Store interface {
	Tx(ctx context.Context, fn func(*storage.Tx) error) error
	EachSegmentMember(ctx context.Context, segment string, fn func(segment, customerID string) error) error
}

var _ Store = (*storage.DB)(nil)

// Result summarises one pass.
type Result struct {
	Pass      int64
	Kind      string
	Evaluated int
	Segments  map[string]Diff
}

// Diff is one segment's change in a pass.
type Diff struct {
	Entered, Exited []string
	Size            int
	Held            string
}

// Segmenter owns the current membership of every segment.
type Segmenter struct {
	store    Store
	profiles Profiles
	log      *slog.Logger
	now      func() time.Time
	m        *metrics

	mu      sync.Mutex // serialises passes
	set     *rules.Set
	members map[string]rules.Bitmap
	// ghosts are stored members with no profile row (deleted customers):
	// they exit at the next pass that evaluates their segment.
	ghosts map[string][]string
	sizes  map[string]int
	// fullSizes are sizes after the last full pass (alert_swing compares
	// full passes); held is the current hold reason per segment.
	fullSizes map[string]int
	held      map[string]string
	// win is the open window of incremental passes, nil if none.
	win *window
}

// New returns a segmenter; call Load before the first pass.
func New(store Store, profiles Profiles, set *rules.Set, log *slog.Logger, reg prometheus.Registerer, now func() time.Time) *Segmenter {
	if now == nil {
		now = time.Now
	}
	return &Segmenter{
		store: store, profiles: profiles, set: set, now: now,
		log: log.With("component", "segment"), m: newMetrics(reg),
		members: map[string]rules.Bitmap{}, ghosts: map[string][]string{}, sizes: map[string]int{},
		fullSizes: map[string]int{}, held: map[string]string{},
	}
}

// Load reads the stored membership (what the last run persisted), so the
// first pass after a restart reports only real changes.
func (s *Segmenter) Load(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.store.EachSegmentMember(ctx, "", func(seg, id string) error {
		row, ok := s.profiles.Row(id)
		if !ok {
			s.ghosts[seg] = append(s.ghosts[seg], id)
			return nil
		}
		b := s.members[seg]
		need := int(row>>6) + 1
		if len(b) < need {
			b = append(b, make(rules.Bitmap, need-len(b))...)
		}
		b[row>>6] |= 1 << (row & 63)
		s.members[seg] = b
		return nil
	})
	if err != nil {
		return fmt.Errorf("load segment membership: %w", err)
	}
	for seg, b := range s.members {
		s.sizes[seg] = popcount(b) + len(s.ghosts[seg])
	}
	return nil
}

// SetRules swaps the rule set (hot reload). Segments no longer defined keep
// their stored membership until they come back or are cleaned up.
func (s *Segmenter) SetRules(set *rules.Set) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set = set
}

// Rules returns the current rule set.
func (s *Segmenter) Rules() *rules.Set {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set
}

// Members returns a copy of a segment's current membership bitmap.
func (s *Segmenter) Members(segment string) rules.Bitmap {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(rules.Bitmap(nil), s.members[segment]...)
}

// Size returns a segment's current size.
func (s *Segmenter) Size(segment string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sizes[segment]
}

// Held returns why campaigns on a segment are held after the latest pass
// (its size outside min_size/max_size), or "" when they are not.
func (s *Segmenter) Held(segment string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[segment]
}

// FullPass re-evaluates the named segments (all when names is empty) over
// every customer, persists the diffs and sizes in one transaction, and only
// then makes the new membership current.
//
// Evaluation and persistence overlap: a writer goroutine opens the
// transaction and writes each segment's diff while the next segments are
// evaluated, so on two cores the pass takes about as long as the longer of
// the two rather than their sum.
func (s *Segmenter) FullPass(ctx context.Context, names []string) (*Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	now := s.now()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var segs []*rules.Segment
	for _, seg := range s.set.Segments() {
		if len(want) == 0 || want[seg.Name] {
			segs = append(segs, seg)
		}
	}

	// The evaluator sends each segment's changed rows; the writer turns
	// them into ids and writes them. Buffered for every segment, so the
	// evaluator never waits for the writer.
	type evaluated struct {
		seg             *rules.Segment
		fresh           rules.Bitmap
		entered, exited []uint32
	}
	ch := make(chan evaluated, len(segs))
	var (
		evalErr    error // set before ch is closed
		population int
		res        = &Result{Kind: storage.PassFull, Segments: map[string]Diff{}}
		fresh      = map[string]rules.Bitmap{}
		total      int
	)
	written := make(chan error, 1)
	go func() {
		written <- s.store.Tx(ctx, func(tx *storage.Tx) error {
			pass, err := tx.BeginPass(storage.PassFull, now)
			if err != nil {
				return err
			}
			if err := closeWindow(tx, s.win); err != nil {
				return err
			}
			dw := tx.DiffWriter(pass, now)
			var werr error
			for e := range ch {
				if werr != nil {
					continue // drain: the evaluator is never blocked anyway
				}
				d := Diff{Entered: s.ids(e.entered), Exited: append(s.ids(e.exited), s.ghosts[e.seg.Name]...)}
				d.Size = popcount(e.fresh)
				d.Held = heldReason(e.seg, d.Size)
				res.Segments[e.seg.Name] = d
				fresh[e.seg.Name] = e.fresh
				total += len(d.Entered) + len(d.Exited)
				werr = dw.Add(e.seg.Name, d.Entered, d.Exited)
			}
			if werr != nil {
				return werr
			}
			if evalErr != nil {
				return evalErr
			}
			for _, seg := range segs {
				d := res.Segments[seg.Name]
				if err := tx.RecordSize(storage.SegmentSize{Segment: seg.Name, Pass: pass, At: now, Size: int64(d.Size),
					Entered: int64(len(d.Entered)), Exited: int64(len(d.Exited)), Held: d.Held}); err != nil {
					return err
				}
			}
			res.Pass = pass
			return tx.FinishPass(pass, population, total)
		})
	}()
	evalErr = s.profiles.Read(func(t rules.Table) error {
		population = popcount(t.Live())
		words := (t.Len() + 63) / 64
		env := rules.Env{Now: now, Members: map[string]rules.Bitmap{}}
		for seg, b := range s.members {
			env.Members[seg] = b
		}
		for _, seg := range segs {
			b, err := seg.EvalAll(t, env)
			if err != nil {
				return err
			}
			b = grow(b, words)
			env.Members[seg.Name] = b
			e := evaluated{seg: seg, fresh: b}
			e.entered, e.exited = diffRows(s.members[seg.Name], b)
			ch <- e
		}
		return nil
	})
	close(ch)
	err := <-written
	if evalErr != nil {
		return nil, fmt.Errorf("full pass: %w", evalErr)
	}
	if err != nil {
		return nil, fmt.Errorf("full pass: persist: %w", err)
	}
	res.Evaluated = population
	s.win = nil // closed by the pass
	for _, seg := range segs {
		name := seg.Name
		d := res.Segments[name]
		prev, had := s.fullSizes[name]
		s.members[name] = fresh[name]
		delete(s.ghosts, name)
		s.fullSizes[name] = d.Size
		if seg.AlertSwing > 0 && had && prev > 0 {
			swing := math.Abs(float64(d.Size-prev)) / float64(prev)
			if swing > seg.AlertSwing {
				s.m.swings.WithLabelValues(name).Inc()
				s.log.Warn("segment size swung more than alert_swing", "segment", name, "from", prev, "to", d.Size,
					"swing", fmt.Sprintf("%.0f%%", swing*100), "alert_swing", fmt.Sprintf("%.0f%%", seg.AlertSwing*100))
			}
		}
		s.publish(ctx, name, storage.PassFull, res.Pass, d)
	}
	s.m.passSeconds.WithLabelValues(storage.PassFull).Observe(time.Since(start).Seconds())
	return res, nil
}

// ids maps rows to customer ids (outside the profiles' read lock).
func (s *Segmenter) ids(rows []uint32) []string {
	if len(rows) == 0 {
		return nil
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = s.profiles.ID(r)
	}
	return out
}

// Incremental re-evaluates every segment for the given customers only (those
// ingestion just changed), in dependency order, and persists what changed.
//
// It is cheap enough to run for every committed webhook batch: membership
// bits are flipped in place (and flipped back if persisting fails), sizes
// are adjusted by the changes, and only the changes are written. Incremental
// passes share one segment_passes row per IncrementalWindow; the window's
// size rows (one per segment it changed: size at its last change, entered
// and exited summed) and its counts are written when the next window opens
// or the next full pass runs, whichever comes first. So a daemon stopped
// mid-window leaves that window's pass row unfinished and without size rows;
// its changes are all in segment_changes, and the full pass at start records
// every size.
func (s *Segmenter) Incremental(ctx context.Context, ids []string) (*Result, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	now := s.now()
	rows := make([]uint32, 0, len(ids))
	for _, id := range ids {
		if r, ok := s.profiles.Row(id); ok {
			rows = append(rows, r)
		}
	}
	res := &Result{Kind: storage.PassIncremental, Evaluated: len(rows), Segments: map[string]Diff{}}
	type flip struct {
		seg string
		row uint32
	}
	var flips []flip
	undo := func() {
		for _, f := range flips {
			s.members[f.seg][f.row>>6] ^= 1 << (f.row & 63)
		}
	}
	err := s.profiles.Read(func(t rules.Table) error {
		words := (t.Len() + 63) / 64
		// Rules read s.members directly: a segment evaluated later in
		// dependency order sees the flips of the ones before it.
		env := rules.Env{Now: now, Members: s.members}
		out := make([]bool, len(rows))
		for _, seg := range s.set.Segments() {
			if err := seg.Eval(t, env, rows, out); err != nil {
				return err
			}
			b := s.members[seg.Name]
			for i, r := range rows {
				if out[i] == has(b, r) {
					continue
				}
				if len(b) < words {
					b = grow(b, words)
				}
				b[r>>6] ^= 1 << (r & 63)
				flips = append(flips, flip{seg.Name, r})
			}
			s.members[seg.Name] = b // present even when empty: in_segment needs it
		}
		return nil
	})
	if err != nil {
		undo()
		return nil, fmt.Errorf("incremental pass: %w", err)
	}
	// Ids outside the read lock (the profile store's ID takes it too).
	total := len(flips)
	for _, f := range flips {
		d := res.Segments[f.seg]
		if has(s.members[f.seg], f.row) {
			d.Entered = append(d.Entered, s.profiles.ID(f.row))
		} else {
			d.Exited = append(d.Exited, s.profiles.ID(f.row))
		}
		res.Segments[f.seg] = d
	}
	for _, seg := range s.set.Segments() {
		d := res.Segments[seg.Name]
		d.Size = s.sizes[seg.Name] + len(d.Entered) - len(d.Exited)
		d.Held = heldReason(seg, d.Size)
		res.Segments[seg.Name] = d
	}
	// A pass that changed nothing writes nothing.
	if total > 0 {
		if err := s.persistIncremental(ctx, now, res, total); err != nil {
			undo()
			return nil, err
		}
	}
	for name, d := range res.Segments {
		s.publish(ctx, name, storage.PassIncremental, res.Pass, d)
	}
	s.m.passSeconds.WithLabelValues(storage.PassIncremental).Observe(time.Since(start).Seconds())
	return res, nil
}

// IncrementalWindow is how long incremental passes share one segment_passes
// row and its size rows.
const IncrementalWindow = time.Minute

// window is the open incremental pass row: what it changed so far.
type window struct {
	pass               int64
	opened             time.Time // wall clock
	at                 time.Time // the pass clock at its last change
	evaluated, changes int
	sizes              map[string]storage.SegmentSize
}

// persistIncremental writes an incremental pass's changes under the open
// window's pass row, opening a new window (and closing the old one) when it
// is older than IncrementalWindow.
func (s *Segmenter) persistIncremental(ctx context.Context, now time.Time, res *Result, total int) error {
	w := s.win
	err := s.store.Tx(ctx, func(tx *storage.Tx) error {
		if w == nil || time.Since(w.opened) >= IncrementalWindow {
			if err := closeWindow(tx, w); err != nil {
				return err
			}
			pass, err := tx.BeginPass(storage.PassIncremental, now)
			if err != nil {
				return err
			}
			w = &window{pass: pass, opened: time.Now(), sizes: map[string]storage.SegmentSize{}}
		}
		dw := tx.DiffWriter(w.pass, now)
		for _, seg := range s.set.Segments() { // dependency order: stable seq order
			if d := res.Segments[seg.Name]; len(d.Entered)+len(d.Exited) > 0 {
				if err := dw.Add(seg.Name, d.Entered, d.Exited); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("incremental pass: persist: %w", err)
	}
	// Committed: account the pass to its window.
	res.Pass = w.pass
	w.at = now
	w.evaluated += res.Evaluated
	w.changes += total
	for name, d := range res.Segments {
		if len(d.Entered)+len(d.Exited) == 0 {
			continue
		}
		z := w.sizes[name]
		w.sizes[name] = storage.SegmentSize{Segment: name, Pass: w.pass, At: now, Size: int64(d.Size),
			Entered: z.Entered + int64(len(d.Entered)), Exited: z.Exited + int64(len(d.Exited)), Held: d.Held}
	}
	s.win = w
	return nil
}

// closeWindow records a window's size rows and counts (w may be nil).
func closeWindow(tx *storage.Tx, w *window) error {
	if w == nil {
		return nil
	}
	names := make([]string, 0, len(w.sizes))
	for name := range w.sizes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := tx.RecordSize(w.sizes[name]); err != nil {
			return err
		}
	}
	return tx.FinishPass(w.pass, w.evaluated, w.changes)
}

func heldReason(seg *rules.Segment, size int) string {
	switch {
	case seg == nil:
		return ""
	case seg.MinSize > 0 && size < seg.MinSize:
		return fmt.Sprintf("size %d is below min_size %d", size, seg.MinSize)
	case seg.MaxSize > 0 && size > seg.MaxSize:
		return fmt.Sprintf("size %d is above max_size %d", size, seg.MaxSize)
	}
	return ""
}

// publish makes a persisted diff visible: metrics, logs, holds.
func (s *Segmenter) publish(ctx context.Context, name, kind string, pass int64, d Diff) {
	s.sizes[name] = d.Size
	s.m.size.WithLabelValues(name).Set(float64(d.Size))
	if len(d.Entered) > 0 {
		s.m.changes.WithLabelValues(name, "enter").Add(float64(len(d.Entered)))
	}
	if len(d.Exited) > 0 {
		s.m.changes.WithLabelValues(name, "exit").Add(float64(len(d.Exited)))
	}
	held := 0.0
	if d.Held != "" {
		held = 1
	}
	s.m.held.WithLabelValues(name).Set(held)
	if len(d.Entered)+len(d.Exited) > 0 {
		// Incremental changes come with every webhook: debug level; the
		// changes_total metric and segment_changes have them all.
		level := slog.LevelInfo
		if kind == storage.PassIncremental {
			level = slog.LevelDebug
		}
		s.log.Log(ctx, level, "segment changed", "segment", name, "pass", pass, "kind", kind,
			"entered", len(d.Entered), "exited", len(d.Exited), "size", d.Size)
	}
	if was := s.held[name]; d.Held != was {
		if d.Held != "" {
			s.log.Warn("campaigns on this segment are held", "segment", name, "reason", d.Held)
		} else {
			s.log.Info("campaigns on this segment are no longer held", "segment", name, "size", d.Size)
		}
		s.held[name] = d.Held
	}
}

// diffRows lists the rows in nb but not old (entered) and in old but not
// nb (exited), by word-wise set difference.
func diffRows(old, nb rules.Bitmap) (entered, exited []uint32) {
	n := max(len(old), len(nb))
	for w := range n {
		var o, x uint64
		if w < len(old) {
			o = old[w]
		}
		if w < len(nb) {
			x = nb[w]
		}
		for in := x &^ o; in != 0; in &= in - 1 {
			entered = append(entered, uint32(w*64+bits.TrailingZeros64(in)))
		}
		for out := o &^ x; out != 0; out &= out - 1 {
			exited = append(exited, uint32(w*64+bits.TrailingZeros64(out)))
		}
	}
	return entered, exited
}

func has(b rules.Bitmap, r uint32) bool {
	w := int(r >> 6)
	return w < len(b) && b[w]&(1<<(r&63)) != 0
}

func grow(b rules.Bitmap, words int) rules.Bitmap {
	if len(b) >= words {
		return b
	}
	return append(b, make(rules.Bitmap, words-len(b))...)
}

func popcount(b rules.Bitmap) int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

type metrics struct {
	size        *prometheus.GaugeVec
	held        *prometheus.GaugeVec
	changes     *prometheus.CounterVec
	swings      *prometheus.CounterVec
	passSeconds *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		size:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "cohort", Subsystem: "segment", Name: "size", Help: "Members of the segment after the last pass."}, []string{"segment"}),
		held:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "cohort", Subsystem: "segment", Name: "held", Help: "1 while the segment is outside min_size/max_size, so its campaigns are held."}, []string{"segment"}),
		changes:     prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "segment", Name: "changes_total", Help: "Customers entering or exiting the segment."}, []string{"segment", "change"}),
		swings:      prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cohort", Subsystem: "segment", Name: "swing_alerts_total", Help: "Passes in which the segment's size moved more than its alert_swing."}, []string{"segment"}),
		passSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "cohort", Subsystem: "segment", Name: "pass_seconds", Help: "Duration of segmentation passes.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.size, m.held, m.changes, m.swings, m.passSeconds)
	}
	return m
}
