-- event_scope: which ledger events and links an incremental run needs to decide its touched
-- contacts again (`scoped_events`, `scoped_links`, read by contact_events.sql), so a night's cost
-- follows the night, not the history. Seeds: every identifier (number, BSUID, parent BSUID, new
-- number of a change) of the new events and links, the contacts time alone may change
-- (time_alone.sql) and the events naming a notice registered now. Python then
-- grows the set (event_scope_grow.sql) until no event or link adds an identifier: every event of
-- a contact in scope is in scope, with every link and number change that could move events to it.
CREATE OR REPLACE TEMP TABLE scope_ids AS
SELECT DISTINCT id FROM (
    SELECT unnest([phone_e164, whatsapp_user_id, parent_user_id, changed_to]) AS id FROM staging.stg_consent_events
    UNION ALL SELECT unnest([phone_e164, whatsapp_user_id, parent_user_id, previous_user_id]) FROM staging.stg_identifier_links
    UNION ALL SELECT contact_id FROM time_alone
    UNION ALL SELECT unnest([phone_e164, whatsapp_user_id, parent_user_id, changed_to]) FROM consent_events
              WHERE notice_version IN (SELECT notice_version FROM consent_notices WHERE run_id = $run_id)
) WHERE id IS NOT NULL;
