-- range_history: the complete history of the touched contacts from $low to $high (contact keys),
-- in the columns the state machine reads (consent.reconcile.INPUT_COLUMNS).
SELECT
    contact_key, business, contact_id, inherited, whatsapp_user_id, changed_to,
    phone_e164, event_id, channel, event_type, purposes, occurred_at, ingested_at, consent_method,
    notice_version, checkbox_pre_ticked, bundled_with_terms, acquisition_source, source_file, source_line
FROM contact_events
WHERE contact_key BETWEEN $low AND $high
  AND contact_key IN (SELECT contact_key FROM stg_touched);
