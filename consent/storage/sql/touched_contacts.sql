-- touched_contacts: the contacts (business + contact id, as `contact_key`) this run re-decides
-- (every contact on a full run). Kept as a staging table: the status check validates the rows
-- this run decided.
CREATE OR REPLACE TABLE staging.stg_touched AS
SELECT contact_key FROM contact_events WHERE $full
-- new events, wherever they apply (a new number, every business for an all-businesses opt-out)
UNION SELECT contact_key FROM contact_events WHERE event_id IN (SELECT event_id FROM staging.stg_consent_events)
-- contacts time alone may have changed (time_alone.sql: expiring requests and consents, dated rules)
UNION SELECT business || chr(31) || contact_id FROM time_alone
-- a notice registered now changes how earlier opt-ins that name it are judged
UNION SELECT contact_key FROM contact_events
      WHERE notice_version IN (SELECT notice_version FROM consent_notices WHERE run_id = $run_id)
-- links learnt now: events kept against a BSUID move to its number, and the BSUID-only contact
-- that held them is decided again (its rows go)
UNION SELECT contact_key FROM contact_events
      WHERE phone_e164 IS NULL AND (
          whatsapp_user_id IN (SELECT whatsapp_user_id FROM staging.stg_identifier_links
                               UNION SELECT previous_user_id FROM staging.stg_identifier_links)
          OR parent_user_id IN (SELECT parent_user_id FROM staging.stg_identifier_links))
UNION SELECT business || chr(31) || contact_id FROM consent_status
      WHERE phone_e164 IS NULL AND contact_id IN (
          SELECT whatsapp_user_id FROM staging.stg_identifier_links UNION SELECT previous_user_id FROM staging.stg_identifier_links
          UNION SELECT parent_user_id FROM staging.stg_identifier_links)
-- ... and every number those BSUIDs were linked to before: the latest link decides where a BSUID-only
-- opt-in goes, so a new link can take it from another number
UNION SELECT business || chr(31) || phone_e164 FROM scoped_links
      WHERE phone_e164 IS NOT NULL AND whatsapp_user_id IN (
          SELECT whatsapp_user_id FROM staging.stg_identifier_links UNION SELECT previous_user_id FROM staging.stg_identifier_links);
