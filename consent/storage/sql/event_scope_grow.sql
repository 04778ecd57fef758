-- event_scope_grow: one step of event_scope.sql: the identifiers the events and links in scope
-- bring in. The last statement returns how many were new (0: the scope is complete).
-- Only the columns contact_events.sql and the state machine read (consent.domain.reconcile.LEDGER_COLUMNS
-- and the identifiers): reading every column of a 5M-event ledger took 0.61 s, these 0.41 s.
CREATE OR REPLACE TEMP TABLE scope_event_rows AS
SELECT
    phone_e164, event_id, channel, event_type, purposes, occurred_at, ingested_at, consent_method,
    notice_version, checkbox_pre_ticked, bundled_with_terms, acquisition_source, source_file, source_line,
    business, whatsapp_user_id, parent_user_id, changed_to
FROM consent_events
WHERE phone_e164 IN (SELECT id FROM scope_ids) OR whatsapp_user_id IN (SELECT id FROM scope_ids)
   OR parent_user_id IN (SELECT id FROM scope_ids) OR changed_to IN (SELECT id FROM scope_ids);

CREATE OR REPLACE TEMP TABLE scope_link_rows AS
SELECT * FROM identifier_links
WHERE phone_e164 IN (SELECT id FROM scope_ids) OR whatsapp_user_id IN (SELECT id FROM scope_ids)
   OR parent_user_id IN (SELECT id FROM scope_ids) OR previous_user_id IN (SELECT id FROM scope_ids);

CREATE OR REPLACE TEMP TABLE scope_new_ids AS
SELECT DISTINCT id FROM (
    SELECT unnest([phone_e164, whatsapp_user_id, parent_user_id, changed_to]) AS id FROM scope_event_rows
    UNION ALL SELECT unnest([phone_e164, whatsapp_user_id, parent_user_id, previous_user_id]) FROM scope_link_rows
) WHERE id IS NOT NULL AND id NOT IN (SELECT id FROM scope_ids);

INSERT INTO scope_ids SELECT id FROM scope_new_ids;

SELECT count(*) FROM scope_new_ids;
