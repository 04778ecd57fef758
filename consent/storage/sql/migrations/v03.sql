-- Schema version 3: who consented to whom: business and WhatsApp user IDs; statuses keyed by business, contact and
-- purpose; identifier_links (existing rows belong to business 'default').
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).

-- New tables first: DuckDB cannot create an index after updates in the same transaction.
CREATE TABLE IF NOT EXISTS identifier_links (
    link_id VARCHAR NOT NULL, business VARCHAR NOT NULL, phone_e164 VARCHAR, whatsapp_user_id VARCHAR,
    parent_user_id VARCHAR, previous_user_id VARCHAR, linked_at TIMESTAMP NOT NULL, event_id VARCHAR,
    channel VARCHAR NOT NULL, source_file VARCHAR NOT NULL, source_line BIGINT, source_pointer VARCHAR,
    ingested_at TIMESTAMP NOT NULL, run_id VARCHAR NOT NULL, PRIMARY KEY (link_id));
-- The status key changes; status, history and violations are rebuilt with every row.
CREATE TABLE consent_status__v3 (
    phone_e164 VARCHAR, purpose VARCHAR NOT NULL, status VARCHAR NOT NULL, sendable BOOLEAN NOT NULL,
    status_since TIMESTAMP, consent_method VARCHAR, consent_at TIMESTAMP, channel VARCHAR,
    notice_version VARCHAR, event_id VARCHAR, source_file VARCHAR, source_line BIGINT,
    opted_out_at TIMESTAMP, opt_out_channel VARCHAR, opt_out_event_id VARCHAR,
    decided_by_event_id VARCHAR, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL,
    whatsapp_user_id VARCHAR, PRIMARY KEY (business, contact_id, purpose));
CREATE TABLE consent_status_history__v3 (
    phone_e164 VARCHAR, purpose VARCHAR NOT NULL, status VARCHAR NOT NULL, valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP, decided_by_event_id VARCHAR, consent_event_id VARCHAR, consent_method VARCHAR,
    consent_at TIMESTAMP, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL);
CREATE TABLE consent_violations__v3 (
    event_id VARCHAR NOT NULL, rule VARCHAR NOT NULL, severity VARCHAR NOT NULL, refused BOOLEAN NOT NULL,
    phone_e164 VARCHAR, channel VARCHAR, event_type VARCHAR, purposes VARCHAR[], occurred_at TIMESTAMP,
    source_file VARCHAR, source_line BIGINT, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL,
    PRIMARY KEY (event_id, rule));
INSERT INTO consent_status__v3 BY NAME SELECT *, 'default' AS business, phone_e164 AS contact_id FROM consent_status;
INSERT INTO consent_status_history__v3 BY NAME SELECT *, 'default' AS business, phone_e164 AS contact_id FROM consent_status_history;
INSERT INTO consent_violations__v3 BY NAME SELECT *, 'default' AS business, phone_e164 AS contact_id FROM consent_violations;
-- A NOT NULL business column; the rows already there belong to the one business, 'default'.
ALTER TABLE consent_events ADD COLUMN business VARCHAR DEFAULT 'default';
ALTER TABLE consent_events ALTER COLUMN business DROP DEFAULT;
ALTER TABLE consent_events ALTER COLUMN business SET NOT NULL;
ALTER TABLE consent_events ADD COLUMN whatsapp_user_id VARCHAR;
ALTER TABLE consent_events ADD COLUMN parent_user_id VARCHAR;
ALTER TABLE consent_events ADD COLUMN changed_to VARCHAR;
ALTER TABLE consent_events ALTER COLUMN phone_e164 DROP NOT NULL;
DROP TABLE consent_status;
ALTER TABLE consent_status__v3 RENAME TO consent_status;
DROP TABLE consent_status_history;
ALTER TABLE consent_status_history__v3 RENAME TO consent_status_history;
DROP TABLE consent_violations;
ALTER TABLE consent_violations__v3 RENAME TO consent_violations;
ALTER TABLE message_statuses ADD COLUMN business VARCHAR DEFAULT 'default';
ALTER TABLE message_statuses ALTER COLUMN business DROP DEFAULT;
ALTER TABLE message_statuses ADD COLUMN recipient_user_id VARCHAR;
ALTER TABLE message_statuses ALTER COLUMN recipient_e164 DROP NOT NULL;
ALTER TABLE consent_notices ADD COLUMN business VARCHAR;
