-- Schema version 9: quarantine, skipped_items and message_statuses without a primary-key index.
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).

-- Each table recreated without its primary key, every row kept.
CREATE TABLE quarantine__v9 (
    quarantine_id VARCHAR NOT NULL,
    channel VARCHAR NOT NULL, source_file VARCHAR NOT NULL, source_line BIGINT, source_pointer VARCHAR,
    file_hash VARCHAR NOT NULL, raw_row VARCHAR, reason VARCHAR NOT NULL, ingested_at TIMESTAMP NOT NULL,
    run_id VARCHAR NOT NULL);
INSERT INTO quarantine__v9 BY NAME SELECT * FROM quarantine;
DROP TABLE quarantine;
ALTER TABLE quarantine__v9 RENAME TO quarantine;
CREATE TABLE skipped_items__v9 (
    skipped_id VARCHAR NOT NULL,
    channel VARCHAR NOT NULL, source_file VARCHAR NOT NULL, source_line BIGINT, source_pointer VARCHAR,
    file_hash VARCHAR NOT NULL, raw_row VARCHAR, reason VARCHAR NOT NULL, ingested_at TIMESTAMP NOT NULL,
    run_id VARCHAR NOT NULL);
INSERT INTO skipped_items__v9 BY NAME SELECT * FROM skipped_items;
DROP TABLE skipped_items;
ALTER TABLE skipped_items__v9 RENAME TO skipped_items;
CREATE TABLE message_statuses__v9 (
    message_id VARCHAR NOT NULL, status VARCHAR NOT NULL, status_at TIMESTAMP, recipient_e164 VARCHAR,
    pricing_category VARCHAR, error_codes BIGINT[], source_file VARCHAR NOT NULL, source_line BIGINT,
    source_pointer VARCHAR, ingested_at TIMESTAMP NOT NULL, run_id VARCHAR NOT NULL, business VARCHAR,
    recipient_user_id VARCHAR);
INSERT INTO message_statuses__v9 BY NAME SELECT * FROM message_statuses;
DROP TABLE message_statuses;
ALTER TABLE message_statuses__v9 RENAME TO message_statuses;
