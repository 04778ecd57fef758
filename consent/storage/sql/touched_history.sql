-- touched_history: the complete histories of the contacts to decide (`decide_scope`: the touched
-- contacts, or one bucket of them), in the columns the state machine reads
-- (consent.domain.reconcile.INPUT_COLUMNS), materialised once (the contact_events view is evaluated once,
-- not once per range; DuckDB spills it to its temp directory if it does not fit). The contacts SQL
-- decides (consent.run.decide_sql) are taken out of it; the state machine decides the rest.
CREATE OR REPLACE TEMP TABLE touched_history AS
SELECT
    contact_key, business, contact_id, inherited, whatsapp_user_id, changed_to,
    phone_e164, event_id, channel, event_type, purposes, occurred_at, ingested_at, consent_method,
    notice_version, checkbox_pre_ticked, bundled_with_terms, acquisition_source, source_file, source_line
FROM contact_events
WHERE contact_key IN (SELECT contact_key FROM decide_scope)
ORDER BY contact_key;
