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

// FullPass re-evaluates the named segments (all when names is empty) over
// every customer, persists the diffs and sizes in one transaction, and only
// then makes the new membership current.
func (s *Segmenter) FullPass(ctx context.Context, names []string) (*Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	now := s.now()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	fresh := map[string]rules.Bitmap{}
	evaluated := 0
	err := s.profiles.Read(func(t rules.Table) error {
		evaluated = popcount(t.Live())
		words := (t.Len() + 63) / 64
		env := rules.Env{Now: now, Members: map[string]rules.Bitmap{}}
		for seg, b := range s.members {
			env.Members[seg] = grow(b, words)
		}
		for _, seg := range s.set.Segments() {
			if len(want) > 0 && !want[seg.Name] {
				continue
			}
			b, err := seg.EvalAll(t, env)
			if err != nil {
				return err
			}
			b = grow(b, words)
			fresh[seg.Name] = b
			env.Members[seg.Name] = b
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("full pass: %w", err)
	}
	res, err := s.commit(ctx, storage.PassFull, now, evaluated, fresh, nil)
	if err != nil {
		return nil, err
	}
	s.m.passSeconds.WithLabelValues(storage.PassFull).Observe(time.Since(start).Seconds())
	return res, nil
}

// Incremental re-evaluates every segment for the given customers only (those
// ingestion just changed), in dependency order.
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
	fresh := map[string]rules.Bitmap{}
	err := s.profiles.Read(func(t rules.Table) error {
		words := (t.Len() + 63) / 64
		env := rules.Env{Now: now, Members: map[string]rules.Bitmap{}}
		for seg, b := range s.members {
			env.Members[seg] = grow(append(rules.Bitmap(nil), b...), words)
		}
		out := make([]bool, len(rows))
		for _, seg := range s.set.Segments() {
			if err := seg.Eval(t, rules.Env{Now: now, Members: env.Members}, rows, out); err != nil {
				return err
			}
			b := env.Members[seg.Name]
			if b == nil {
				b = make(rules.Bitmap, words)
			}
			for i, r := range rows {
				if out[i] {
					b[r>>6] |= 1 << (r & 63)
				} else {
					b[r>>6] &^= 1 << (r & 63)
				}
			}
			env.Members[seg.Name] = b
			fresh[seg.Name] = b
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("incremental pass: %w", err)
	}
	res, err := s.commit(ctx, storage.PassIncremental, now, len(rows), fresh, rows)
	if err != nil {
		return nil, err
	}
	s.m.passSeconds.WithLabelValues(storage.PassIncremental).Observe(time.Since(start).Seconds())
	return res, nil
}

// commit diffs fresh against the current membership, persists it, and makes
// it current. rows limits the diff to those rows (incremental passes).
func (s *Segmenter) commit(ctx context.Context, kind string, now time.Time, evaluated int, fresh map[string]rules.Bitmap, rows []uint32) (*Result, error) {
	res := &Result{Kind: kind, Evaluated: evaluated, Segments: map[string]Diff{}}
	byName := map[string]*rules.Segment{}
	for _, seg := range s.set.Segments() {
		byName[seg.Name] = seg
	}
	total := 0
	for name, nb := range fresh {
		old := s.members[name]
		var d Diff
		if rows == nil {
			d.Entered, d.Exited = s.diffAll(old, nb)
			d.Exited = append(d.Exited, s.ghosts[name]...)
		} else {
			for _, r := range rows {
				was, is := has(old, r), has(nb, r)
				switch {
				case is && !was:
					d.Entered = append(d.Entered, s.profiles.ID(r))
				case was && !is:
					d.Exited = append(d.Exited, s.profiles.ID(r))
				}
			}
		}
		d.Size = popcount(nb)
		if rows != nil {
			d.Size += len(s.ghosts[name])
		}
		if seg := byName[name]; seg != nil {
			switch {
			case seg.MinSize > 0 && d.Size < seg.MinSize:
				d.Held = fmt.Sprintf("size %d is below min_size %d", d.Size, seg.MinSize)
			case seg.MaxSize > 0 && d.Size > seg.MaxSize:
				d.Held = fmt.Sprintf("size %d is above max_size %d", d.Size, seg.MaxSize)
			}
		}
		total += len(d.Entered) + len(d.Exited)
		res.Segments[name] = d
	}
	// An incremental pass that changed nothing writes nothing.
	if kind == storage.PassIncremental && total == 0 {
		for name, b := range fresh {
			s.members[name] = b
		}
		return res, nil
	}
	err := s.store.Tx(ctx, func(tx *storage.Tx) error {
		pass, err := tx.BeginPass(kind, now)
		if err != nil {
			return err
		}
		res.Pass = pass
		for name, d := range res.Segments {
			if err := tx.ApplyDiff(name, d.Entered, d.Exited, now, pass); err != nil {
				return err
			}
			if kind == storage.PassFull || len(d.Entered)+len(d.Exited) > 0 {
				if err := tx.RecordSize(storage.SegmentSize{Segment: name, Pass: pass, At: now, Size: int64(d.Size),
					Entered: int64(len(d.Entered)), Exited: int64(len(d.Exited)), Held: d.Held}); err != nil {
					return err
				}
			}
		}
		return tx.FinishPass(pass, evaluated, total)
	})
	if err != nil {
		return nil, fmt.Errorf("%s pass: persist: %w", kind, err)
	}
	for name, d := range res.Segments {
		prev, had := s.fullSizes[name]
		s.members[name] = fresh[name]
		if rows == nil {
			delete(s.ghosts, name)
		}
		s.sizes[name] = d.Size
		s.m.size.WithLabelValues(name).Set(float64(d.Size))
		s.m.changes.WithLabelValues(name, "enter").Add(float64(len(d.Entered)))
		s.m.changes.WithLabelValues(name, "exit").Add(float64(len(d.Exited)))
		held := 0.0
		if d.Held != "" {
			held = 1
		}
		s.m.held.WithLabelValues(name).Set(held)
		if kind == storage.PassFull {
			s.fullSizes[name] = d.Size
		}
		if seg := byName[name]; kind == storage.PassFull && seg != nil && seg.AlertSwing > 0 && had && prev > 0 {
			swing := math.Abs(float64(d.Size-prev)) / float64(prev)
			if swing > seg.AlertSwing {
				s.m.swings.WithLabelValues(name).Inc()
				s.log.Warn("segment size swung more than alert_swing", "segment", name, "from", prev, "to", d.Size,
					"swing", fmt.Sprintf("%.0f%%", swing*100), "alert_swing", fmt.Sprintf("%.0f%%", seg.AlertSwing*100))
			}
		}
		if len(d.Entered)+len(d.Exited) > 0 {
			s.log.Info("segment changed", "segment", name, "pass", res.Pass, "kind", kind,
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
	return res, nil
}

// diffAll lists the customers in nb but not old (entered) and in old but not
// nb (exited), by word-wise set difference.
func (s *Segmenter) diffAll(old, nb rules.Bitmap) (entered, exited []string) {
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
			entered = append(entered, s.profiles.ID(uint32(w*64+bits.TrailingZeros64(in))))
		}
		for out := o &^ x; out != 0; out &= out - 1 {
			exited = append(exited, s.profiles.ID(uint32(w*64+bits.TrailingZeros64(out))))
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
