-- touched_contacts: the contacts this run re-decides (every contact on a full run). Kept as a
-- staging table: the status check validates the rows this run decided.
CREATE OR REPLACE TABLE stg_touched AS
SELECT phone_e164 FROM consent_events WHERE $full
-- new events
UNION SELECT phone_e164 FROM stg_consent_events
-- statuses that time alone changes: a pending request may expire, a consent may pass its validity
UNION SELECT phone_e164 FROM consent_status WHERE status = 'pending'
UNION SELECT phone_e164 FROM consent_status WHERE status = 'opted_in' AND $consent_expires
-- violations of time-dependent rules (the rule registry), e.g. a future date that is no longer future
UNION SELECT phone_e164 FROM consent_violations WHERE list_contains($time_dependent_rules, rule)
-- a notice registered now changes how earlier opt-ins that name it are judged
UNION SELECT phone_e164 FROM consent_events
      WHERE notice_version IN (SELECT notice_version FROM consent_notices WHERE run_id = $run_id);

-- Their derived rows are decided again.
DELETE FROM consent_status WHERE $full OR phone_e164 IN (SELECT phone_e164 FROM stg_touched);
DELETE FROM consent_violations WHERE $full OR phone_e164 IN (SELECT phone_e164 FROM stg_touched);
DELETE FROM consent_status_history WHERE $full OR phone_e164 IN (SELECT phone_e164 FROM stg_touched);
