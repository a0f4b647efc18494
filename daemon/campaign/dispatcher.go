package campaign

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"sort"
	"time"

	"golang.org/x/time/rate"

	"github.com/cohortd/cohort/daemon/message"
	"github.com/cohortd/cohort/daemon/unsubscribe"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// dispatcher sends one channel's due rows; Concurrency workers share it.
type dispatcher struct {
	e       *Engine
	ch      *Channel
	limiter *rate.Limiter
	batch   int
}

func newDispatcher(e *Engine, ch *Channel) *dispatcher {
	d := &dispatcher{e: e, ch: ch, batch: max(ch.Batch, 1)}
	if ch.Rate > 0 {
		d.limiter = rate.NewLimiter(rate.Limit(ch.Rate), d.batch)
	}
	return d
}

func (d *dispatcher) loop(ctx context.Context) {
	wake := d.e.wake[d.ch.Name]
	// sent is the last batch's outcomes while they wait to be recorded in
	// the transaction claiming the next batch, right after the call: one
	// transaction instead of two, with the outcomes written as early as a
	// transaction of their own would write them. Its rows stay sending
	// until that commit, and the commit that settles them is the one that
	// claims the next batch, so a worker never holds more than one batch.
	var sent *batch
	for ctx.Err() == nil {
		n, next, err := d.step(ctx, sent)
		sent = next
		if err != nil && ctx.Err() == nil {
			d.e.log.Error("dispatch failed; retrying", "channel", d.ch.Name, "err", err)
		}
		if n > 0 && err == nil && ctx.Err() == nil {
			continue
		}
		d.flush(ctx, sent)
		sent = nil
		t := time.NewTimer(d.e.opt.Poll)
		select {
		case <-ctx.Done():
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
	d.flush(ctx, sent)
}

// claimed is a row this dispatcher holds a lease on, with what rendering
// needs.
type claimed struct {
	row    storage.Due
	traits map[string]sdk.Value
	to     string
}

// batch is a sent batch's outcomes, to be recorded.
type batch struct {
	rows  []claimed
	comps []storage.Completion
}

// once claims one batch, sends it and records the outcomes. It returns how
// many rows it claimed or settled.
func (d *dispatcher) once(ctx context.Context) (int, error) {
	n, sent, err := d.step(ctx, nil)
	d.flush(ctx, sent)
	return n, err
}

// step records prev's outcomes (in the claim's transaction when it claims),
// claims one batch and sends it. It returns how many rows it claimed or
// settled, and the sent batch's outcomes, not yet recorded.
func (d *dispatcher) step(ctx context.Context, prev *batch) (int, *batch, error) {
	if d.ch.Ready != nil && !d.ch.Ready() {
		d.flush(ctx, prev)
		return 0, nil, nil
	}
	// With a rate limit, a claim takes at most the tokens available (one
	// at least, waited for), so no lease is held while waiting for more.
	limit := d.batch
	if d.limiter != nil {
		// Outcomes are not held back while waiting for tokens.
		d.flush(ctx, prev)
		prev = nil
		if err := d.limiter.Wait(ctx); err != nil {
			return 0, nil, nil
		}
		limit = min(d.batch, 1+int(d.limiter.Tokens()))
	}
	token := newToken()
	rows, settled, err := d.claimAfter(ctx, token, limit, prev)
	if d.limiter != nil {
		if n := len(rows) - 1; n > 0 {
			if r := d.limiter.ReserveN(time.Now(), n); r.OK() {
				time.Sleep(r.Delay())
			}
		}
	}
	if err != nil || len(rows) == 0 {
		return settled, nil, err
	}
	return len(rows) + settled, d.send(ctx, rows, token), nil
}

func newToken() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// claim takes up to a batch of due rows in one transaction, applying the
// send-time policies to each: blocked rows are skipped, capped and quiet
// rows deferred, the rest move to sending under this lease.
func (d *dispatcher) claim(ctx context.Context, token string, limit int) ([]claimed, int, error) {
	return d.claimAfter(ctx, token, limit, nil)
}

// claimAfter is claim recording prev's outcomes first in the same
// transaction. When that transaction fails, prev's outcomes are recorded
// on their own.
func (d *dispatcher) claimAfter(ctx context.Context, token string, limit int, prev *batch) ([]claimed, int, error) {
	e := d.e
	pl := e.plan.Load()
	pol := pl.set.Policies()[d.ch.Kind]
	capped := pol != nil && pol.Cap != nil
	var (
		out     []claimed
		settled int
		applied []int64
	)
	type deferral struct {
		at     time.Time
		reason string
	}
	var (
		finish map[string][]int64
		defers map[deferral][]int64
		rowOf  map[int64]*storage.Due
	)
	var now time.Time
	err := e.db.WriteTx(ctx, func(tx *storage.Tx) error {
		// The clock is read once the write lock is held: claim times and
		// leases start now, not before a wait for the lock.
		now = e.opt.Now()
		out, settled, applied = out[:0], 0, nil
		finish, defers = nil, nil
		var comps []storage.Completion
		if prev != nil {
			comps = prev.comps
		}
		var (
			rows []storage.Due
			err  error
		)
		applied, rows, err = tx.CompleteThenDue(comps, now, d.ch.Name, limit)
		if err != nil || len(rows) == 0 {
			return err
		}
		rowOf = make(map[int64]*storage.Due, len(rows))
		ids := make([]string, 0, len(rows))
		for i := range rows {
			rowOf[rows[i].ID] = &rows[i]
			ids = append(ids, rows[i].CustomerID)
		}
		ids = uniq(ids)
		if capped {
			// The per-recipient locks serialize cap counting across
			// daemons; without a cap there is nothing to count.
			if err := tx.LockContacts(d.ch.Kind, ids); err != nil {
				return err
			}
		}
		traits := make(map[string]map[string]sdk.Value, len(ids))
		recips := make(map[string]*Recipient, len(ids))
		hashes := make([]string, 0, 2*len(ids))
		for i := range rows {
			r := &rows[i]
			if r.Traits == nil {
				continue
			}
			if _, ok := recips[r.CustomerID]; ok {
				continue
			}
			vals, err := storedTraits(r.Traits, e.opt.Traits)
			if err != nil {
				vals = map[string]sdk.Value{}
			}
			traits[r.CustomerID] = vals
			rc := &Recipient{ID: r.CustomerID, Kind: d.ch.Kind, Address: Address(e.opt.Contacts, d.ch.Kind, vals),
				Location: Location(e.opt.Contacts, e.opt.Location, vals)}
			recips[r.CustomerID] = rc
			hashes = append(hashes, CustomerHash(r.CustomerID))
			if rc.Address != "" {
				hashes = append(hashes, AddressHash(rc.Address))
			}
		}
		// Consents, suppressions and (under a cap) the recent contacts in
		// one statement; any recipient's cap window starts at most Days+1
		// days back in UTC.
		var since time.Time
		if capped {
			since = now.AddDate(0, 0, -pol.Cap.Days-1)
		}
		in, err := tx.PolicyInputs(d.ch.Kind, ids, hashes, capped, since)
		if err != nil {
			return err
		}
		for id, r := range recips {
			r.Consents, r.Recent = in.Consents[id], in.Recent[id]
		}
		suppressed := func(h string) (string, bool) {
			s, ok := in.Suppressions[h]
			return s.Reason, ok
		}
		take := make([]int64, 0, len(rows))
		byID := make(map[int64]claimed, len(rows))
		for i := range rows {
			r := &rows[i]
			c := pl.set.Campaign(r.Campaign)
			switch {
			case c == nil:
				finish = addTo(finish, ReasonNoCampaign, r.ID)
				continue
			case c.Status == rules.StatusEnded:
				finish = addTo(finish, ReasonEnded, r.ID)
				continue
			case c.Status == rules.StatusPaused:
				defers = addTo(defers, deferral{now.Add(time.Minute), ReasonPaused}, r.ID)
				continue
			}
			rc, ok := recips[r.CustomerID]
			if !ok {
				finish = addTo(finish, "customer deleted", r.ID)
				continue
			}
			switch v := Check(*rc, e.opt.Messages.Consent, suppressed, pol, now); {
			case v.Skip != "":
				finish = addTo(finish, v.Skip, r.ID)
				continue
			case v.Defer != "":
				defers = addTo(defers, deferral{v.Until, v.Defer}, r.ID)
				continue
			}
			// A later row of the same customer in this batch counts this one.
			rc.Recent = append(rc.Recent, now)
			take = append(take, r.ID)
			byID[r.ID] = claimed{row: *r, traits: traits[r.CustomerID], to: rc.Address}
		}
		for why, ids := range finish {
			if err := tx.Finish(ids, storage.OutboxSkipped, why, now); err != nil {
				return err
			}
			settled += len(ids)
		}
		for k, ids := range defers {
			if err := tx.Defer(ids, k.at, k.reason); err != nil {
				return err
			}
			settled += len(ids)
		}
		got, err := tx.Claim(take, token, now, now.Add(2*d.ch.Timeout))
		if err != nil {
			return err
		}
		sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
		out = make([]claimed, 0, len(got))
		for _, id := range got {
			out = append(out, byID[id])
		}
		return nil
	})
	if err != nil {
		d.flush(ctx, prev)
		return nil, 0, err
	}
	if prev != nil {
		d.record(prev, applied)
	}
	for why, ids := range finish {
		for _, id := range ids {
			r := rowOf[id]
			e.m.messages.WithLabelValues(r.Campaign, r.Arm, d.ch.Name, storage.OutboxSkipped).Inc()
			e.log.Info("message skipped", "campaign", r.Campaign, "variant", r.Arm, "channel", d.ch.Name,
				"customer", r.CustomerID, "key", r.Key, "reason", why)
		}
	}
	debug := e.log.Enabled(ctx, slog.LevelDebug)
	for k, ids := range defers {
		for _, id := range ids {
			r := rowOf[id]
			e.m.deferred.WithLabelValues(r.Campaign, d.ch.Name, k.reason).Inc()
			if debug {
				e.log.Debug("message deferred", "campaign", r.Campaign, "variant", r.Arm, "channel", d.ch.Name,
					"customer", r.CustomerID, "key", r.Key, "reason", k.reason, "not_before", k.at.UTC())
			}
		}
	}
	return out, settled, nil
}

// addTo appends id to m[k], making m when nil.
func addTo[K comparable](m map[K][]int64, k K, id int64) map[K][]int64 {
	if m == nil {
		m = map[K][]int64{}
	}
	m[k] = append(m[k], id)
	return m
}

// send renders and sends claimed rows and returns their outcomes, not yet
// recorded.
func (d *dispatcher) send(ctx context.Context, rows []claimed, token string) *batch {
	e := d.e
	pl := e.plan.Load()
	now := e.opt.Now()
	msgs := make([]sdk.Message, 0, len(rows))
	byKey := make(map[string]*claimed, len(rows))
	comps := make([]storage.Completion, 0, len(rows))
	for i := range rows {
		c := &rows[i]
		byKey[c.row.Key] = c
		m, err := e.compose(pl, c, now)
		if err != nil {
			comps = append(comps, storage.Completion{ID: c.row.ID, Token: token, State: storage.OutboxFailed, Reason: err.Error()})
			continue
		}
		msgs = append(msgs, m)
	}
	if len(msgs) > 0 {
		// The call outlives a stopping daemon's context: an abandoned call
		// would leave its rows unknown when the answer may be moments away.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.ch.Timeout+5*time.Second)
		results, err := d.ch.Send(cctx, msgs)
		cancel()
		comps = d.outcomes(comps, msgs, byKey, results, err, token)
	}
	return &batch{rows: rows, comps: comps}
}

// flush records a sent batch's outcomes in a transaction of their own.
func (d *dispatcher) flush(ctx context.Context, b *batch) {
	if b == nil || len(b.comps) == 0 {
		return
	}
	e := d.e
	applied, err := e.db.Complete(context.WithoutCancel(ctx), b.comps, e.opt.Now())
	if err != nil {
		e.log.Error("outcomes not recorded; the rows stay sending until their leases end and are then reported unknown",
			"channel", d.ch.Name, "rows", len(b.comps), "err", err)
		return
	}
	d.record(b, applied)
}

// compose renders one message.
func (e *Engine) compose(pl *plan, c *claimed, now time.Time) (sdk.Message, error) {
	r := c.row
	data := message.Data{CustomerID: r.CustomerID, Campaign: r.Campaign, Variant: r.Arm,
		Traits: message.Traits(c.traits), PostalAddress: e.opt.Messages.PostalAddress}
	var headers []sdk.Header
	if e.opt.Signer != nil && r.Kind != "webhook" {
		u := e.opt.Signer.URL(e.opt.Messages.PublicURL, unsubscribe.Claims{CustomerID: r.CustomerID, Kind: r.Kind, Campaign: r.Campaign, Issued: now})
		data.UnsubscribeURL = u
		if r.Kind == "email" {
			headers = unsubscribe.Headers(u)
		}
	}
	if pl.msgs == nil {
		return sdk.Message{}, fmt.Errorf("%s: no templates compiled", ReasonRender)
	}
	content, err := pl.msgs.Render(r.Campaign, r.Arm, data)
	if err != nil {
		return sdk.Message{}, fmt.Errorf("%s: %w", ReasonRender, err)
	}
	m := sdk.Message{Key: r.Key, CustomerID: r.CustomerID, To: c.to, Subject: content.Subject, Text: content.Text, HTML: content.HTML,
		Headers: headers, Metadata: map[string]string{"campaign": r.Campaign, "variant": r.Arm}}
	if r.Kind == "email" {
		m.From, m.ReplyTo = e.opt.Messages.From, e.opt.Messages.ReplyTo
	}
	return m, nil
}

// outcomes maps a Send's answer to completions, appended to comps.
func (d *dispatcher) outcomes(comps []storage.Completion, msgs []sdk.Message, byKey map[string]*claimed, results []sdk.Result, callErr error, token string) []storage.Completion {
	e := d.e
	now := e.opt.Now()
	if callErr != nil {
		notSent := errors.Is(callErr, ErrNotSent)
		state, reason := storage.OutboxUnknown, "call failed: "+callErr.Error()
		switch {
		case notSent:
			state, reason = storage.OutboxPending, ""
		case d.ch.Resend:
			state = storage.OutboxPending
		}
		for _, m := range msgs {
			c := byKey[m.Key]
			comp := storage.Completion{ID: c.row.ID, Token: token, State: state, Reason: reason}
			if state == storage.OutboxPending {
				comp = d.retry(c, comp, 0, "call failed: "+callErr.Error(), now)
			}
			comps = append(comps, comp)
		}
		e.log.Warn("channel call failed", "channel", d.ch.Name, "messages", len(msgs), "outcome", state, "err", callErr)
		return comps
	}
	got := make(map[string]sdk.Result, len(results))
	for _, r := range results {
		got[r.Key] = r
	}
	unindexed := d.ch.NoEvents != nil && d.ch.NoEvents()
	for _, m := range msgs {
		c := byKey[m.Key]
		comp := storage.Completion{ID: c.row.ID, Token: token}
		r, ok := got[m.Key]
		if !ok {
			r = sdk.Result{Status: sdk.OutcomeUnknown, Reason: "the plugin returned no result for this message"}
		}
		reason := r.Reason
		if r.Code != "" {
			reason = r.Code + ": " + reason
		}
		// A plugin's Retry-After is trusted up to a day: a garbled or
		// overflowed header must not park a message for years.
		r.RetryAfter = min(r.RetryAfter, maxRetryAfter)
		switch r.Status {
		case sdk.Accepted:
			comp.State, comp.ProviderID, comp.Unindexed = storage.OutboxSent, r.ProviderID, unindexed
		case sdk.Retryable:
			if rateLimited(r) {
				// The provider set the pace: waiting is not a failure.
				comp.State, comp.Reason, comp.NotBefore, comp.Uncounted = storage.OutboxPending, reason, now.Add(max(r.RetryAfter, time.Second)), true
				break
			}
			comp = d.retry(c, comp, r.RetryAfter, reason, now)
		case sdk.Permanent:
			comp.State, comp.Reason = storage.OutboxFailed, reason
		case sdk.Suppress:
			comp.State, comp.Reason = storage.OutboxSkipped, ReasonSuppressed+": "+reason
			e.suppressAddress(d.ch.Kind, m.To, "provider: "+reason, d.ch.Name)
		default:
			comp.State, comp.Reason = storage.OutboxUnknown, reason
			if d.ch.Resend {
				comp = d.retry(c, comp, 0, reason, now)
			}
		}
		comps = append(comps, comp)
	}
	return comps
}

// maxRetryAfter bounds the wait a plugin's result can ask for.
const maxRetryAfter = 24 * time.Hour

// rateLimited reports whether a retryable result is the provider's rate
// limit (HTTP 429, Twilio 20429) or a request that never left ("not_sent"):
// such retries do not count toward messages.max_attempts, so a long 429
// storm delays messages but never fails them.
func rateLimited(r sdk.Result) bool {
	switch r.Code {
	case "429", "20429", "not_sent":
		return true
	}
	return false
}

// retry makes a completion a retry with jittered exponential backoff (at
// least retryAfter), or a failure once attempts are exhausted.
func (d *dispatcher) retry(c *claimed, comp storage.Completion, retryAfter time.Duration, reason string, now time.Time) storage.Completion {
	attempts := c.row.Attempts + 1 // the claim counted this one
	if attempts >= d.e.opt.Messages.MaxAttempts {
		comp.State, comp.Reason = storage.OutboxFailed, fmt.Sprintf("%s after %d attempts: %s", ReasonRetries, attempts, reason)
		return comp
	}
	// The provider's Retry-After / X-RateLimit-Reset is the schedule; the
	// exponential backoff with jitter applies only when it gave none (a
	// storm refusing half the requests would otherwise push the unlucky
	// last rows minutes out).
	wait := retryAfter
	if wait <= 0 {
		base := time.Second * time.Duration(math.Pow(2, float64(attempts-1)))
		base = min(base, 10*time.Minute)
		wait = base/2 + time.Duration(mrand.Int64N(int64(base/2)+1))
	}
	comp.State, comp.Reason, comp.NotBefore = storage.OutboxPending, reason, now.Add(wait)
	return comp
}

// record counts and logs a batch's outcomes that were applied.
func (d *dispatcher) record(b *batch, applied []int64) {
	ok := make(map[int64]bool, len(applied))
	for _, id := range applied {
		ok[id] = true
	}
	rowByID := make(map[int64]*claimed, len(b.rows))
	for i := range b.rows {
		rowByID[b.rows[i].row.ID] = &b.rows[i]
	}
	stale := 0
	type key struct{ campaign, arm, outcome string }
	counts := map[key]int{}
	for _, c := range b.comps {
		if !ok[c.ID] {
			stale++
			continue
		}
		r := rowByID[c.ID]
		outcome := c.State
		if outcome == storage.OutboxPending {
			outcome = "retry"
		}
		counts[key{r.row.Campaign, r.row.Arm, outcome}]++
		if c.State != storage.OutboxSent {
			d.e.log.Info("message outcome", "campaign", r.row.Campaign, "variant", r.row.Arm, "channel", d.ch.Name,
				"customer", r.row.CustomerID, "key", r.row.Key, "outcome", outcome, "reason", c.Reason)
		}
	}
	for k, n := range counts {
		d.e.m.messages.WithLabelValues(k.campaign, k.arm, d.ch.Name, k.outcome).Add(float64(n))
	}
	if stale > 0 {
		d.e.log.Warn("late outcomes ignored: their leases had been taken over", "channel", d.ch.Name, "rows", stale)
	}
}

// Address is a customer's address on a channel kind: the email or phone
// contact trait ("" for webhook channels, or when the customer has none).
func Address(c Contacts, kind string, vals map[string]sdk.Value) string {
	var name string
	switch kind {
	case "email":
		name = c.Email
	case "sms":
		name = c.Phone
	default:
		return ""
	}
	if v, ok := vals[name]; ok && v.Type == sdk.TypeString {
		return v.Str
	}
	return ""
}

// Location is a customer's time zone: the timezone contact trait when it
// names a zone, else def.
func Location(c Contacts, def *time.Location, vals map[string]sdk.Value) *time.Location {
	if c.Timezone != "" {
		if v, ok := vals[c.Timezone]; ok && v.Type == sdk.TypeString && v.Str != "" {
			if l, err := loadLocation(v.Str); err == nil {
				return l
			}
		}
	}
	return def
}

// suppressAddress adds an address to the suppression list.
func (e *Engine) suppressAddress(kind, addr, reason, source string) {
	if addr == "" {
		return
	}
	err := e.db.AddSuppressions(context.Background(), []storage.Suppression{{Kind: kind, Hash: AddressHash(addr), Reason: reason,
		Source: source, Created: e.opt.Now()}})
	if err != nil {
		e.log.Error("suppression not recorded", "kind", kind, "source", source, "err", err)
	}
}

func uniq(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := ids[:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
