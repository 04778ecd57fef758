-- mart_scope: what an incremental run changed, for the marts it rebuilds in part (consent/marts):
-- the first day to rebuild, the messages and the contacts. Staging tables (`staging.stg_mart_*`), computed
-- once per run by the first mart that needs them (`stg_mart_scope` names the run); read after `publish`, from the run's staging tables (`stg_touched`: the contacts
-- decided again; `stg_replaced_history`, `stg_replaced_violations`: the rows they replaced;
-- `stg_decided_history`, `stg_decided_violations`: the rows the run wrote for them).
-- consent_daily, consent_coverage and violations_summary are built by difference from the changed
-- history rows, statuses and violations (`stg_mart_history_delta`, `stg_mart_status_delta`,
-- `stg_mart_violations_delta`), business_contacts from the touched contacts' statuses as written and
-- as replaced (`stg_decided_status`, `stg_replaced_status`); send_audit and opt_out_timeliness read
-- the history and the messages of the contacts in scope (`stg_mart_history`, `stg_mart_sends`).

-- Messages whose send-audit row may change: new statuses, a recipient BSUID linked now (or changed),
-- or a recipient decided again (by number, by BSUID, or as the number its BSUID is linked to).
CREATE OR REPLACE TABLE staging.stg_mart_messages AS
SELECT message_id FROM message_statuses WHERE run_id = $run_id
UNION SELECT m.message_id FROM message_statuses AS m
      WHERE m.recipient_user_id IN (SELECT whatsapp_user_id FROM staging.stg_identifier_links
                                    UNION SELECT previous_user_id FROM staging.stg_identifier_links)
UNION SELECT m.message_id FROM message_statuses AS m
      WHERE m.business || chr(31) || m.recipient_e164 IN (SELECT contact_key FROM staging.stg_touched)
         OR m.business || chr(31) || m.recipient_user_id IN (SELECT contact_key FROM staging.stg_touched)
UNION SELECT m.message_id FROM message_statuses AS m
      JOIN identifier_links AS l ON l.business = m.business AND l.whatsapp_user_id = m.recipient_user_id
      WHERE l.business || chr(31) || l.phone_e164 IN (SELECT contact_key FROM staging.stg_touched);

-- Contacts whose opt-out timeliness rows may change: decided again, the recipient of a changed
-- message before this run or after it, or a number a BSUID of this run's links pointed to before
-- (its messages may move away). A changed message's recipient, then or now, is one of the numbers
-- or BSUIDs its status rows name, or the number such a BSUID is linked to: all of them are in
-- scope, so a message that moves to another recipient (its earliest status is new) leaves the
-- contact it was counted for rebuilt too.
CREATE OR REPLACE TEMP TABLE mart_changed_statuses AS
SELECT business, recipient_e164, recipient_user_id FROM message_statuses
WHERE message_id IN (SELECT message_id FROM staging.stg_mart_messages);

CREATE OR REPLACE TABLE staging.stg_mart_contacts AS
SELECT string_split(contact_key, chr(31))[1] AS business, string_split(contact_key, chr(31))[2] AS contact_id
FROM staging.stg_touched
UNION SELECT business, recipient_e164 FROM mart_changed_statuses WHERE recipient_e164 IS NOT NULL
UNION SELECT business, recipient_user_id FROM mart_changed_statuses WHERE recipient_user_id IS NOT NULL
UNION SELECT m.business, l.phone FROM mart_changed_statuses AS m
      JOIN linked_numbers() AS l ON l.business = m.business AND l.whatsapp_user_id = m.recipient_user_id
UNION SELECT business, phone_e164 FROM identifier_links
      WHERE phone_e164 IS NOT NULL
        AND whatsapp_user_id IN (SELECT whatsapp_user_id FROM staging.stg_identifier_links
                                 UNION SELECT previous_user_id FROM staging.stg_identifier_links);

