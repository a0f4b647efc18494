package campaign

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortd/cohort/daemon/message"
	"github.com/cohortd/cohort/daemon/unsubscribe"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// Channel is one channel plugin instance as the dispatcher uses it.
type Channel struct {
	Name string
	// Kind is email, sms or webhook.
	Kind string
	// Concurrency is how many Send calls may be in flight; Batch the most
	// messages per call; Rate the most messages per second (0: unlimited);
	// Timeout the plugin call's deadline (leases last twice as long).
	Concurrency int
	Batch       int
	Rate        float64
	Timeout     time.Duration
	// Resend: a message whose outcome is unknown is sent again
	// (on_unknown: resend) instead of reported.
	Resend bool
	// Send calls the plugin; an error means nothing is known of any message
	// (except errors wrapping ErrNotSent: the call never started).
	Send func(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error)
	// Ready reports whether the plugin is running (nil: always).
	Ready func() bool
	// NoEvents reports that the channel reports no delivery events (its
	// plugin has no webhook), so no event will look a message up by its
	// provider id alone and the ids need no index (nil: events may come).
	NoEvents func() bool
}

// ErrNotSent marks a Send error for a call that never reached the plugin
// (it was not running): its rows go back to pending.
var ErrNotSent = errors.New("call not made")

// Contacts names the traits holding contact data.
type Contacts struct {
	Email, Phone, Timezone string
}

// Messages are the message-wide settings of config.yaml.
type Messages struct {
	From, ReplyTo, PostalAddress string
	// PublicURL is the daemon's public base URL (unsubscribe links).
	PublicURL string
	// Consent decides who may be messaged when no record says (default opt_in).
	Consent ConsentMode
	// MaxAttempts bounds sends of one row on retryable errors (default 8).
	MaxAttempts int
	// UnknownTTL is how long an unknown row waits for a delivery event
	// before it is reported as unresolved (default 72h).
	UnknownTTL time.Duration
}

// Holds tells which segments hold their campaigns: the segmenter records a
// hold reason when a pass leaves a segment outside min_size/max_size.
type Holds interface {
	Held(segment string) string
}

// Options configure an Engine.
type Options struct {
	DB       *storage.DB
	Log      *slog.Logger
	Registry prometheus.Registerer
	// Now is the clock (nil: time.Now); every time decision uses it.
	Now      func() time.Time
	Location *time.Location
	Channels map[string]*Channel
	Contacts Contacts
	// Traits is the trait schema stored customers' traits are read with.
	Traits   map[string]sdk.TraitType
	Messages Messages
	Signer   *unsubscribe.Signer
	Holds    Holds
	// Poll is how often dispatchers look for due rows when not woken
	// (default 250ms); Tick how often the planner runs unprompted (default 1s).
	Poll, Tick time.Duration
	// Single is set when this daemon is the only one on its database
	// (SQLite): at start, rows left sending by a previous run become unknown
	// at once instead of when their leases end.
	Single bool
}

// plan is a rule set with its compiled templates.
type plan struct {
	set  *rules.Set
	msgs *message.Set
}

// Engine runs campaigns.
type Engine struct {
	opt Options
	db  *storage.DB
	log *slog.Logger
	m   *metrics

	plan  atomic.Pointer[plan]
	passC chan Pass
	// lateFull is a full pass that found passC full; the planner takes it
	// at its next run.
	lateFull atomic.Pointer[Pass]
	wake     map[string]chan struct{}
	kick     chan struct{}

	mu     sync.Mutex
	states map[string]storage.CampaignState
}

// Pass tells the planner that a segmentation pass committed.
type Pass struct {
	ID   int64
	Full bool
	// Segments the pass covered (all for a full pass over every segment).
	Segments []string
	// Set is the rule set the pass ran.
	Set *rules.Set
	// CaughtUp is set when every running source has finished its first
	// import: only such a full pass can be a baseline (otherwise the
	// import's entries would fire after it, a flood on first start).
	CaughtUp bool
}

