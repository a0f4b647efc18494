-- Leases in expiry order: the lease reaper runs every second and looks for
-- sending rows whose lease ended; without this index that is a scan of the
-- whole outbox, which grows with every message ever sent. Only sending rows
-- are in it (at most a batch per dispatcher worker), so it stays small.
CREATE INDEX outbox_leases ON outbox (lease_until_ms) WHERE state = 'sending';
