-- Ingestion: per-source cursors (committed with each batch), raw events kept
-- for deduplication by (source, id), daily rollups per customer/event/day,
-- and consent records (append-only, so consent can be demonstrated).
CREATE TABLE source_cursors (
    source     TEXT PRIMARY KEY,
    cursor     TEXT NOT NULL,
    caught_up  INTEGER NOT NULL DEFAULT 0,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE events (
    source      TEXT NOT NULL,
    id          TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    value       REAL,
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX events_customer ON events (customer_id, name, time_ms);
CREATE INDEX events_received ON events (received_at);

CREATE TABLE event_rollups (
    customer_id   TEXT NOT NULL,
    name          TEXT NOT NULL,
    day           INTEGER NOT NULL, -- days since 1970-01-01, UTC
    count         INTEGER NOT NULL,
    value_sum     REAL NOT NULL DEFAULT 0,
    first_time_ms INTEGER NOT NULL,
    last_time_ms  INTEGER NOT NULL,
    PRIMARY KEY (customer_id, name, day)
);

CREATE TABLE consents (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('opt_in', 'opt_out')),
    time_ms     INTEGER NOT NULL,
    source      TEXT NOT NULL,
    basis       TEXT NOT NULL DEFAULT '',
    recorded_at TIMESTAMP NOT NULL
);
CREATE INDEX consents_customer ON consents (customer_id, kind, time_ms);
