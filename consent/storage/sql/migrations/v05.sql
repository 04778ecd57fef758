-- Schema version 5: mart_builds; the ledger keeps unique event ids without a primary-key index.
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).

CREATE TABLE consent_events__v5 (
    event_id VARCHAR NOT NULL, channel VARCHAR NOT NULL, event_type VARCHAR NOT NULL, phone_raw VARCHAR,
    country_hint VARCHAR, phone_e164 VARCHAR, phone_region VARCHAR, phone_type VARCHAR,
    purposes VARCHAR[], occurred_at TIMESTAMP, consent_method VARCHAR, notice_version VARCHAR,
    checkbox_pre_ticked BOOLEAN, bundled_with_terms BOOLEAN, acquisition_source VARCHAR,
    evidence_ref VARCHAR, source_file VARCHAR NOT NULL, source_line BIGINT NOT NULL,
    source_pointer VARCHAR, file_hash VARCHAR NOT NULL, ingested_at TIMESTAMP NOT NULL,
    run_id VARCHAR NOT NULL, warnings VARCHAR[], business VARCHAR NOT NULL, whatsapp_user_id VARCHAR,
    parent_user_id VARCHAR, changed_to VARCHAR);
INSERT INTO consent_events__v5 BY NAME SELECT * FROM consent_events;
DROP TABLE consent_events;
ALTER TABLE consent_events__v5 RENAME TO consent_events;
CREATE TABLE IF NOT EXISTS mart_builds (
    mart VARCHAR NOT NULL, run_id VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL, mode VARCHAR NOT NULL,
    built_at TIMESTAMP NOT NULL, PRIMARY KEY (mart));
