-- Schema version 2: runs.failure_reason: why a run failed, recorded by the run itself.
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).

ALTER TABLE runs ADD COLUMN IF NOT EXISTS failure_reason VARCHAR;
