-- Customers: one row each, traits as one JSON document. The typed columns the
-- rules run on live in memory and are rebuilt from this table at start.
CREATE TABLE customers (
    id         TEXT PRIMARY KEY,
    traits     JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
