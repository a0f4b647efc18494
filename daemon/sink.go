package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
)

// webhookSink commits what plugins return from webhooks.
//
// Source webhook calls are group-committed: calls that arrive while a
// commit is under way queue, and the next commit takes all of them (up to
// groupMaxRecords records) as one batch: one ingest transaction, then one
// incremental segment pass over every customer they touched. A call is
// answered only after that commit and its segment changes are persisted.
// At 1,000 single-event calls per second this turns ~2,000 small write
// transactions a second, more than SQLite can serve, into a few dozen.
type webhookSink struct {
	ingest *ingest.Ingester

	mu         sync.Mutex
	validators map[string]*ingest.Validator
	group      *groupCommitter // made on first use
	deliveries func(ctx context.Context, instance string, evs []sdk.DeliveryEvent) error
}

func (s *webhookSink) committer() *groupCommitter {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.group == nil {
		s.group = newGroupCommitter(s.commit)
	}
	return s.group
}

func (s *webhookSink) setValidator(source string, v *ingest.Validator) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.validators[source] = v
}

// start group-commits webhook batches in a goroutine (tracked by wg) until
// ctx is done; calls queued then, or made before start, are answered with
// an error (the HTTP answer is 503 and providers retry).
func (s *webhookSink) start(ctx context.Context, wg *sync.WaitGroup) { s.committer().start(ctx, wg) }

// SourceBatch commits a source webhook's data like a pulled batch, except
// that it never moves the source's pull cursor. It returns once the data
// and the segment changes it caused are committed, or when ctx is done.
func (s *webhookSink) SourceBatch(ctx context.Context, instance string, b *sdk.Batch) error {
	s.mu.Lock()
	v := s.validators[instance]
	s.mu.Unlock()
	if v == nil {
		return fmt.Errorf("source %q is not running yet", instance)
	}
	cp := *b
	cp.Cursor, cp.CaughtUp = "", false
	return s.committer().submit(ctx, instance, &cp)
}

// commit commits one (possibly merged) batch of a source.
func (s *webhookSink) commit(ctx context.Context, source string, b *sdk.Batch) error {
	s.mu.Lock()
	v := s.validators[source]
	s.mu.Unlock()
	if v == nil {
		return fmt.Errorf("source %q is not running yet", source)
	}
	return s.ingest.Commit(ctx, v, b)
}

// DeliveryEvents records a channel webhook's delivery events with the
// campaign engine. Before the engine runs they are refused rather than
// dropped (the webhook answers 503 and providers retry).
func (s *webhookSink) DeliveryEvents(ctx context.Context, instance string, evs []sdk.DeliveryEvent) error {
	s.mu.Lock()
	f := s.deliveries
	s.mu.Unlock()
	if f == nil {
		return errors.New("delivery events not recorded: the daemon is starting; retry later")
	}
	return f(ctx, instance, evs)
}

func (s *webhookSink) setDeliveries(f func(ctx context.Context, instance string, evs []sdk.DeliveryEvent) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deliveries = f
}

const (
	// groupMaxRecords caps the customers, deletes, events and consents of
	// one group commit, so one transaction stays short (a single larger
	// batch is committed alone).
	groupMaxRecords = 2000
	// groupMaxCallers caps the calls of one group commit.
	groupMaxCallers = 512
	// groupCommitTimeout bounds one group's commit (ingest transaction and
	// incremental pass).
	groupCommitTimeout = 30 * time.Second
)

// errSinkStopped answers calls queued or made after the committer stopped.
var errSinkStopped = errors.New("webhook data not committed: the daemon is stopping or not started; retry later")

// commitFunc commits one batch of one source.
type commitFunc func(ctx context.Context, source string, b *sdk.Batch) error

// groupCommitter merges the batches of concurrent callers into one commit.
//
// A group is a prefix of the queue: batches of one source whose customers
// do not overlap (no customer upserted or deleted by two of them, no
// customer deleted by one and given an event or consent by another), so the
// merged batch commits exactly what committing them one after another
// would, in the same order. When a group's commit fails, each of its
// batches is retried alone and each caller gets its own batch's result: a
// poisoned batch fails only its caller.
//
// A caller whose context ends stops waiting at once. If its batch was still
// queued it is dropped; if it was already being committed it may still be
// committed (the caller sees the context error, its webhook answers 503,
// and the provider's retry is deduplicated by event id).
type groupCommitter struct {
	commit commitFunc
	// maxRecords and maxCallers cap a group (tests lower them).
	maxRecords, maxCallers int

	wake chan struct{} // capacity 1: the queue has work

	mu      sync.Mutex
	queue   []*groupCall
	running bool
	stopped bool
}

type groupCall struct {
	ctx    context.Context
	source string
	batch  *sdk.Batch
	done   chan error // capacity 1: answered exactly once
}

