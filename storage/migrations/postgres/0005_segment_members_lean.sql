-- segment_members without `since` (nothing read it; when a customer entered
-- is in segment_changes): narrower rows for the membership diffs every pass
-- writes, as on SQLite.
ALTER TABLE segment_members DROP COLUMN since;
