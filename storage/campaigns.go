package storage

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Outbox states (DESIGN.md section 6).
const (
	OutboxPending = "pending"
	OutboxSending = "sending"
	OutboxSent    = "sent"
	OutboxFailed  = "failed"
	OutboxSkipped = "skipped"
	OutboxUnknown = "unknown"
)

// CampaignState is what the planner keeps per campaign.
type CampaignState struct {
	Campaign string
	// Fingerprint identifies the definition (segment rule, trigger) the
	// baseline was taken for; a new one starts a new baseline.
	Fingerprint string
	// Cursor is the last segment_changes seq the campaign has read.
	Cursor   int64
	Baseline time.Time
	// LastCron is the last cron fire turned into occurrences.
	LastCron time.Time
	// Weights identifies the variant weights of the current Epoch.
	Weights string
	Epoch   int
	// Winner is the variant new entrants get once the winner test decided.
	Winner string
	// Experiment is the winner test's persisted state (JSON).
	Experiment []byte
}

// WriteTx is Tx for transactions that read before they write. On SQLite
// it begins IMMEDIATE on a pinned connection, taking the write lock up
// front: a deferred transaction that reads first cannot upgrade to a writer
// once another connection has committed (SQLITE_BUSY_SNAPSHOT, which the
// busy timeout does not wait out). (The driver ignores the DSN's _txlock
// when _time_format is also given.)
func (db *DB) WriteTx(ctx context.Context, fn func(*Tx) error) error {
	if db.dialect != SQLite {
		return db.Tx(ctx, fn)
	}
	return db.txSession(ctx).Connection(func(g *gorm.DB) error {
		if err := g.Exec("BEGIN IMMEDIATE").Error; err != nil {
			return err
		}
		if err := fn(&Tx{g: g, dialect: db.dialect}); err != nil {
			g.Exec("ROLLBACK")
			return err
		}
		if err := g.Exec("COMMIT").Error; err != nil {
			g.Exec("ROLLBACK")
			return err
		}
		return nil
	})
}

// CampaignStates returns every campaign's state by name.
func (db *DB) CampaignStates(ctx context.Context) (map[string]CampaignState, error) {
	rows, err := db.session(ctx).Raw(`SELECT campaign, fingerprint, cursor, baseline_ms, last_cron_ms, weights, epoch, winner, experiment
		FROM campaign_state`).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: campaign states: %w", err)
	}
	defer rows.Close()
	out := map[string]CampaignState{}
	for rows.Next() {
		var (
			s          CampaignState
			base, cron int64
			epoch      int64
			experiment string
		)
		if err := rows.Scan(&s.Campaign, &s.Fingerprint, &s.Cursor, &base, &cron, &s.Weights, &epoch, &s.Winner, &experiment); err != nil {
			return nil, fmt.Errorf("storage: campaign states: %w", err)
		}
		s.Baseline, s.Epoch, s.Experiment = msTime(base), int(epoch), []byte(experiment)
		if cron != 0 {
			s.LastCron = msTime(cron)
		}
		out[s.Campaign] = s
	}
	return out, rows.Err()
}

// PutCampaignState inserts or replaces a campaign's state.
func (tx *Tx) PutCampaignState(s CampaignState) error {
	err := tx.g.Exec(`INSERT INTO campaign_state (campaign, fingerprint, cursor, baseline_ms, last_cron_ms, weights, epoch, winner, experiment, updated_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (campaign) DO UPDATE SET fingerprint = excluded.fingerprint, cursor = excluded.cursor,
			baseline_ms = excluded.baseline_ms, last_cron_ms = excluded.last_cron_ms, weights = excluded.weights,
			epoch = excluded.epoch, winner = excluded.winner, experiment = excluded.experiment, updated_ms = excluded.updated_ms`,
		s.Campaign, s.Fingerprint, s.Cursor, timeMS(s.Baseline), timeMS(s.LastCron), s.Weights, s.Epoch, s.Winner,
		string(s.Experiment), time.Now().UnixMilli()).Error
	if err != nil {
		return fmt.Errorf("storage: campaign %q state: %w", s.Campaign, err)
	}
	return nil
}

// PutCampaignState is Tx.PutCampaignState in its own transaction.
func (db *DB) PutCampaignState(ctx context.Context, s CampaignState) error {
	return db.Tx(ctx, func(tx *Tx) error { return tx.PutCampaignState(s) })
}

// LastSegmentSeq is the highest segment_changes seq of a segment written by
// a pass up to and including pass (0 if none).
func (db *DB) LastSegmentSeq(ctx context.Context, segment string, pass int64) (int64, error) {
	var seq sql.NullInt64
	err := db.session(ctx).Raw("SELECT MAX(seq) FROM segment_changes WHERE segment = ? AND pass <= ?", segment, pass).Scan(&seq).Error
	if err != nil {
		return 0, fmt.Errorf("storage: last change of segment %q: %w", segment, err)
	}
	return seq.Int64, nil
}

