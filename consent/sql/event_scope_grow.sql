-- event_scope_grow: one step of event_scope.sql: the identifiers the events and links in scope
-- bring in. The last statement returns how many were new (0: the scope is complete).
CREATE OR REPLACE TEMP TABLE scope_event_rows AS
SELECT * FROM consent_events
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