func newGroupCommitter(commit commitFunc) *groupCommitter {
	return &groupCommitter{commit: commit, maxRecords: groupMaxRecords, maxCallers: groupMaxCallers,
		wake: make(chan struct{}, 1)}
}

// submit queues b and waits for its commit, or for ctx.
func (g *groupCommitter) submit(ctx context.Context, source string, b *sdk.Batch) error {
	c := &groupCall{ctx: ctx, source: source, batch: b, done: make(chan error, 1)}
	g.mu.Lock()
	if g.stopped || !g.running {
		g.mu.Unlock()
		return errSinkStopped
	}
	g.queue = append(g.queue, c)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("webhook data from %q: %w", source, ctx.Err())
	}
}

// queued returns how many calls wait for a group (tests).
func (g *groupCommitter) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// start runs the committer in a goroutine tracked by wg.
func (g *groupCommitter) start(ctx context.Context, wg *sync.WaitGroup) {
	g.mu.Lock()
	g.running = true
	g.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.run(ctx)
	}()
}

// run commits groups until ctx is done, then answers what is still queued.
func (g *groupCommitter) run(ctx context.Context) {
	defer func() {
		g.mu.Lock()
		g.stopped = true
		q := g.queue
		g.queue = nil
		g.mu.Unlock()
		for _, c := range q {
			c.done <- errSinkStopped
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.wake:
		}
		for ctx.Err() == nil {
			group := g.take()
			if len(group) == 0 {
				break
			}
			g.commitGroup(ctx, group)
		}
	}
}

// take removes the next group from the queue, answering calls whose
// context already ended.
func (g *groupCommitter) take() []*groupCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	var (
		group   []*groupCall
		records int
		keys    = map[string]bool{} // customers upserted or deleted
		deleted = map[string]bool{}
		touched = map[string]bool{} // customers given events or consents
	)
	i := 0
	for ; i < len(g.queue) && len(group) < g.maxCallers; i++ {
		c := g.queue[i]
		if err := c.ctx.Err(); err != nil {
			c.done <- err
			continue
		}
		n := batchRecords(c.batch)
		if len(group) > 0 && (c.source != group[0].source || records+n > g.maxRecords || conflicts(c.batch, keys, deleted, touched)) {
			break
		}
		group = append(group, c)
		records += n
		for _, cu := range c.batch.Customers {
			keys[cu.ID] = true
		}
		for _, id := range c.batch.Deletes {
			keys[id], deleted[id] = true, true
		}
		for _, e := range c.batch.Events {
			touched[e.CustomerID] = true
		}
		for _, cs := range c.batch.Consents {
			touched[cs.CustomerID] = true
		}
	}
	g.queue = append(g.queue[:0], g.queue[i:]...)
	return group
}

func batchRecords(b *sdk.Batch) int {
	return len(b.Customers) + len(b.Deletes) + len(b.Events) + len(b.Consents)
}

// conflicts reports whether committing b merged into a group could differ
// from committing it after the group.
func conflicts(b *sdk.Batch, keys, deleted, touched map[string]bool) bool {
	for _, c := range b.Customers {
		if keys[c.ID] {
			return true
		}
	}
	for _, id := range b.Deletes {
		if keys[id] || touched[id] {
			return true
		}
	}
	for _, e := range b.Events {
		if deleted[e.CustomerID] {
			return true
		}
	}
	for _, c := range b.Consents {
		if deleted[c.CustomerID] {
			return true
		}
	}
	return false
}

// commitGroup commits a group as one batch; when that fails, each batch is
// committed alone so that only the callers whose data fails get an error.
func (g *groupCommitter) commitGroup(ctx context.Context, group []*groupCall) {
	one := func(c *groupCall) {
		cctx, cancel := context.WithTimeout(ctx, groupCommitTimeout)
		defer cancel()
		c.done <- g.commit(cctx, c.source, c.batch)
	}
	if len(group) == 1 {
		one(group[0])
		return
	}
	merged := &sdk.Batch{}
	for _, c := range group {
		b := c.batch
		merged.Customers = append(merged.Customers, b.Customers...)
		merged.Deletes = append(merged.Deletes, b.Deletes...)
		merged.Events = append(merged.Events, b.Events...)
		merged.Consents = append(merged.Consents, b.Consents...)
		merged.Problems = append(merged.Problems, b.Problems...)
	}
	cctx, cancel := context.WithTimeout(ctx, groupCommitTimeout)
	err := g.commit(cctx, group[0].source, merged)
	cancel()
	if err == nil {
		for _, c := range group {
			c.done <- nil
		}
		return
	}
	for _, c := range group {
		switch {
		case ctx.Err() != nil:
			c.done <- err
		case c.ctx.Err() != nil:
			c.done <- c.ctx.Err()
		default:
			one(c)
		}
	}
}