// SegmentChangesOf returns up to limit changes of one segment after seq.
func (db *DB) SegmentChangesOf(ctx context.Context, segment string, after int64, limit int) ([]SegmentChange, error) {
	rows, err := db.session(ctx).Raw(`SELECT seq, segment, customer_id, change, at, pass FROM segment_changes
		WHERE segment = ? AND seq > ? ORDER BY seq LIMIT ?`, segment, after, limit).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: changes of segment %q: %w", segment, err)
	}
	defer rows.Close()
	var out []SegmentChange
	for rows.Next() {
		var c SegmentChange
		if err := rows.Scan(&c.Seq, &c.Segment, &c.CustomerID, &c.Change, &c.At, &c.Pass); err != nil {
			return nil, fmt.Errorf("storage: changes of segment %q: %w", segment, err)
		}
		c.At = c.At.UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

// Assignment is a customer's arm in a campaign, fixed at first assignment.
type Assignment struct {
	Campaign   string
	CustomerID string
	// Arm is a variant name, or "holdout".
	Arm      string
	Holdout  bool
	Epoch    int
	Assigned time.Time
	// Last is the customer's latest occurrence; Occurrences counts them.
	Last        time.Time
	Occurrences int
}

// Assignments returns the stored assignments of customers in a campaign.
func (tx *Tx) Assignments(campaign string, ids []string) (map[string]Assignment, error) {
	out := make(map[string]Assignment, len(ids))
	for lo := 0; lo < len(ids); lo += 500 {
		hi := min(lo+500, len(ids))
		rows, err := tx.g.Raw(`SELECT customer_id, arm, holdout, epoch, assigned_ms, last_ms, occurrences FROM campaign_assignments
			WHERE campaign = ? AND customer_id IN ?`, campaign, ids[lo:hi]).Rows()
		if err != nil {
			return nil, fmt.Errorf("storage: assignments of %q: %w", campaign, err)
		}
		for rows.Next() {
			a := Assignment{Campaign: campaign}
			var holdout, epoch, assigned, last, n int64
			if err := rows.Scan(&a.CustomerID, &a.Arm, &holdout, &epoch, &assigned, &last, &n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: assignments of %q: %w", campaign, err)
			}
			a.Holdout, a.Epoch, a.Assigned, a.Last, a.Occurrences = holdout != 0, int(epoch), msTime(assigned), msTime(last), int(n)
			out[a.CustomerID] = a
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: assignments of %q: %w", campaign, err)
		}
	}
	return out, nil
}

// Assignment returns one customer's assignment, or ErrNotFound.
func (db *DB) Assignment(ctx context.Context, campaign, customerID string) (Assignment, error) {
	var a Assignment
	err := db.Tx(ctx, func(tx *Tx) error {
		m, err := tx.Assignments(campaign, []string{customerID})
		if err != nil {
			return err
		}
		var ok bool
		if a, ok = m[customerID]; !ok {
			return fmt.Errorf("customer %q in campaign %q: %w", customerID, campaign, ErrNotFound)
		}
		return nil
	})
	return a, err
}

// PutAssignments inserts new assignments and, for existing ones, records the
// occurrence (last time and count); the arm is never changed.
func (tx *Tx) PutAssignments(as []Assignment) error {
	return tx.chunked(`INSERT INTO campaign_assignments (campaign, customer_id, arm, holdout, epoch, assigned_ms, last_ms, occurrences) VALUES `,
		8, ` ON CONFLICT (campaign, customer_id) DO UPDATE SET last_ms = excluded.last_ms,
			occurrences = campaign_assignments.occurrences + 1`, len(as), func(lo, hi int) ([]any, error) {
			args := make([]any, 0, (hi-lo)*8)
			for _, a := range as[lo:hi] {
				args = append(args, a.Campaign, a.CustomerID, a.Arm, boolInt(a.Holdout), a.Epoch, a.Assigned.UnixMilli(), a.Last.UnixMilli(), 1)
			}
			return args, nil
		})
}

// OutboxRow is one message of the outbox.
type OutboxRow struct {
	ID         int64
	Key        string
	Campaign   string
	Occurrence string
	CustomerID string
	Channel    string
	Kind       string
	Arm        string
	State      string
	NotBefore  time.Time
	LeaseToken string
	LeaseUntil time.Time
	Attempts   int
	ProviderID string
	Reason     string
	// Deferrals counts policy deferrals; DeferReason is the latest.
	Deferrals   int
	DeferReason string
	// Delivery is the latest delivery event type (delivered, opened, ...).
	Delivery string
	Created  time.Time
	Claimed  time.Time
	Done     time.Time
}

// Enqueue inserts outbox rows as pending; a row whose key exists is left
// alone. It returns how many rows it offered.
func (tx *Tx) Enqueue(rows []OutboxRow) (int, error) {
	n := 0
	err := tx.chunked(`INSERT INTO outbox (key, campaign, occurrence, customer_id, channel, kind, arm, state, not_before_ms, created_ms) VALUES `,
		10, ` ON CONFLICT (key) DO NOTHING`, len(rows), func(lo, hi int) ([]any, error) {
			args := make([]any, 0, (hi-lo)*10)
			for _, r := range rows[lo:hi] {
				args = append(args, r.Key, r.Campaign, r.Occurrence, r.CustomerID, r.Channel, r.Kind, r.Arm, OutboxPending,
					timeMS(r.NotBefore), r.Created.UnixMilli())
			}
			n += hi - lo
			return args, nil
		})
	if err != nil {
		return 0, fmt.Errorf("storage: enqueue: %w", err)
	}
	if tx.dialect == Postgres && len(rows) >= analyzeAfter {
		// Fresh statistics: with the table's last ones taken before a
		// campaign's rows arrived, the planner believes few rows are pending
		// and claims through a scan of every pending row (outbox_campaign)
		// instead of the primary key. ANALYZE in the transaction counts its
		// own inserted rows.
		if err := tx.g.Exec(`ANALYZE outbox`).Error; err != nil {
			return 0, fmt.Errorf("storage: enqueue: analyze: %w", err)
		}
	}
	return n, nil
}

// analyzeAfter is the enqueue size from which the outbox's planner
// statistics are refreshed (PostgreSQL).
const analyzeAfter = 1000

const outboxCols = `id, key, campaign, occurrence, customer_id, channel, kind, arm, state, not_before_ms, lease_token,
	lease_until_ms, attempts, provider_id, reason, deferrals, defer_reason, delivery, created_ms, claimed_ms, done_ms`

func scanOutbox(rows *sql.Rows) (OutboxRow, error) {
	var (
		r                               OutboxRow
		nb, lu, att, defs, cr, cl, done int64
	)
	err := rows.Scan(&r.ID, &r.Key, &r.Campaign, &r.Occurrence, &r.CustomerID, &r.Channel, &r.Kind, &r.Arm, &r.State, &nb,
		&r.LeaseToken, &lu, &att, &r.ProviderID, &r.Reason, &defs, &r.DeferReason, &r.Delivery, &cr, &cl, &done)
	r.NotBefore, r.LeaseUntil, r.Attempts, r.Deferrals = optTime(nb), optTime(lu), int(att), int(defs)
	r.Created, r.Claimed, r.Done = msTime(cr), optTime(cl), optTime(done)
	return r, err
}

func (tx *Tx) outboxQuery(q string, args ...any) ([]OutboxRow, error) {
	rows, err := tx.g.Raw(q, args...).Rows()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OutboxRow
	for rows.Next() {
		r, err := scanOutbox(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// DueOutbox returns up to limit pending rows of a channel whose not_before
// has passed, oldest first. On PostgreSQL the rows are locked FOR UPDATE
// SKIP LOCKED, so concurrent dispatchers claim disjoint rows.
func (tx *Tx) DueOutbox(channel string, now time.Time, limit int) ([]OutboxRow, error) {
	q := `SELECT ` + outboxCols + ` FROM outbox WHERE channel = ? AND state = 'pending' AND not_before_ms <= ?
		ORDER BY not_before_ms, id LIMIT ?`
	if tx.dialect == Postgres {
		q += ` FOR UPDATE SKIP LOCKED`
	}
	rows, err := tx.outboxQuery(q, channel, now.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("storage: due rows of %q: %w", channel, err)
	}
	return rows, nil
}

// Due is a due outbox row as a dispatcher claims it: the columns sending
// needs, and the customer's stored traits read in the same query.
type Due struct {
	ID         int64
	Key        string
	Campaign   string
	CustomerID string
	Kind       string
	Arm        string
	Attempts   int
	// Traits is the customer's stored traits (JSON), nil when the customer
	// no longer exists.
	Traits []byte
}

// DueForClaim is DueOutbox for a claim: the same rows in the same order
// (locked FOR UPDATE SKIP LOCKED on PostgreSQL), each with only what a
// dispatcher reads and with its customer's traits.
func (tx *Tx) DueForClaim(channel string, now time.Time, limit int) ([]Due, error) {
	q := qDueSQLite
	if tx.dialect == Postgres {
		q = qDuePostgres
	}
	rows, err := tx.pool().QueryContext(tx.ctx(), q, channel, now.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("storage: due rows of %q: %w", channel, err)
	}
	defer rows.Close()
	out := make([]Due, 0, limit)
	for rows.Next() {
		var (
			d   Due
			att int64
		)
		if err := rows.Scan(&d.ID, &d.Key, &d.Campaign, &d.CustomerID, &d.Kind, &d.Arm, &att, &d.Traits); err != nil {
			return nil, fmt.Errorf("storage: due rows of %q: %w", channel, err)
		}
		d.Attempts = int(att)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: due rows of %q: %w", channel, err)
	}
	return out, nil
}

// CompleteThenDue is Complete(cs, now) followed by DueForClaim(channel,
// now, limit), in one statement on PostgreSQL (one round trip less per
// claim): the due rows are read as they were before the completions, which
// never make a row due at once (a retry waits at least its backoff).
func (tx *Tx) CompleteThenDue(cs []Completion, now time.Time, channel string, limit int) ([]int64, []Due, error) {
	if tx.dialect != Postgres || len(cs) == 0 || len(cs) > completeChunk {
		var applied []int64
		if len(cs) > 0 {
			var err error
			if applied, err = tx.Complete(cs, now); err != nil {
				return nil, nil, err
			}
		}
		due, err := tx.DueForClaim(channel, now, limit)
		return applied, due, err
	}
	args := append(pgCompleteArgs(cs, now), channel, now.UnixMilli(), limit)
	rows, err := tx.pool().QueryContext(tx.ctx(), qCompleteThenDuePostgres, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("storage: complete and due rows of %q: %w", channel, err)
	}
	defer rows.Close()
	applied := make([]int64, 0, len(cs))
	out := make([]Due, 0, limit)
	for rows.Next() {
		var (
			part, att, nb int64
			d             Due
		)
		if err := rows.Scan(&part, &d.ID, &d.Key, &d.Campaign, &d.CustomerID, &d.Kind, &d.Arm, &att, &d.Traits, &nb); err != nil {
			return nil, nil, fmt.Errorf("storage: complete and due rows of %q: %w", channel, err)
		}
		if part == 1 {
			applied = append(applied, d.ID)
			continue
		}
		d.Attempts = int(att)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("storage: complete and due rows of %q: %w", channel, err)
	}
	return applied, out, nil
}

// qCompleteThenDuePostgres: part 0 rows are the due rows in claim order
// (DueForClaim's), part 1 the completed ids.
const qCompleteThenDuePostgres = `WITH done AS (` + qCompletePostgres + `),
	due AS (SELECT o.id, o.key, o.campaign, o.customer_id, o.kind, o.arm, o.attempts, o.not_before_ms FROM outbox o
		WHERE o.channel = $10 AND o.state = 'pending' AND o.not_before_ms <= $11
		ORDER BY o.not_before_ms, o.id LIMIT $12 FOR UPDATE SKIP LOCKED)
	SELECT 0, d.id, d.key, d.campaign, d.customer_id, d.kind, d.arm, d.attempts, c.traits::text, d.not_before_ms
		FROM due d LEFT JOIN customers c ON c.id = d.customer_id
	UNION ALL SELECT 1, id, '', '', '', '', '', 0, NULL, 0 FROM done
	ORDER BY 1, 10, 2`

const qDue = `SELECT o.id, o.key, o.campaign, o.customer_id, o.kind, o.arm, o.attempts, c.traits
	FROM outbox o LEFT JOIN customers c ON c.id = o.customer_id
	WHERE o.channel = ? AND o.state = 'pending' AND o.not_before_ms <= ?
	ORDER BY o.not_before_ms, o.id LIMIT ?`

var (
	qDueSQLite   = qDue
	qDuePostgres = pgPlaceholders(qDue + ` FOR UPDATE OF o SKIP LOCKED`)
)

// LockContacts takes a per-recipient transaction lock for each customer on a
// channel kind (PostgreSQL advisory locks, in a fixed order so two claims
// cannot deadlock), so frequency caps counted next cannot be passed by two
// dispatchers at once. On SQLite the write lock already serializes claims.
func (tx *Tx) LockContacts(kind string, ids []string) error {
	if tx.dialect != Postgres || len(ids) == 0 {
		return nil
	}
	keys := make([]int64, 0, len(ids))
	seen := map[int64]bool{}
	for _, id := range ids {
		h := fnv.New64a()
		h.Write([]byte(kind))
		h.Write([]byte{0})
		h.Write([]byte(id))
		k := int64(h.Sum64())
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	if _, err := tx.pool().ExecContext(tx.ctx(), `SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k`, pgInt8Array(keys)); err != nil {
		return fmt.Errorf("storage: lock recipients: %w", err)
	}
	return nil
}

// RecentContacts returns, per customer, the claim times of messages of a
// kind claimed at or after since that count against frequency caps (sent,
// sending or unknown).
func (tx *Tx) RecentContacts(kind string, ids []string, since time.Time) (map[string][]time.Time, error) {
	out := map[string][]time.Time{}
	if len(ids) == 0 {
		return out, nil
	}
	q := `SELECT customer_id, claimed_ms FROM outbox WHERE customer_id IN (SELECT value FROM json_each(?)) AND kind = ?
		AND claimed_ms >= ? AND state IN ('sent', 'sending', 'unknown')`
	if tx.dialect == Postgres {
		q = `SELECT customer_id, claimed_ms FROM outbox WHERE customer_id = ANY($1::text[]) AND kind = $2
		AND claimed_ms >= $3 AND state IN ('sent', 'sending', 'unknown')`
	}
	rows, err := tx.pool().QueryContext(tx.ctx(), q, tx.textList(ids), kind, since.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("storage: recent contacts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id string
			ms int64
		)
		if err := rows.Scan(&id, &ms); err != nil {
			return nil, fmt.Errorf("storage: recent contacts: %w", err)
		}
		out[id] = append(out[id], msTime(ms))
	}
	return out, rows.Err()
}

// ConsentsOf returns the consent records of customers, oldest first.
func (tx *Tx) ConsentsOf(ids []string) (map[string][]Consent, error) {
	out := map[string][]Consent{}
	if len(ids) == 0 {
		return out, nil
	}
	q := `SELECT seq, customer_id, kind, status, time_ms, source, basis FROM consents
		WHERE customer_id IN (SELECT value FROM json_each(?)) ORDER BY time_ms, seq`
	if tx.dialect == Postgres {
		q = `SELECT seq, customer_id, kind, status, time_ms, source, basis FROM consents
		WHERE customer_id = ANY($1::text[]) ORDER BY time_ms, seq`
	}
	rows, err := tx.pool().QueryContext(tx.ctx(), q, tx.textList(ids))
	if err != nil {
		return nil, fmt.Errorf("storage: consents: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			c  Consent
			ms int64
		)
		if err := rows.Scan(&c.Seq, &c.CustomerID, &c.Kind, &c.Status, &ms, &c.Source, &c.Basis); err != nil {
			return nil, fmt.Errorf("storage: consents: %w", err)
		}
		c.Time = msTime(ms)
		out[c.CustomerID] = append(out[c.CustomerID], c)
	}
	return out, rows.Err()
}

// PolicyInputs are what the send-time policies read of a claim's
// recipients on one channel kind.
type PolicyInputs struct {
	// Consents are each customer's consent records, oldest first.
	Consents map[string][]Consent
	// Suppressions are the entries among the hashes that apply to the kind.
	Suppressions map[string]Suppression
	// Recent are, per customer, the claim times that count against caps
	// (only when asked for).
	Recent map[string][]time.Time
}

// PolicyInputs reads, in one statement, what ConsentsOf(ids),
// Suppressions(kind, hashes) and, when recent is set,
// RecentContacts(kind, ids, since) return. On PostgreSQL the statement
// sees what committed before it began, so it follows LockContacts for the
// counts to be safe.
func (tx *Tx) PolicyInputs(kind string, ids, hashes []string, recent bool, since time.Time) (PolicyInputs, error) {
	in := PolicyInputs{Consents: map[string][]Consent{}, Suppressions: map[string]Suppression{}, Recent: map[string][]time.Time{}}
	if len(ids) == 0 && len(hashes) == 0 {
		return in, nil
	}
	q := qPolicy
	if tx.dialect == Postgres {
		q = qPolicyPostgres
	}
	rows, err := tx.pool().QueryContext(tx.ctx(), q, tx.textList(ids), kind, tx.textList(hashes), boolInt(recent), since.UnixMilli())
	if err != nil {
		return in, fmt.Errorf("storage: policy inputs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			part           int64
			id, a, b, c, d string
			ms, seq        int64
		)
		if err := rows.Scan(&part, &id, &a, &b, &c, &d, &ms, &seq); err != nil {
			return in, fmt.Errorf("storage: policy inputs: %w", err)
		}
		switch part {
		case 0:
			in.Consents[id] = append(in.Consents[id], Consent{Seq: seq, CustomerID: id, Kind: a, Status: b, Time: msTime(ms), Source: c, Basis: d})
		case 1:
			in.Suppressions[id] = Suppression{Kind: a, Hash: id, Reason: b, Source: c, Created: msTime(ms)}
		case 2:
			in.Recent[id] = append(in.Recent[id], msTime(ms))
		}
	}
	if err := rows.Err(); err != nil {
		return in, fmt.Errorf("storage: policy inputs: %w", err)
	}
	return in, nil
}

// qPolicy is PolicyInputs' statement: consents (part 0, in ConsentsOf's
// order), suppressions (1) and recent contacts (2). Parameters: ids, kind,
// hashes, whether to count recent contacts, since.
const qPolicy = `SELECT 0, customer_id, kind, status, source, basis, time_ms, seq FROM consents
		WHERE customer_id IN (SELECT value FROM json_each(?1))
	UNION ALL SELECT 1, hash, kind, reason, source, '', created_ms, 0 FROM suppressions
		WHERE kind IN (?2, 'all') AND hash IN (SELECT value FROM json_each(?3))
	UNION ALL SELECT 2, customer_id, '', '', '', '', claimed_ms, 0 FROM outbox
		WHERE ?4 = 1 AND customer_id IN (SELECT value FROM json_each(?1)) AND kind = ?2 AND claimed_ms >= ?5
		AND state IN ('sent', 'sending', 'unknown')
	ORDER BY 1, 7, 8`

const qPolicyPostgres = `SELECT 0, customer_id, kind, status, source, basis, time_ms, seq FROM consents
		WHERE customer_id = ANY($1::text[])
	UNION ALL SELECT 1, hash, kind, reason, source, '', created_ms, 0 FROM suppressions
		WHERE kind IN ($2, 'all') AND hash = ANY($3::text[])
	UNION ALL SELECT 2, customer_id, '', '', '', '', claimed_ms, 0 FROM outbox
		WHERE $4::int = 1 AND customer_id = ANY($1::text[]) AND kind = $2 AND claimed_ms >= $5::bigint
		AND state IN ('sent', 'sending', 'unknown')
	ORDER BY 1, 7, 8`

// CustomersByID returns the stored rows of the given customers that exist.
func (tx *Tx) CustomersByID(ids []string) (map[string]Customer, error) {
	out := make(map[string]Customer, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := tx.g.Raw(`SELECT id, traits FROM customers WHERE id IN ?`, ids).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: customers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c Customer
		var traits string
		if err := rows.Scan(&c.ID, &traits); err != nil {
			return nil, fmt.Errorf("storage: customers: %w", err)
		}
		c.Traits = []byte(traits)
		out[c.ID] = c
	}
	return out, rows.Err()
}

// Suppression is one entry of the suppression list.
type Suppression struct {
	// Kind is a channel kind, or "all".
	Kind string
	// Hash is the SHA-256 (hex) of a normalized address or of a customer id
	// (see daemon/campaign.AddressHash and CustomerHash).
	Hash    string
	Reason  string
	Source  string
	Created time.Time
}

// Suppressions returns, by hash, the entries among hashes that apply to a
// kind (entries of the kind itself or of "all").
func (tx *Tx) Suppressions(kind string, hashes []string) (map[string]Suppression, error) {
	out := map[string]Suppression{}
	if len(hashes) == 0 {
		return out, nil
	}
	q := `SELECT kind, hash, reason, source, created_ms FROM suppressions
		WHERE kind IN (?, 'all') AND hash IN (SELECT value FROM json_each(?))`
	if tx.dialect == Postgres {
		q = `SELECT kind, hash, reason, source, created_ms FROM suppressions
		WHERE kind IN ($1, 'all') AND hash = ANY($2::text[])`
	}
	rows, err := tx.pool().QueryContext(tx.ctx(), q, kind, tx.textList(hashes))
	if err != nil {
		return nil, fmt.Errorf("storage: suppressions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			s  Suppression
			ms int64
		)
		if err := rows.Scan(&s.Kind, &s.Hash, &s.Reason, &s.Source, &ms); err != nil {
			return nil, fmt.Errorf("storage: suppressions: %w", err)
		}
		s.Created = msTime(ms)
		out[s.Hash] = s
	}
	return out, rows.Err()
}

// AddSuppressions adds entries; an entry already listed keeps its first
// reason.
func (tx *Tx) AddSuppressions(ss []Suppression) error {
	err := tx.chunked(`INSERT INTO suppressions (kind, hash, reason, source, created_ms) VALUES `, 5,
		` ON CONFLICT (kind, hash) DO NOTHING`, len(ss), func(lo, hi int) ([]any, error) {
			args := make([]any, 0, (hi-lo)*5)
			for _, s := range ss[lo:hi] {
				args = append(args, s.Kind, s.Hash, s.Reason, s.Source, s.Created.UnixMilli())
			}
			return args, nil
		})
	if err != nil {
		return fmt.Errorf("storage: add suppressions: %w", err)
	}
	return nil
}

// AddSuppressions is Tx.AddSuppressions in its own transaction.
func (db *DB) AddSuppressions(ctx context.Context, ss []Suppression) error {
	return db.Tx(ctx, func(tx *Tx) error { return tx.AddSuppressions(ss) })
}

// Claim moves pending rows to sending under a lease. It returns the ids it
// claimed (a row another dispatcher took meanwhile is left out).
func (tx *Tx) Claim(ids []int64, token string, now, leaseUntil time.Time) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	q := `UPDATE outbox SET state = 'sending', lease_token = ?, lease_until_ms = ?, claimed_ms = ?, attempts = attempts + 1
		WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending' RETURNING id`
	if tx.dialect == Postgres {
		q = `UPDATE outbox SET state = 'sending', lease_token = $1, lease_until_ms = $2, claimed_ms = $3, attempts = attempts + 1
		WHERE id = ANY($4::bigint[]) AND state = 'pending' RETURNING id`
	}
	got, err := tx.ids(q, token, leaseUntil.UnixMilli(), now.UnixMilli(), tx.intList(ids))
	if err != nil {
		return nil, fmt.Errorf("storage: claim: %w", err)
	}
	return got, nil
}

// Defer puts pending rows back with a later not_before and the reason.
func (tx *Tx) Defer(ids []int64, notBefore time.Time, reason string) error {
	if len(ids) == 0 {
		return nil
	}
	q := `UPDATE outbox SET not_before_ms = ?, deferrals = deferrals + 1, defer_reason = ?
		WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending'`
	if tx.dialect == Postgres {
		q = `UPDATE outbox SET not_before_ms = $1, deferrals = deferrals + 1, defer_reason = $2
		WHERE id = ANY($3::bigint[]) AND state = 'pending'`
	}
	if _, err := tx.pool().ExecContext(tx.ctx(), q, notBefore.UnixMilli(), reason, tx.intList(ids)); err != nil {
		return fmt.Errorf("storage: defer: %w", err)
	}
	return nil
}

// Finish gives pending rows a terminal state without a send (skipped by a
// policy, failed before the call) and the reason.
func (tx *Tx) Finish(ids []int64, state, reason string, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	q := `UPDATE outbox SET state = ?, reason = ?, done_ms = ? WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending'`
	if tx.dialect == Postgres {
		q = `UPDATE outbox SET state = $1, reason = $2, done_ms = $3 WHERE id = ANY($4::bigint[]) AND state = 'pending'`
	}
	if _, err := tx.pool().ExecContext(tx.ctx(), q, state, reason, now.UnixMilli(), tx.intList(ids)); err != nil {
		return fmt.Errorf("storage: finish: %w", err)
	}
	return nil
}

// Completion is the outcome of one claimed row.
type Completion struct {
	ID    int64
	Token string
	// State is sent, failed, skipped, unknown, or pending (a retry at
	// NotBefore).
	State      string
	ProviderID string
	Reason     string
	NotBefore  time.Time
	// Uncounted gives back the attempt the claim counted: the provider
	// asked to wait (a rate limit) or the request never left, so the retry
	// is not a failure toward the attempt limit.
	Uncounted bool
	// Unindexed: no delivery event can name this message by its provider
	// id alone (its channel has no webhook), so KeysByProviderID need not
	// find it; ProviderID is stored all the same, without an index entry.
	Unindexed bool
}

// Complete records outcomes of claimed rows. Each update applies only while
// the row is still sending under the same lease token, so a late or
// duplicate completion never overwrites a newer state. It returns the ids
// whose completion was applied.
func (db *DB) Complete(ctx context.Context, cs []Completion, now time.Time) ([]int64, error) {
	var applied []int64
	if len(cs) == 0 {
		return applied, nil
	}
	err := db.Tx(ctx, func(tx *Tx) error {
		var err error
		applied, err = tx.Complete(cs, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	return applied, nil
}

// Complete is DB.Complete inside a transaction (a dispatcher records a
// batch's outcomes in the transaction claiming its next batch).
func (tx *Tx) Complete(cs []Completion, now time.Time) ([]int64, error) {
	applied := make([]int64, 0, len(cs))
	for lo := 0; lo < len(cs); lo += completeChunk {
		part := cs[lo:min(lo+completeChunk, len(cs))]
		var (
			q    string
			args []any
		)
		if tx.dialect == Postgres {
			q, args = qCompletePostgres, pgCompleteArgs(part, now)
		} else if same(part) {
			// The common batch: one outcome but for the provider ids, in
			// one JSON object of provider ids by row id (json_each gives
			// each member's key and value as they are, with no JSON to
			// parse again per row).
			c0 := part[0]
			done := now.UnixMilli()
			if c0.State == OutboxPending {
				done = 0
			}
			b := make([]byte, 0, 48*len(part))
			b = append(b, '{')
			for i, c := range part {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, '"')
				b = strconv.AppendInt(b, c.ID, 10)
				b = append(b, '"', ':')
				b = appendJSONString(b, c.ProviderID)
			}
			b = append(b, '}')
			q = `UPDATE outbox SET state = ?, provider_id = v.value, provider_ref = CASE ? WHEN 1 THEN '' ELSE v.value END,
				reason = ?, not_before_ms = ?, done_ms = ?, lease_token = '', lease_until_ms = 0, attempts = attempts - ?
				FROM json_each(?) AS v WHERE outbox.id = CAST(v.key AS INTEGER) AND outbox.lease_token = ? AND outbox.state = 'sending'
				RETURNING outbox.id`
			args = []any{c0.State, boolInt(c0.Unindexed), c0.Reason, timeMS(c0.NotBefore), done, boolInt(c0.Uncounted), string(b), c0.Token}
		} else {
			// One JSON parameter of [id, token, state, provider id,
			// reason, not_before, done, uncounted, unindexed] rows: the driver
			// compiles the statement at every call, so its text stays
			// short whatever the number of rows.
			b := make([]byte, 0, 64*len(part))
			b = append(b, '[')
			for i, c := range part {
				if i > 0 {
					b = append(b, ',')
				}
				done := now.UnixMilli()
				if c.State == OutboxPending {
					done = 0
				}
				b = append(b, '[')
				b = strconv.AppendInt(b, c.ID, 10)
				for _, str := range [...]string{c.Token, c.State, c.ProviderID, c.Reason} {
					b = append(b, ',')
					b = appendJSONString(b, str)
				}
				for _, n := range [...]int64{timeMS(c.NotBefore), done, int64(boolInt(c.Uncounted)), int64(boolInt(c.Unindexed))} {
					b = append(b, ',')
					b = strconv.AppendInt(b, n, 10)
				}
				b = append(b, ']')
			}
			b = append(b, ']')
			q = `UPDATE outbox SET state = v.value->>2, provider_id = v.value->>3,
				provider_ref = CASE v.value->>8 WHEN 1 THEN '' ELSE v.value->>3 END, reason = v.value->>4, not_before_ms = v.value->>5,
				done_ms = v.value->>6, lease_token = '', lease_until_ms = 0, attempts = outbox.attempts - (v.value->>7)
				FROM json_each(?) AS v WHERE outbox.id = v.value->>0 AND outbox.lease_token = v.value->>1 AND outbox.state = 'sending'
				RETURNING outbox.id`
			args = []any{string(b)}
		}
		got, err := tx.ids(q, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: complete: %w", err)
		}
		applied = append(applied, got...)
	}
	return applied, nil
}

// qCompletePostgres is Complete's statement on PostgreSQL; its parameters
// are pgCompleteArgs'.
const qCompletePostgres = `UPDATE outbox o SET state = v.state, provider_id = v.pid, provider_ref = CASE WHEN v.unidx = 1 THEN '' ELSE v.pid END,
	reason = v.reason, not_before_ms = v.nb, done_ms = v.done, lease_token = '', lease_until_ms = 0, attempts = o.attempts - v.dec
	FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
		AS v(id, token, state, pid, reason, nb, done, dec, unidx)
	WHERE o.id = v.id AND o.lease_token = v.token AND o.state = 'sending' RETURNING o.id`

// pgCompleteArgs are the column arrays of completions.
func pgCompleteArgs(cs []Completion, now time.Time) []any {
	n := len(cs)
	ids, nbs, dones, decs, unidx := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	tokens, states, pids, reasons := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, c := range cs {
		ids[i], tokens[i], states[i], pids[i], reasons[i], nbs[i] = c.ID, c.Token, c.State, c.ProviderID, c.Reason, timeMS(c.NotBefore)
		if c.State != OutboxPending {
			dones[i] = now.UnixMilli()
		}
		if c.Uncounted {
			decs[i] = 1
		}
		if c.Unindexed {
			unidx[i] = 1
		}
	}
	return []any{pgInt8Array(ids), pgTextArray(tokens), pgTextArray(states), pgTextArray(pids), pgTextArray(reasons), pgInt8Array(nbs), pgInt8Array(dones), pgInt8Array(decs), pgInt8Array(unidx)}
}

// same reports whether completions differ only in row and provider ids.
func same(cs []Completion) bool {
	c0 := cs[0]
	for _, c := range cs[1:] {
		if c.Token != c0.Token || c.State != c0.State || c.Reason != c0.Reason || !c.NotBefore.Equal(c0.NotBefore) ||
			c.Uncounted != c0.Uncounted || c.Unindexed != c0.Unindexed {
			return false
		}
	}
	return true
}

// completeChunk is completions per UPDATE.
const completeChunk = 500

// ExpiredLeases returns sending rows whose lease ended before now (their
// dispatcher or the daemon died mid-call), or every sending row when all is
// set (a single daemon on SQLite at start: no one else can hold a lease),
// in lease order (the order of the outbox_leases index, so neither reads
// more than the sending rows).
func (db *DB) ExpiredLeases(ctx context.Context, now time.Time, all bool, limit int) ([]OutboxRow, error) {
	var out []OutboxRow
	err := db.Tx(ctx, func(tx *Tx) error {
		var err error
		if all {
			out, err = tx.outboxQuery(`SELECT `+outboxCols+` FROM outbox WHERE state = 'sending' ORDER BY lease_until_ms, id LIMIT ?`, limit)
		} else {
			out, err = tx.outboxQuery(`SELECT `+outboxCols+` FROM outbox WHERE state = 'sending' AND lease_until_ms < ? ORDER BY lease_until_ms, id LIMIT ?`,
				now.UnixMilli(), limit)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: expired leases: %w", err)
	}
	return out, nil
}

// OutboxByKeys returns outbox rows by key.
func (db *DB) OutboxByKeys(ctx context.Context, keys []string) (map[string]OutboxRow, error) {
	var out map[string]OutboxRow
	err := db.Tx(ctx, func(tx *Tx) error {
		var err error
		out, err = tx.OutboxByKeys(keys)
		return err
	})
	return out, err
}

// OutboxByKeys is DB.OutboxByKeys inside a transaction.
func (tx *Tx) OutboxByKeys(keys []string) (map[string]OutboxRow, error) {
	out := map[string]OutboxRow{}
	if len(keys) == 0 {
		return out, nil
	}
	rows, err := tx.outboxQuery(`SELECT `+outboxCols+` FROM outbox WHERE key IN ?`, keys)
	if err != nil {
		return nil, fmt.Errorf("storage: outbox rows: %w", err)
	}
	for _, r := range rows {
		out[r.Key] = r
	}
	return out, nil
}

// OutboxOf returns a customer's outbox rows, newest first.
func (db *DB) OutboxOf(ctx context.Context, customerID string, limit int) ([]OutboxRow, error) {
	var out []OutboxRow
	err := db.Tx(ctx, func(tx *Tx) error {
		var err error
		out, err = tx.outboxQuery(`SELECT `+outboxCols+` FROM outbox WHERE customer_id = ? ORDER BY id DESC LIMIT ?`, customerID, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: outbox of %q: %w", customerID, err)
	}
	return out, nil
}

// OutboxCounts counts rows per state (all campaigns when campaign is "").
func (db *DB) OutboxCounts(ctx context.Context, campaign string) (map[string]int64, error) {
	q, args := `SELECT state, COUNT(*) FROM outbox GROUP BY state`, []any{}
	if campaign != "" {
		q, args = `SELECT state, COUNT(*) FROM outbox WHERE campaign = ? GROUP BY state`, []any{campaign}
	}
	rows, err := db.session(ctx).Raw(q, args...).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: outbox counts: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var (
			s string
			n int64
		)
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out[s] = n
	}
	return out, rows.Err()
}

// UnresolvedUnknowns counts, per campaign, unknown rows claimed before
// cutoff: still without a delivery event to resolve them.
func (db *DB) UnresolvedUnknowns(ctx context.Context, cutoff time.Time) (map[string]int64, error) {
	rows, err := db.session(ctx).Raw(`SELECT campaign, COUNT(*) FROM outbox WHERE state = 'unknown' AND claimed_ms < ?
		GROUP BY campaign`, cutoff.UnixMilli()).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: unresolved unknowns: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var (
			c string
			n int64
		)
		if err := rows.Scan(&c, &n); err != nil {
			return nil, err
		}
		out[c] = n
	}
	return out, rows.Err()
}

// DeliveryEvent is one provider event about a message, as stored.
type DeliveryEvent struct {
	Channel string
	EventID string
	Key     string
	Type    string
	Time    time.Time
	Reason  string
}

// RecordDeliveryEvents stores new events (an event id seen before is
// ignored), resolves unknown rows they prove reached the provider, and notes
// each row's latest delivery type. It returns the events that were new.
func (db *DB) RecordDeliveryEvents(ctx context.Context, evs []DeliveryEvent, resolve func(DeliveryEvent) string, now time.Time) ([]DeliveryEvent, error) {
	var fresh []DeliveryEvent
	err := db.Tx(ctx, func(tx *Tx) error {
		var err error
		fresh, err = tx.RecordDeliveryEvents(evs, resolve, now)
		return err
	})
	return fresh, err
}

// RecordDeliveryEvents is DB.RecordDeliveryEvents inside a transaction, so
// what the events cause (suppressions, opt-outs) commits with them.
func (tx *Tx) RecordDeliveryEvents(evs []DeliveryEvent, resolve func(DeliveryEvent) string, now time.Time) ([]DeliveryEvent, error) {
	var fresh []DeliveryEvent
	for _, e := range evs {
		res := tx.g.Exec(`INSERT INTO delivery_events (channel, event_id, key, type, time_ms, reason, received_ms)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel, event_id) DO NOTHING`,
			e.Channel, e.EventID, e.Key, e.Type, e.Time.UnixMilli(), e.Reason, now.UnixMilli())
		if res.Error != nil {
			return nil, fmt.Errorf("storage: delivery events: %w", res.Error)
		}
		if res.RowsAffected == 0 || e.Key == "" {
			continue
		}
		fresh = append(fresh, e)
		if st := resolve(e); st != "" {
			if err := tx.g.Exec(`UPDATE outbox SET state = ?, reason = ?, done_ms = ? WHERE key = ? AND state = 'unknown'`,
				st, "resolved by a delivery event: "+e.Type, now.UnixMilli(), e.Key).Error; err != nil {
				return nil, fmt.Errorf("storage: delivery events: %w", err)
			}
		}
		if err := tx.g.Exec(`UPDATE outbox SET delivery = ? WHERE key = ?`, e.Type, e.Key).Error; err != nil {
			return nil, fmt.Errorf("storage: delivery events: %w", err)
		}
	}
	return fresh, nil
}

// KeysByProviderID maps provider message ids to outbox keys.
func (db *DB) KeysByProviderID(ctx context.Context, channel string, ids []string) (map[string]string, error) {
	out := map[string]string{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := db.session(ctx).Raw(`SELECT provider_ref, key FROM outbox WHERE channel = ? AND provider_ref IN ? AND provider_ref <> ''`, channel, ids).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: keys by provider id: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p, k string
		if err := rows.Scan(&p, &k); err != nil {
			return nil, err
		}
		out[p] = k
	}
	return out, rows.Err()
}

// DeliveryEventsOf returns the delivery events of outbox keys, by key.
func (db *DB) DeliveryEventsOf(ctx context.Context, keys []string) (map[string][]DeliveryEvent, error) {
	out := map[string][]DeliveryEvent{}
	if len(keys) == 0 {
		return out, nil
	}
	rows, err := db.session(ctx).Raw(`SELECT channel, event_id, key, type, time_ms, reason FROM delivery_events
		WHERE key IN ? ORDER BY time_ms`, keys).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: delivery events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			e  DeliveryEvent
			ms int64
		)
		if err := rows.Scan(&e.Channel, &e.EventID, &e.Key, &e.Type, &ms, &e.Reason); err != nil {
			return nil, err
		}
		e.Time = msTime(ms)
		out[e.Key] = append(out[e.Key], e)
	}
	return out, rows.Err()
}

// ArmStats are one arm's counts in a campaign.
type ArmStats struct {
	Arm     string
	Holdout bool
	// Assigned counts customers; AssignedByEpoch splits them by weights epoch.
	Assigned        int64
	AssignedByEpoch map[int]int64
	// Matured counts customers whose goal window has closed; Converted
	// those of them with the goal event inside the window; Revenue sums
	// those events' values.
	Matured   int64
	Converted int64
	Revenue   float64
	// States counts outbox rows by state; Skipped and Failed by reason.
	States  map[string]int64
	Skipped map[string]int64
	Failed  map[string]int64
	// Deferred counts rows deferred at least once; Events counts rows with
	// at least one delivery event of each type.
	Deferred int64
	Events   map[string]int64
}

// CampaignArms counts a campaign's arms. goal is the conversion event
// ("" for none) and within its window; a customer has matured when the
// window after their assignment has closed by now.
func (db *DB) CampaignArms(ctx context.Context, campaign, goal string, within time.Duration, now time.Time) (map[string]*ArmStats, error) {
	out := map[string]*ArmStats{}
	arm := func(name string) *ArmStats {
		a := out[name]
		if a == nil {
			a = &ArmStats{Arm: name, AssignedByEpoch: map[int]int64{}, States: map[string]int64{}, Skipped: map[string]int64{},
				Failed: map[string]int64{}, Events: map[string]int64{}}
			out[name] = a
		}
		return a
	}
	s := db.session(ctx)
	cutoff := now.Add(-within).UnixMilli()
	w := within.Milliseconds()
	rows, err := s.Raw(`SELECT a.arm, a.holdout, a.epoch, COUNT(*),
			SUM(CASE WHEN a.assigned_ms <= ? THEN 1 ELSE 0 END),
			SUM(CASE WHEN a.assigned_ms <= ? AND EXISTS (SELECT 1 FROM events e WHERE e.customer_id = a.customer_id AND e.name = ?
				AND e.time_ms >= a.assigned_ms AND e.time_ms < a.assigned_ms + ?) THEN 1 ELSE 0 END),
			SUM(CASE WHEN a.assigned_ms <= ? THEN (SELECT COALESCE(SUM(e.value), 0) FROM events e WHERE e.customer_id = a.customer_id
				AND e.name = ? AND e.time_ms >= a.assigned_ms AND e.time_ms < a.assigned_ms + ?) ELSE 0 END)
		FROM campaign_assignments a WHERE a.campaign = ? GROUP BY a.arm, a.holdout, a.epoch`,
		cutoff, cutoff, goal, w, cutoff, goal, w, campaign).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: arms of %q: %w", campaign, err)
	}
	for rows.Next() {
		var (
			name                             string
			holdout, epoch, n, matured, conv int64
			revenue                          sql.NullFloat64
		)
		if err := rows.Scan(&name, &holdout, &epoch, &n, &matured, &conv, &revenue); err != nil {
			rows.Close()
			return nil, fmt.Errorf("storage: arms of %q: %w", campaign, err)
		}
		a := arm(name)
		a.Holdout = holdout != 0
		a.Assigned += n
		a.AssignedByEpoch[int(epoch)] += n
		if goal != "" {
			a.Matured += matured
			a.Converted += conv
			a.Revenue += revenue.Float64
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = s.Raw(`SELECT arm, state, reason, SUM(CASE WHEN deferrals > 0 THEN 1 ELSE 0 END), COUNT(*) FROM outbox
		WHERE campaign = ? GROUP BY arm, state, reason`, campaign).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: outbox of %q: %w", campaign, err)
	}
	for rows.Next() {
		var (
			name, state, reason string
			deferred, n         int64
		)
		if err := rows.Scan(&name, &state, &reason, &deferred, &n); err != nil {
			rows.Close()
			return nil, err
		}
		a := arm(name)
		a.States[state] += n
		a.Deferred += deferred
		switch state {
		case OutboxSkipped:
			a.Skipped[reason] += n
		case OutboxFailed:
			a.Failed[reason] += n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = s.Raw(`SELECT o.arm, d.type, COUNT(DISTINCT o.key) FROM delivery_events d JOIN outbox o ON o.key = d.key
		WHERE o.campaign = ? GROUP BY o.arm, d.type`, campaign).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: delivery events of %q: %w", campaign, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name, typ string
			n         int64
		)
		if err := rows.Scan(&name, &typ, &n); err != nil {
			return nil, err
		}
		arm(name).Events[typ] += n
	}
	return out, rows.Err()
}

// Setting returns a daemon-wide setting, or ErrNotFound.
func (db *DB) Setting(ctx context.Context, name string) (string, error) {
	var v []string
	if err := db.session(ctx).Raw(`SELECT value FROM settings WHERE name = ?`, name).Scan(&v).Error; err != nil {
		return "", fmt.Errorf("storage: setting %q: %w", name, err)
	}
	if len(v) == 0 {
		return "", fmt.Errorf("setting %q: %w", name, ErrNotFound)
	}
	return v[0], nil
}

// SettingOrInit returns a setting, storing value first if it is not set
// (the first daemon to start wins; every daemon then reads the same value).
func (db *DB) SettingOrInit(ctx context.Context, name, value string) (string, error) {
	if err := db.session(ctx).Exec(`INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`, name, value).Error; err != nil {
		return "", fmt.Errorf("storage: setting %q: %w", name, err)
	}
	return db.Setting(ctx, name)
}

// Forget erases a customer (GDPR Art. 17): their row, events, rollups,
// consent records, memberships, segment changes, assignments, outbox rows
// and those rows' delivery events, keeping only the given hashed
// suppressions. It reports whether anything was found.
func (db *DB) Forget(ctx context.Context, customerID string, keep []Suppression) (bool, error) {
	found := false
	err := db.Tx(ctx, func(tx *Tx) error {
		stmts := []string{
			`DELETE FROM delivery_events WHERE key IN (SELECT key FROM outbox WHERE customer_id = ?)`,
			`DELETE FROM outbox WHERE customer_id = ?`,
			`DELETE FROM campaign_assignments WHERE customer_id = ?`,
			`DELETE FROM segment_members WHERE customer_id = ?`,
			`DELETE FROM segment_changes WHERE customer_id = ?`,
			`DELETE FROM event_rollups WHERE customer_id = ?`,
			`DELETE FROM events WHERE customer_id = ?`,
			`DELETE FROM consents WHERE customer_id = ?`,
			`DELETE FROM customers WHERE id = ?`,
		}
		for _, q := range stmts {
			res := tx.g.Exec(q, customerID)
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected > 0 {
				found = true
			}
		}
		return tx.AddSuppressions(keep)
	})
	if err != nil {
		return false, fmt.Errorf("storage: forget customer: %w", err)
	}
	return found, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func timeMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func optTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return msTime(ms)
}

// pgInt8Array renders int64s as a PostgreSQL array literal.
func pgInt8Array(ks []int64) string {
	b := make([]byte, 0, len(ks)*20+2)
	b = append(b, '{')
	for i, k := range ks {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "%d", k)
	}
	return string(append(b, '}'))
}

// pgTextArray is a PostgreSQL text[] literal of ss.
func pgTextArray(ss []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for _, r := range s {
			if r == '"' || r == '\\' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// pool is the transaction's connection, for statements sent to the driver
// directly (hot paths skip gorm's statement building and reflection); their
// placeholders are the dialect's (? on SQLite, $n on PostgreSQL).
func (tx *Tx) pool() gorm.ConnPool { return tx.g.Statement.ConnPool }

func (tx *Tx) ctx() context.Context { return tx.g.Statement.Context }

// ids runs a statement returning one integer column.
func (tx *Tx) ids(q string, args ...any) ([]int64, error) {
	rows, err := tx.pool().QueryContext(tx.ctx(), q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// textList is a list of strings as one parameter: a JSON array for
// SQLite's json_each, a text[] literal for PostgreSQL's ANY. One parameter
// keeps the statement's text the same for any number of values.
func (tx *Tx) textList(ss []string) string {
	if tx.dialect == Postgres {
		return pgTextArray(ss)
	}
	b := make([]byte, 0, 2+len(ss)*24)
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return string(append(b, ']'))
}

// intList is textList for integers.
func (tx *Tx) intList(ns []int64) string {
	if tx.dialect == Postgres {
		return pgInt8Array(ns)
	}
	b := make([]byte, 0, 2+len(ns)*8)
	b = append(b, '[')
	for i, n := range ns {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, n, 10)
	}
	return string(append(b, ']'))
}

// appendJSONString appends s as a JSON string. Bytes from 0x80 up are
// copied as they are, so SQLite's JSON functions give back the exact text
// bound.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\t':
			b = append(b, '\\', 't')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// pgPlaceholders rewrites ? placeholders as PostgreSQL's $1, $2, ... (the
// statement must have no ? elsewhere).
func pgPlaceholders(q string) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] != '?' {
			b.WriteByte(q[i])
			continue
		}
		n++
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}
