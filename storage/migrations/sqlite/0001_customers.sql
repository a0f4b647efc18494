-- Customers: one row each, traits as one JSON document. The typed columns the
-- rules run on live in memory and are rebuilt from this table at start.
CREATE TABLE customers (
    id         TEXT PRIMARY KEY,
    traits     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(traits)),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
