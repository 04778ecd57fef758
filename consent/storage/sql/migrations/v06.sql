-- Schema version 6: consent_status and consent_violations without a primary-key index.
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).

CREATE TABLE consent_status__v6 (
    phone_e164 VARCHAR, purpose VARCHAR NOT NULL, status VARCHAR NOT NULL, sendable BOOLEAN NOT NULL,
    status_since TIMESTAMP, consent_method VARCHAR, consent_at TIMESTAMP, channel VARCHAR,
    notice_version VARCHAR, event_id VARCHAR, source_file VARCHAR, source_line BIGINT,
    opted_out_at TIMESTAMP, opt_out_channel VARCHAR, opt_out_event_id VARCHAR,
    decided_by_event_id VARCHAR, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL,
    whatsapp_user_id VARCHAR);
INSERT INTO consent_status__v6 BY NAME SELECT * FROM consent_status;
DROP TABLE consent_status;
ALTER TABLE consent_status__v6 RENAME TO consent_status;
CREATE TABLE consent_violations__v6 (
    event_id VARCHAR NOT NULL, rule VARCHAR NOT NULL, severity VARCHAR NOT NULL, refused BOOLEAN NOT NULL,
    phone_e164 VARCHAR, channel VARCHAR, event_type VARCHAR, purposes VARCHAR[], occurred_at TIMESTAMP,
    source_file VARCHAR, source_line BIGINT, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL);
INSERT INTO consent_violations__v6 BY NAME SELECT * FROM consent_violations;
DROP TABLE consent_violations;
ALTER TABLE consent_violations__v6 RENAME TO consent_violations;
