-- range_history: the complete ledger history of the touched contacts from $low to $high,
-- in the columns the state machine reads (consent.reconcile.INPUT_COLUMNS).
SELECT
    phone_e164, event_id, channel, event_type, purposes, occurred_at, ingested_at, consent_method,
    notice_version, checkbox_pre_ticked, bundled_with_terms, acquisition_source, source_file, source_line
FROM consent_events
WHERE phone_e164 BETWEEN $low AND $high
  AND phone_e164 IN (SELECT phone_e164 FROM stg_touched);
