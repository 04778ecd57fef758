-- violations_summary: opt-ins refused or warned about, per day of the opt-in, business, channel, rule and severity.
-- Whole: from every violation. Incremental (`mart_scoped`, consent/storage/sql/mart_scope.sql): by difference, the
-- mart as it was (`violations_summary_before`) plus the violations the run wrote less those it replaced
-- (`mart_violations_delta`, a sign each).
WITH violations AS (
    SELECT 1 AS sign, * FROM consent_violations
    WHERE NOT getvariable('mart_scoped')
    UNION ALL
    SELECT * FROM mart_violations_delta
    WHERE getvariable('mart_scoped')
),

counted AS (
    SELECT
        CAST(coalesce(v.occurred_at, e.ingested_at) AS DATE) AS day,
        v.business,
        v.channel,
        v.rule,
        v.severity,
        sum(v.sign) AS opt_ins,
        coalesce(sum(v.sign) FILTER (WHERE v.refused), 0) AS refused
    FROM violations AS v
    -- the ledger is read only for opt-ins without a date of their own (their day is the day they were
    -- ingested): when none lacks one, the ledger is not scanned at all
    LEFT JOIN (SELECT event_id, ingested_at FROM consent_events
               WHERE event_id IN (SELECT event_id FROM violations WHERE occurred_at IS NULL)) AS e USING (event_id)
    GROUP BY ALL
),

totals AS (
    SELECT * FROM counted
    WHERE NOT getvariable('mart_scoped')
    UNION ALL
    -- the mart as it was plus the changes
    SELECT day, business, channel, rule, severity, sum(opt_ins), sum(refused)
    FROM (SELECT * FROM violations_summary_before UNION ALL SELECT * FROM counted)
    WHERE getvariable('mart_scoped')
    GROUP BY ALL
)

-- (sums are HUGEINT in DuckDB: the counts stay BIGINT)
SELECT day, business, channel, rule, severity, opt_ins::BIGINT AS opt_ins, refused::BIGINT AS refused
FROM totals
WHERE opt_ins > 0
ORDER BY day, business, channel, rule
