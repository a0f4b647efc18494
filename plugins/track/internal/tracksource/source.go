// Package tracksource is the track source plugin: it implements Segment's
// HTTP Tracking API (identify, track, page, screen, alias, group and batch)
// on the instance's webhook path, so analytics SDKs (analytics.js,
// analytics-go, analytics-node, ...) can send to Cohort unchanged by
// pointing their endpoint at https://{public_url}/webhooks/{instance}.
//
// Mapping:
//   - identify: a customer upsert (id = userId) with the traits the config's
//     schema declares, each converted to its type; email_opt_in and
//     sms_opt_in (configurable) become consent changes.
//   - track: an event named by "event"; page and screen: events named
//     page_viewed and screen_viewed (configurable). Event id = messageId;
//     time = timestamp corrected for the client's clock skew; value =
//     properties.revenue, else .value, else .total.
//   - alias and group: accepted (200) and ignored.
//
// The source is live and has no backlog: Pull sends one empty caught-up
// batch and waits; all data arrives through Webhook, which the daemon
// commits before it answers the caller.
//
// Nothing a client sends (trait values, ids, keys) is logged; problems name
// the customer id and the field, never the value.
package tracksource

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Version is the plugin's version, reported in SourceInfo.
const Version = "0.1.0"

// maxCounted bounds the distinct names counted per state (unknown trait
// names come from clients); beyond it, names are counted as "(other)".
const maxCounted = 10000

// Source receives Segment tracking calls. The zero value is not usable:
// call New.
type Source struct {
	log *slog.Logger
	now func() time.Time
	st  atomic.Pointer[state]
}

var (
	_ sdk.Source          = (*Source)(nil)
	_ sdk.SourceWebhooker = (*Source)(nil)
)

// state is what one Configure produced, and what was counted since.
type state struct {
	set *settings

	mu     sync.Mutex
	counts map[countKey]int64
}

type countKey struct{ kind, name string }

// countMessages are the log messages of the counters.
var countMessages = map[string]string{
	"unknown_trait":    "trait not in the schema ignored",
	"undeclared_event": "undeclared event skipped (allow_unknown_events: false)",
	"ignored_call":     "call accepted but not mapped",
	"rejected":         "request rejected",
}

// count records one occurrence of name under kind and reports whether it
// was the first since Configure. It logs the count at the 1st, 10th, 100th,
// ... occurrence, so a steady stream stays visible without flooding the log.
func (st *state) count(log *slog.Logger, kind, name string) bool {
	st.mu.Lock()
	k := countKey{kind, name}
	if _, ok := st.counts[k]; !ok && len(st.counts) >= maxCounted {
		k.name = "(other)"
	}
	st.counts[k]++
	n := st.counts[k]
	st.mu.Unlock()
	if isPowerOf10(n) {
		log.Info(countMessages[kind], "kind", kind, "name", k.name, "count", n)
	}
	return n == 1
}

func isPowerOf10(n int64) bool {
	// p overflows to a negative number after 10^18, ending the loop.
	for p := int64(1); p > 0 && p <= n; p *= 10 {
		if p == n {
			return true
		}
	}
	return false
}

// Option configures a Source.
type Option func(*Source)

// WithLogger sets the logger. The default is sdk.Logger(): JSON lines on
// stderr, which the daemon reads.
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.log = l } }

// WithClock sets the clock that stamps a request's arrival (receivedAt).
func WithClock(now func() time.Time) Option { return func(s *Source) { s.now = now } }

// New returns an unconfigured Source.
func New(opts ...Option) *Source {
	s := &Source{log: sdk.Logger(), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Configure checks the config and returns the trait schema and the event
// names. A later call replaces the earlier one's config and counts.
func (s *Source) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.SourceInfo, error) {
	set, err := parseConfig(req.Config)
	if err != nil {
		return sdk.SourceInfo{}, err
	}
	if set.weakKeys > 0 {
		s.log.Warn("write keys shorter than 16 characters are easy to guess; use long random keys", "count", set.weakKeys)
	}
	s.st.Store(&state{set: set, counts: map[countKey]int64{}})
	info := sdk.SourceInfo{
		Name:       "track",
		Version:    Version,
		EventNames: append([]string(nil), set.eventNames...),
		Contact:    set.contact,
	}
	for _, t := range set.traits {
		info.Traits = append(info.Traits, sdk.Trait{Name: t.name, Type: t.typ, Description: "Segment trait " + strings.Join(t.path, ".")})
	}
	s.log.Info("configured", "endpoint", req.WebhookPath+"/v1/batch", "traits", len(info.Traits), "events", len(info.EventNames), "write_keys", len(set.keys))
	return info, nil
}

// Pull has no backlog to send: it sends one empty batch marked CaughtUp,
// then waits until ctx is done. The cursor is unused.
func (s *Source) Pull(ctx context.Context, _ string, send func(*sdk.Batch) error) error {
	if s.st.Load() == nil {
		return sdk.Errorf(sdk.InvalidArgument, "", "track: Pull called before Configure")
	}
	if err := send(&sdk.Batch{CaughtUp: true}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// Webhook answers one tracking API request. Client errors (a bad key,
// malformed JSON, a body too large) are answered with a 4xx status and
// nothing to commit; the error return is kept for the plugin not being
// ready, which the daemon answers with a 503 so the SDK retries.
func (s *Source) Webhook(ctx context.Context, req *sdk.WebhookRequest) (*sdk.SourceWebhookResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st := s.st.Load()
	if st == nil {
		return nil, sdk.Errorf(sdk.Unavailable, "", "track: webhook received before Configure")
	}
	return st.handle(req, s.now().UTC(), s.log), nil
}
