-- Campaigns (DESIGN.md sections 5 and 6). Times are milliseconds since the
-- Unix epoch (UTC) so both dialects compare them the same way.

-- Per campaign: the definition fingerprint its baseline was taken for, the
-- segment_changes seq read up to, the last cron fire, the weights epoch and
-- the persisted winner-test state.
CREATE TABLE campaign_state (
    campaign      TEXT PRIMARY KEY,
    fingerprint   TEXT NOT NULL,
    cursor        INTEGER NOT NULL,
    baseline_ms   INTEGER NOT NULL,
    last_cron_ms  INTEGER NOT NULL DEFAULT 0,
    weights       TEXT NOT NULL DEFAULT '',
    epoch         INTEGER NOT NULL DEFAULT 0,
    winner        TEXT NOT NULL DEFAULT '',
    experiment    TEXT NOT NULL DEFAULT '',
    updated_ms    INTEGER NOT NULL
);

-- Arms, persisted at first assignment (intention to treat). last_ms is the
-- customer's latest occurrence, for reentry.
CREATE TABLE campaign_assignments (
    campaign     TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    arm          TEXT NOT NULL,
    holdout      INTEGER NOT NULL,
    epoch        INTEGER NOT NULL,
    assigned_ms  INTEGER NOT NULL,
    last_ms      INTEGER NOT NULL,
    occurrences  INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (campaign, customer_id)
) WITHOUT ROWID;
CREATE INDEX campaign_assignments_customer ON campaign_assignments (customer_id);

-- The outbox: one row per message, created with its occurrence. key is
-- unique per (campaign, occurrence, customer, channel), so an occurrence is
-- never queued twice, and travels to the provider to resolve unknowns.
CREATE TABLE outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    key            TEXT NOT NULL UNIQUE,
    campaign       TEXT NOT NULL,
    occurrence     TEXT NOT NULL,
    customer_id    TEXT NOT NULL,
    channel        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    arm            TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'skipped', 'unknown')),
    not_before_ms  INTEGER NOT NULL DEFAULT 0,
    lease_token    TEXT NOT NULL DEFAULT '',
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    attempts       INTEGER NOT NULL DEFAULT 0,
    provider_id    TEXT NOT NULL DEFAULT '',
    reason         TEXT NOT NULL DEFAULT '',
    deferrals      INTEGER NOT NULL DEFAULT 0,
    defer_reason   TEXT NOT NULL DEFAULT '',
    delivery       TEXT NOT NULL DEFAULT '',
    created_ms     INTEGER NOT NULL,
    claimed_ms     INTEGER NOT NULL DEFAULT 0,
    done_ms        INTEGER NOT NULL DEFAULT 0
);
-- Due rows in claim order; only pending rows are in it, so a row leaving
-- pending is its last write to this index.
CREATE INDEX outbox_due ON outbox (channel, not_before_ms, id) WHERE state = 'pending';
CREATE INDEX outbox_contact ON outbox (customer_id, kind, claimed_ms);
CREATE INDEX outbox_campaign ON outbox (campaign);
CREATE INDEX outbox_provider ON outbox (provider_id) WHERE provider_id <> '';

-- Addresses and customers never to message again on a kind ('all' for every
-- kind), stored as SHA-256 hashes: forgetting a customer keeps only these.
CREATE TABLE suppressions (
    kind        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (kind, hash)
) WITHOUT ROWID;

-- Provider delivery events, deduplicated by (channel, event id).
CREATE TABLE delivery_events (
    channel     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    key         TEXT NOT NULL,
    type        TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (channel, event_id)
) WITHOUT ROWID;
CREATE INDEX delivery_events_key ON delivery_events (key, type);

-- Daemon-wide settings (e.g. the generated unsubscribe signing key).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
