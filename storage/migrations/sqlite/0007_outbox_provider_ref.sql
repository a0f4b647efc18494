-- Provider ids are looked up (KeysByProviderID) only for delivery events
-- that name a message by its provider id alone, and only a channel with a
-- webhook reports delivery events. provider_ref is the provider id where
-- such a lookup can happen and '' elsewhere, and the index moves to it:
-- indexing every provider id cost a random index insert per message sent,
-- about 100 index pages written per batch of 100, for ids no event would
-- ever look up. provider_id keeps every id for reports and explain.
ALTER TABLE outbox ADD COLUMN provider_ref TEXT NOT NULL DEFAULT '';
UPDATE outbox SET provider_ref = provider_id WHERE provider_id <> '';
DROP INDEX outbox_provider;
CREATE INDEX outbox_provider ON outbox (provider_ref) WHERE provider_ref <> '';
