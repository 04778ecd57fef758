-- evidence: every event, status and identifier link of one person (a number in any spelling, or a BSUID), with lineage and the notice shown
-- args: NUMBER
-- The person's identifiers: the one given, and the numbers and BSUIDs linked to it (two steps).
WITH first_step AS (
    SELECT DISTINCT unnest([phone_e164, whatsapp_user_id, parent_user_id, previous_user_id]) AS id
    FROM identifier_links
    WHERE $phone IN (phone_e164, whatsapp_user_id, parent_user_id, previous_user_id)
),

ids AS (
    SELECT $phone AS id
    UNION SELECT id FROM first_step WHERE id IS NOT NULL
    UNION
    SELECT unnest([l.phone_e164, l.whatsapp_user_id, l.parent_user_id, l.previous_user_id])
    FROM identifier_links AS l JOIN first_step AS f
      ON f.id IN (l.phone_e164, l.whatsapp_user_id, l.parent_user_id, l.previous_user_id)
),

links AS (
    SELECT
        'link' AS kind,
        l.business,
        l.linked_at AS happened_at,
        l.channel,
        'linked ' || concat_ws(' <-> ', CASE WHEN l.phone_e164 IS NOT NULL THEN 'number' END,
                               CASE WHEN l.whatsapp_user_id IS NOT NULL THEN 'BSUID' END,
                               CASE WHEN l.parent_user_id IS NOT NULL THEN 'parent BSUID' END,
                               CASE WHEN l.previous_user_id IS NOT NULL THEN 'previous BSUID' END) AS what,
        NULL AS purposes,
        NULL AS consent_method,
        NULL AS notice_version,
        NULL AS notice_text,
        concat_ws(' ', l.phone_e164, l.whatsapp_user_id, l.parent_user_id, l.previous_user_id) AS evidence_ref,
        l.source_file,
        l.source_line,
        l.event_id
    FROM identifier_links AS l
    WHERE list_has_any([l.phone_e164, l.whatsapp_user_id, l.parent_user_id, l.previous_user_id], (SELECT list(id) FROM ids))
),

events AS (
    SELECT
        'event' AS kind,
        e.business,
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
    WHERE e.phone_e164 IN (SELECT id FROM ids) OR e.whatsapp_user_id IN (SELECT id FROM ids)
       OR e.parent_user_id IN (SELECT id FROM ids)
),

statuses AS (
    SELECT
        'status' AS kind,
        s.business,
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
    WHERE s.contact_id IN (SELECT id FROM ids)
)

SELECT * FROM events
UNION ALL
SELECT * FROM statuses
UNION ALL
SELECT * FROM links
ORDER BY kind, business, happened_at, event_id
