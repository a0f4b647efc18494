-- Segmentation: current members (changed only by diffs), the numbered log of
-- entries and exits that campaigns trigger on, size history per pass, and the
-- passes themselves.
CREATE TABLE segment_passes (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('full', 'incremental')),
    now_ms      BIGINT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    evaluated   BIGINT NOT NULL DEFAULT 0,
    changes     BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE segment_members (
    segment     TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    since       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (segment, customer_id)
);

CREATE TABLE segment_changes (
    seq         BIGSERIAL PRIMARY KEY,
    segment     TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    change      TEXT NOT NULL CHECK (change IN ('enter', 'exit')),
    at          TIMESTAMPTZ NOT NULL,
    pass        BIGINT NOT NULL REFERENCES segment_passes (id)
);
CREATE INDEX segment_changes_segment ON segment_changes (segment, seq);

CREATE TABLE segment_sizes (
    segment TEXT NOT NULL,
    pass    BIGINT NOT NULL REFERENCES segment_passes (id),
    at      TIMESTAMPTZ NOT NULL,
    size    BIGINT NOT NULL,
    entered INTEGER NOT NULL,
    exited  INTEGER NOT NULL,
    held    TEXT NOT NULL DEFAULT '', -- why campaigns on it are held ('' = not held)
    PRIMARY KEY (segment, pass)
);
