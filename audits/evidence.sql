-- evidence: every event and the current status of one number (any spelling), with lineage and the notice shown
-- args: NUMBER
WITH events AS (
    SELECT
        'event' AS kind,
        e.occurred_at AS happened_at,
        e.channel,
        e.event_type AS what,
        array_to_string(e.purposes, ';') AS purposes,
        e.consent_method,
        e.notice_version,
        n.notice_text,
        e.evidence_ref,
        e.source_file,
        e.source_line,
        e.event_id
    FROM consent_events AS e
    LEFT JOIN consent_notices AS n USING (notice_version)
    WHERE e.phone_e164 = $phone
),

statuses AS (
    SELECT
        'status' AS kind,
        s.status_since AS happened_at,
        s.channel,
        s.status AS what,
        s.purpose AS purposes,
        s.consent_method,
        s.notice_version,
        n.notice_text,
        NULL AS evidence_ref,
        s.source_file,
        s.source_line,
        s.event_id
    FROM consent_status AS s
    LEFT JOIN consent_notices AS n USING (notice_version)
    WHERE s.phone_e164 = $phone
)

SELECT * FROM events
UNION ALL
SELECT * FROM statuses
ORDER BY kind, happened_at, event_id
