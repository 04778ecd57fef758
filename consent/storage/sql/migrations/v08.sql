-- Schema version 8: consent_status_history keeps the channels of its deciding and consent events.
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).

CREATE TABLE consent_status_history__v8 (
    phone_e164 VARCHAR, purpose VARCHAR NOT NULL, status VARCHAR NOT NULL, valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP, decided_by_event_id VARCHAR, consent_event_id VARCHAR, consent_method VARCHAR,
    consent_at TIMESTAMP, business VARCHAR NOT NULL, contact_id VARCHAR NOT NULL,
    decided_by_channel VARCHAR, consent_channel VARCHAR);
-- One channel per event id (the ledger holds each id once; grouped so a row is never doubled).
INSERT INTO consent_status_history__v8 BY NAME
    WITH channels AS (SELECT event_id, any_value(channel) AS channel FROM consent_events GROUP BY event_id)
    SELECT h.*, d.channel AS decided_by_channel, c.channel AS consent_channel
    FROM consent_status_history AS h
    LEFT JOIN channels AS d ON d.event_id = h.decided_by_event_id
    LEFT JOIN channels AS c ON c.event_id = h.consent_event_id;
DROP TABLE consent_status_history;
ALTER TABLE consent_status_history__v8 RENAME TO consent_status_history;
-- A run's copy of the rows it replaced has the old columns: the next run writes it again
-- (until then, marts are rebuilt whole).
DROP TABLE IF EXISTS stg_replaced_history;