-- What send_audit and opt_out_timeliness read on an incremental build (the `mart_history` and
-- `mart_sends` views), read once for both: the history of the contacts in scope (the touched
-- ones as the run wrote them, the others from the table), in the columns those marts name (a scan
-- of 7 of the table's 13 columns costs a third of a whole one) ...
CREATE OR REPLACE TABLE staging.stg_mart_history AS
SELECT business, contact_id, purpose, status, valid_from, valid_to, decided_by_event_id FROM staging.stg_decided_history
UNION ALL
SELECT h.business, h.contact_id, h.purpose, h.status, h.valid_from, h.valid_to, h.decided_by_event_id
FROM consent_status_history AS h
SEMI JOIN (SELECT business, contact_id FROM staging.stg_mart_contacts
           WHERE business || chr(31) || contact_id NOT IN (SELECT contact_key FROM staging.stg_touched)) AS c
       ON c.business = h.business AND c.contact_id = h.contact_id;

-- ... and the messages sent to them (every changed message is: its recipient is in scope). A
-- message's recipient is one of its statuses' number or BSUID, or a number that BSUID is linked
-- to: the statuses of every message with such a status are grouped, then kept by recipient.
CREATE OR REPLACE TEMP TABLE mart_contact_statuses AS
SELECT * FROM message_statuses WHERE message_id IN (
    SELECT m.message_id FROM message_statuses AS m
    SEMI JOIN staging.stg_mart_contacts AS c ON c.business = m.business AND c.contact_id = m.recipient_e164
    UNION
    SELECT m.message_id FROM message_statuses AS m
    SEMI JOIN staging.stg_mart_contacts AS c ON c.business = m.business AND c.contact_id = m.recipient_user_id
    UNION
    SELECT m.message_id FROM message_statuses AS m
    JOIN identifier_links AS l ON l.business = m.business AND l.whatsapp_user_id = m.recipient_user_id
    SEMI JOIN staging.stg_mart_contacts AS c ON c.business = l.business AND c.contact_id = l.phone_e164
);

CREATE OR REPLACE TABLE staging.stg_mart_sends AS
SELECT s.* FROM sends_from('mart_contact_statuses') AS s
SEMI JOIN staging.stg_mart_contacts AS c ON c.business = s.business AND c.contact_id = s.recipient;

-- The touched contacts' violations the run wrote (+1) and those it replaced (-1), where they differ.
CREATE OR REPLACE TABLE staging.stg_mart_violations_delta AS
SELECT 1 AS sign, * FROM (SELECT * FROM staging.stg_decided_violations EXCEPT ALL SELECT * FROM staging.stg_replaced_violations)
UNION ALL
SELECT -1, * FROM (SELECT * FROM staging.stg_replaced_violations EXCEPT ALL SELECT * FROM staging.stg_decided_violations);

-- The first day whose figures may change. The touched contacts' history and violations were
-- decided again from their whole histories, mostly into the same rows: only rows that differ from
-- the replaced ones count. A row whose only change is its end (`valid_to`) changes the days from
-- the earlier end; any other row, the days from its start. Then: the day of the previous run's
-- clock (new days appear), and this run's quarantine day.
CREATE OR REPLACE TABLE staging.stg_mart_since AS
WITH current_history AS (
    -- the touched contacts' rows as the run wrote them (consent.run.scope.select_touched_contacts)
    SELECT * FROM staging.stg_decided_history
),
only_new AS (SELECT * FROM current_history EXCEPT ALL SELECT * FROM staging.stg_replaced_history),
only_old AS (SELECT * FROM staging.stg_replaced_history EXCEPT ALL SELECT * FROM current_history),
ended AS (
    -- the same transition, ended at another time (or ended now, or no longer ended)
    SELECT n.business, n.contact_id, n.purpose, n.valid_from, least(n.valid_to, o.valid_to) AS first_change
    FROM only_new AS n
    JOIN only_old AS o
      ON o.business = n.business AND o.contact_id = n.contact_id AND o.purpose = n.purpose
     AND o.valid_from = n.valid_from AND o.status = n.status
     AND o.decided_by_event_id IS NOT DISTINCT FROM n.decided_by_event_id
     AND o.consent_event_id IS NOT DISTINCT FROM n.consent_event_id
     AND o.consent_method IS NOT DISTINCT FROM n.consent_method
     AND o.consent_at IS NOT DISTINCT FROM n.consent_at
     AND o.phone_e164 IS NOT DISTINCT FROM n.phone_e164
),
changed_history AS (
    SELECT CASE WHEN e.first_change IS NOT NULL THEN e.first_change ELSE c.valid_from END AS first_change
    FROM (SELECT * FROM only_new UNION ALL SELECT * FROM only_old) AS c
    LEFT JOIN ended AS e
      ON e.business = c.business AND e.contact_id = c.contact_id AND e.purpose = c.purpose
     AND e.valid_from = c.valid_from
),
changed_violations AS (
    SELECT * EXCLUDE (sign) FROM staging.stg_mart_violations_delta
)
SELECT least(
    (SELECT min(first_change) FROM changed_history)::DATE,
    -- (the ledger is read only for violations without a date of their own)
    (SELECT min(coalesce(v.occurred_at, e.ingested_at))
     FROM changed_violations AS v
     LEFT JOIN (SELECT event_id, ingested_at FROM consent_events
                WHERE event_id IN (SELECT event_id FROM changed_violations WHERE occurred_at IS NULL)) AS e
       USING (event_id))::DATE,
    (SELECT max(as_of) FROM runs WHERE run_id <> $run_id)::DATE,
    (SELECT min(ingested_at) FROM quarantine WHERE run_id = $run_id)::DATE,
    (SELECT as_of FROM staging.stg_run)::DATE
) AS day,
-- the clock day of the run that built the marts last (an incremental build needs that run to be the
-- previous published one): consent_daily holds every day up to it
(SELECT as_of FROM runs WHERE published_at IS NOT NULL AND run_id <> $run_id
 ORDER BY published_at DESC LIMIT 1)::DATE AS previous_day;

CREATE OR REPLACE TABLE staging.stg_mart_scope AS SELECT $run_id AS run_id;

-- The touched contacts' history rows the run wrote (+1) and those it replaced (-1), where they differ.
CREATE OR REPLACE TABLE staging.stg_mart_history_delta AS
SELECT 1 AS sign, * FROM (SELECT * FROM staging.stg_decided_history EXCEPT ALL SELECT * FROM staging.stg_replaced_history)
UNION ALL
SELECT -1, * FROM (SELECT * FROM staging.stg_replaced_history EXCEPT ALL SELECT * FROM staging.stg_decided_history);

-- The touched contacts' statuses the run wrote (+1) and those it replaced (-1), where they differ.
CREATE OR REPLACE TABLE staging.stg_mart_status_delta AS
SELECT 1 AS sign, * FROM (SELECT * FROM staging.stg_decided_status EXCEPT ALL SELECT * FROM staging.stg_replaced_status)
UNION ALL
SELECT -1, * FROM (SELECT * FROM staging.stg_replaced_status EXCEPT ALL SELECT * FROM staging.stg_decided_status);
