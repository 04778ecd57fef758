-- notice_usage: opt-ins per business and notice version, and whether their notice is ok, missing, not in the registry, deficient or not valid at the opt-in.
WITH opt_ins AS (
    SELECT e.event_id, e.business, e.notice_version, e.channel
    FROM consent_events AS e
    WHERE e.event_type IN ('opt_in', 'opt_in_confirm')
),

-- The state machine judged validity (rule notice_not_valid_at_opt_in); the mart reads its verdict.
not_valid AS (
    SELECT DISTINCT event_id FROM consent_violations WHERE rule = 'notice_not_valid_at_opt_in'
),

judged AS (
    SELECT
        o.business,
        o.notice_version,
        o.channel,
        CASE
            WHEN o.notice_version IS NULL THEN 'missing'
            WHEN n.notice_version IS NULL THEN 'not in registry'
            WHEN NOT (n.names_business AND n.mentions_whatsapp AND n.says_how_to_opt_out) THEN 'deficient'
            WHEN v.event_id IS NOT NULL THEN 'not valid at opt-in'
            ELSE 'ok'
        END AS notice_state
    FROM opt_ins AS o
    LEFT JOIN consent_notices AS n USING (notice_version)
    LEFT JOIN not_valid AS v USING (event_id)
)

SELECT business, notice_version, channel, notice_state, count(*) AS opt_ins
FROM judged
GROUP BY ALL
ORDER BY business, notice_version NULLS FIRST, channel
