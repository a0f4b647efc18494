-- segment_members without `since` (nothing read it; when a customer entered
-- is in segment_changes): a full pass's changes land on random pages of this
-- table, and rows of about half the size mean about half the pages to read,
-- modify and log. SQLite cannot drop a primary-key table's column in place,
-- so the table is rebuilt.
CREATE TABLE segment_members_lean (
    segment     TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    PRIMARY KEY (segment, customer_id)
) WITHOUT ROWID;
INSERT INTO segment_members_lean (segment, customer_id)
    SELECT segment, customer_id FROM segment_members ORDER BY segment, customer_id;
DROP TABLE segment_members;
ALTER TABLE segment_members_lean RENAME TO segment_members;
