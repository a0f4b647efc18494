-- Customers: one row each, traits as one JSON document. The typed columns the
-- rules run on live in memory and are rebuilt from this table at start.
-- WITHOUT ROWID: the id is the only B-tree (half the writes of a rowid table
-- with a text primary key). Traits are written by Cohort as valid JSON, so no
-- per-row json_valid() check is paid on import.
CREATE TABLE customers (
    id         TEXT PRIMARY KEY,
    traits     TEXT NOT NULL DEFAULT '{}',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
) WITHOUT ROWID;
