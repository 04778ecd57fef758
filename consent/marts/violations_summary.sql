-- violations_summary: opt-ins refused or warned about, per day of the opt-in, business, channel, rule and severity.
SELECT
    CAST(coalesce(v.occurred_at, e.ingested_at) AS DATE) AS day,
    v.business,
    v.channel,
    v.rule,
    v.severity,
    count(*) AS opt_ins,
    count(*) FILTER (WHERE v.refused) AS refused
FROM consent_violations AS v
-- the ledger is read only for opt-ins without a date of their own (their day is the day they were
-- ingested): when none lacks one, the ledger is not scanned at all
LEFT JOIN (SELECT event_id, ingested_at FROM consent_events
           WHERE event_id IN (SELECT event_id FROM consent_violations WHERE occurred_at IS NULL)) AS e USING (event_id)
-- on an incremental build (consent/marts/__init__.py), rows dated before the first rebuilt day are
-- left out before the join: their day is not rebuilt
WHERE NOT getvariable('mart_scoped') OR v.occurred_at IS NULL OR v.occurred_at >= getvariable('mart_since')
GROUP BY ALL
ORDER BY day, v.business, v.channel, v.rule