// New returns an engine; SetRules must be called before Run.
func New(opt Options) *Engine {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Location == nil {
		opt.Location = time.UTC
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Poll == 0 {
		opt.Poll = 250 * time.Millisecond
	}
	if opt.Tick == 0 {
		opt.Tick = time.Second
	}
	if opt.Messages.Consent == "" {
		opt.Messages.Consent = ConsentOptIn
	}
	if opt.Messages.MaxAttempts == 0 {
		opt.Messages.MaxAttempts = 8
	}
	if opt.Messages.UnknownTTL == 0 {
		opt.Messages.UnknownTTL = 72 * time.Hour
	}
	if opt.Registry == nil {
		opt.Registry = prometheus.NewRegistry()
	}
	e := &Engine{opt: opt, db: opt.DB, log: opt.Log.With("component", "campaign"), m: newMetrics(opt.Registry),
		passC: make(chan Pass, 64), wake: map[string]chan struct{}{}, kick: make(chan struct{}, 1)}
	for name := range opt.Channels {
		e.wake[name] = make(chan struct{}, 1)
	}
	return e
}

// SetRules makes a rule set current: its campaigns, policies and message
// templates (compiled by the caller against the same schema). Campaigns
// whose definition changed take a new baseline at the next full pass.
func (e *Engine) SetRules(set *rules.Set, msgs *message.Set) {
	e.plan.Store(&plan{set: set, msgs: msgs})
	e.Kick()
}

// Notify tells the planner a pass committed. It never blocks a pass: when
// the planner is behind, a full pass is kept and incremental ones are
// folded into the next tick.
func (e *Engine) Notify(p Pass) {
	select {
	case e.passC <- p:
	default:
		if p.Full {
			e.lateFull.Store(&p)
		}
		e.Kick()
	}
}

// Kick wakes the planner and every dispatcher (after the clock moved in a
// test, or new rows were queued).
func (e *Engine) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
	e.wakeAll()
}

func (e *Engine) wakeAll() {
	for _, c := range e.wake {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// Run plans and dispatches until ctx is done. Work in flight when it ends
// finishes its current call and records the outcome.
func (e *Engine) Run(ctx context.Context) error {
	if e.plan.Load() == nil {
		return errors.New("campaign engine: no rules")
	}
	states, err := e.db.CampaignStates(ctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.states = states
	e.mu.Unlock()
	if e.opt.Single {
		if err := e.reap(ctx, true); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	for _, ch := range e.opt.Channels {
		n := max(ch.Concurrency, 1)
		d := newDispatcher(e, ch)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.loop(ctx)
			}()
		}
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		e.reapLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		e.winnerLoop(ctx)
	}()
	e.planLoop(ctx)
	wg.Wait()
	return nil
}

func (e *Engine) planLoop(ctx context.Context) {
	t := time.NewTicker(e.opt.Tick)
	defer t.Stop()
	for {
		var p *Pass
		select {
		case <-ctx.Done():
			return
		case got := <-e.passC:
			p = &got
		case <-e.kick:
		case <-t.C:
		}
		if p == nil {
			p = e.lateFull.Swap(nil)
		}
		if err := e.PlanOnce(ctx, p); err != nil && ctx.Err() == nil {
			e.log.Error("campaign planning failed; retrying at the next pass or tick", "err", err)
		}
	}
}

// state returns a copy of a campaign's state.
func (e *Engine) state(name string) (storage.CampaignState, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.states[name]
	return s, ok
}

func (e *Engine) setState(s storage.CampaignState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.states == nil {
		e.states = map[string]storage.CampaignState{}
	}
	e.states[s.Campaign] = s
}

// fingerprint identifies what a campaign's baseline depends on: its segment
// (the rule and the rules it names), its trigger and its channel.
func fingerprint(set *rules.Set, c *rules.Campaign) string {
	h := sha256.New()
	fmt.Fprintf(h, "segment=%s\x00trigger=%s %s\x00channel=%s\x00", c.Segment, c.Trigger.Kind, c.Trigger.Cron, c.Channel)
	seen := map[string]bool{}
	var add func(name string)
	add = func(name string) {
		if seen[name] {
			return
		}
		seen[name] = true
		s := set.Segment(name)
		if s == nil {
			return
		}
		fmt.Fprintf(h, "%s=%s\x00", name, s.When)
		for _, d := range s.Deps {
			add(d)
		}
	}
	add(c.Segment)
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// weightsID identifies a campaign's arm split (holdout and weights).
func weightsID(c *rules.Campaign) string {
	parts := []string{fmt.Sprintf("holdout=%d", c.Holdout)}
	for _, v := range c.Variants {
		parts = append(parts, fmt.Sprintf("%s=%d", v.Name, v.Weight))
	}
	sort.Strings(parts[1:])
	return strings.Join(parts, ",")
}

// Campaign returns a campaign of the current rules, or nil.
func (e *Engine) Campaign(name string) *rules.Campaign {
	if p := e.plan.Load(); p != nil {
		return p.set.Campaign(name)
	}
	return nil
}
