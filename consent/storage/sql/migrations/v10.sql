-- Schema version 10: suppression_list.national_hash.
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).

ALTER TABLE suppression_list ADD COLUMN IF NOT EXISTS national_hash VARCHAR;
