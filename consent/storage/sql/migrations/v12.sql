-- Schema version 12: a run's scratch tables in a schema of their own.
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).
-- `main` keeps the published tables and the marts; the run's staging tables (`stg_*`) go to
-- `staging`. Which of them a warehouse holds depends on its last run (an incremental night keeps
-- copies a full one does not): `move_scratch_tables` moves each one there, with its rows.

CREATE SCHEMA IF NOT EXISTS staging;
