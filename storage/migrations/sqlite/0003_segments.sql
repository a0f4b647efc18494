-- Segmentation: current members (changed only by diffs), the numbered log of
-- entries and exits that campaigns trigger on, size history per pass, and the
-- passes themselves.
CREATE TABLE segment_passes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('full', 'incremental')),
    now_ms      INTEGER NOT NULL,
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    evaluated   INTEGER NOT NULL DEFAULT 0,
    changes     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE segment_members (
    segment     TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    since       TIMESTAMP NOT NULL,
    PRIMARY KEY (segment, customer_id)
) WITHOUT ROWID;

CREATE TABLE segment_changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    segment     TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    change      TEXT NOT NULL CHECK (change IN ('enter', 'exit')),
    at          TIMESTAMP NOT NULL,
    pass        INTEGER NOT NULL REFERENCES segment_passes (id)
);
CREATE INDEX segment_changes_segment ON segment_changes (segment, seq);

CREATE TABLE segment_sizes (
    segment TEXT NOT NULL,
    pass    INTEGER NOT NULL REFERENCES segment_passes (id),
    at      TIMESTAMP NOT NULL,
    size    INTEGER NOT NULL,
    entered INTEGER NOT NULL,
    exited  INTEGER NOT NULL,
    held    TEXT NOT NULL DEFAULT '', -- why campaigns on it are held ('' = not held)
    PRIMARY KEY (segment, pass)
);
