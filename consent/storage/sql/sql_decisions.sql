-- sql_decisions: consent_violations, consent_status_history and consent_status rows of the contacts
-- sql_decidable.sql chose, as the state machine writes them (consent.domain.reconcile._reconcile_sorted).

-- Violations: every rule an opt-in breaks, and a notice that does not state a purpose of a granted
-- opt-in; recorded on the contact that gave the event, never on one that inherits it.
CREATE OR REPLACE TEMP TABLE sql_violation_rows AS
WITH broken AS (
    SELECT *, unnest(broken || CASE WHEN passes AND uncovered THEN ['notice_does_not_cover_purpose'] ELSE [] END)
        AS rule_name
    FROM sql_events
    WHERE is_opt_in AND NOT inherited
)
SELECT
    b.event_id, r.rule, r.severity, r.refuses AS refused,
    CASE WHEN starts_with(b.contact_id, '+') THEN b.contact_id END AS phone_e164,
    b.channel, b.event_type, b.purposes, b.occurred_at, b.source_file, b.source_line, b.business, b.contact_id
FROM broken AS b
JOIN sql_rules AS r ON r.rule = b.rule_name;

-- Moves, per contact and purpose in time order: a valid opt-in grants (evidence: itself), an
-- opt-out suppresses, and a resume restores the last grant, only right after an opt-out that a
-- grant preceded (ConsentStateMachine._on_resume).
CREATE OR REPLACE TEMP TABLE sql_moves AS
WITH candidates AS (
    SELECT *, unnest(granted) AS purpose, 'grant' AS kind FROM sql_events WHERE passes
    UNION ALL BY NAME
    SELECT *, unnest(targets) AS purpose, 'opt_out' AS kind FROM sql_events WHERE event_type = 'opt_out'
    UNION ALL BY NAME
    SELECT *, unnest(targets) AS purpose, 'resume' AS kind FROM sql_events WHERE event_type = 'resume'
), ordered AS (
    SELECT
        *,
        row_number() OVER moves AS seq,
        lag(kind) OVER moves AS previous_kind,
        last_value(CASE WHEN kind = 'grant' THEN {
            'event_id': event_id, 'channel': channel, 'consent_method': consent_method, 'consent_at': occurred_at,
            'notice_version': notice_version, 'source_file': source_file, 'source_line': source_line
        } END IGNORE NULLS) OVER moves AS last_grant
    FROM candidates
    WINDOW moves AS (PARTITION BY contact_key, purpose ORDER BY effective_at, apply_rank, event_id)
), effective AS (
    -- a resume right after an opt-out restores; one after another resume finds the contact opted in
    SELECT * FROM ordered
    WHERE kind <> 'resume' OR (previous_kind = 'opt_out' AND last_grant IS NOT NULL)
)
SELECT
    contact_key, business, contact_id, purpose, seq,
    CASE kind WHEN 'opt_out' THEN 'opted_out' ELSE 'opted_in' END AS status,
    effective_at AS since,
    lead(effective_at) OVER (PARTITION BY contact_key, purpose ORDER BY seq) AS until,
    event_id AS decided_by_event_id,
    channel AS decided_by_channel,
    CASE kind WHEN 'grant' THEN {
            'event_id': event_id, 'channel': channel, 'consent_method': consent_method, 'consent_at': occurred_at,
            'notice_version': notice_version, 'source_file': source_file, 'source_line': source_line
        } WHEN 'resume' THEN last_grant END AS evidence,
    source_file AS decided_by_source_file,
    source_line AS decided_by_source_line
FROM effective;

CREATE OR REPLACE TEMP TABLE sql_history_rows AS
SELECT
    CASE WHEN starts_with(contact_id, '+') THEN contact_id END AS phone_e164,
    purpose, status, since AS valid_from, until AS valid_to, decided_by_event_id,
    evidence.event_id AS consent_event_id, evidence.consent_method AS consent_method,
    evidence.consent_at AS consent_at, business, contact_id, decided_by_channel,
    evidence.channel AS consent_channel
FROM sql_moves;

-- Status: each contact's last move per purpose of the policy (`no_consent` without any), with the
-- consent evidence, else the deciding event; the BSUID the contact last used, for a number.
CREATE OR REPLACE TEMP TABLE sql_status_rows AS
WITH contacts AS (
    SELECT
        contact_key, any_value(business) AS business, any_value(contact_id) AS contact_id,
        arg_max(whatsapp_user_id, (effective_at, whatsapp_user_id))
            FILTER (WHERE coalesce(whatsapp_user_id, '') <> '' AND NOT inherited) AS last_user_id
    FROM sql_events
    GROUP BY contact_key
), latest AS (
    SELECT * FROM sql_moves WHERE until IS NULL  -- the last move (every move has a time)
)
SELECT
    CASE WHEN starts_with(c.contact_id, '+') THEN c.contact_id END AS phone_e164,
    p.purpose,
    coalesce(m.status, 'no_consent') AS status,
    coalesce(m.status = 'opted_in', false) AS sendable,
    m.since AS status_since,
    m.evidence.consent_method AS consent_method,
    m.evidence.consent_at AS consent_at,
    CASE WHEN m.evidence IS NOT NULL THEN m.evidence.channel ELSE m.decided_by_channel END AS channel,
    m.evidence.notice_version AS notice_version,
    CASE WHEN m.evidence IS NOT NULL THEN m.evidence.event_id ELSE m.decided_by_event_id END AS event_id,
    CASE WHEN m.evidence IS NOT NULL THEN m.evidence.source_file ELSE m.decided_by_source_file END AS source_file,
    CASE WHEN m.evidence IS NOT NULL THEN m.evidence.source_line ELSE m.decided_by_source_line END AS source_line,
    CASE WHEN m.status = 'opted_out' THEN m.since END AS opted_out_at,
    CASE WHEN m.status = 'opted_out' THEN m.decided_by_channel END AS opt_out_channel,
    CASE WHEN m.status = 'opted_out' THEN m.decided_by_event_id END AS opt_out_event_id,
    m.decided_by_event_id,
    c.business, c.contact_id,
    CASE WHEN starts_with(c.contact_id, '+') THEN c.last_user_id ELSE c.contact_id END AS whatsapp_user_id
FROM contacts AS c
CROSS JOIN (SELECT unnest(policy_purposes) AS purpose FROM sql_policy) AS p
LEFT JOIN latest AS m ON m.contact_key = c.contact_key AND m.purpose = p.purpose;
