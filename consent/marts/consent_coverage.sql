-- consent_coverage: share of opted_in contacts with complete evidence (method, date, notice, lineage), per business, channel and purpose.
-- Whole: from every status. Incremental (`mart_scoped`, consent/storage/sql/mart_scope.sql): by difference, the
-- mart as it was (`consent_coverage_before`) plus the statuses the run wrote less those it replaced
-- (`mart_status_delta`, a sign each).
WITH statuses AS (
    SELECT 1 AS sign, * FROM consent_status
    WHERE NOT getvariable('mart_scoped')
    UNION ALL
    SELECT * FROM mart_status_delta
    WHERE getvariable('mart_scoped')
),

opted_in AS (
    SELECT
        sign,
        business,
        channel,
        purpose,
        consent_method IS NOT NULL AS has_method,
        consent_at IS NOT NULL AS has_date,
        notice_version IS NOT NULL AS has_notice,
        (event_id IS NOT NULL AND source_file IS NOT NULL AND source_line IS NOT NULL) AS has_lineage
    FROM statuses
    WHERE status = 'opted_in'
),

counted AS (
    SELECT
        business,
        channel,
        purpose,
        sum(sign) AS opted_in_contacts,
        coalesce(sum(sign) FILTER (WHERE has_method), 0) AS with_method,
        coalesce(sum(sign) FILTER (WHERE has_date), 0) AS with_date,
        coalesce(sum(sign) FILTER (WHERE has_notice), 0) AS with_notice,
        coalesce(sum(sign) FILTER (WHERE has_lineage), 0) AS with_lineage,
        coalesce(sum(sign) FILTER (WHERE has_method AND has_date AND has_notice AND has_lineage), 0) AS complete
    FROM opted_in
    GROUP BY ALL
),

totals AS (
    SELECT * FROM counted
    WHERE NOT getvariable('mart_scoped')
    UNION ALL
    -- the mart as it was plus the changes
    SELECT business, channel, purpose, sum(opted_in_contacts), sum(with_method), sum(with_date),
           sum(with_notice), sum(with_lineage), sum(complete)
    FROM (
        SELECT business, channel, purpose, opted_in_contacts, with_method, with_date, with_notice, with_lineage, complete
        FROM consent_coverage_before
        UNION ALL
        SELECT * FROM counted
    )
    WHERE getvariable('mart_scoped')
    GROUP BY ALL
),

final AS (
    SELECT *, round(complete / opted_in_contacts, 4) AS complete_share
    FROM (
        -- (sums are HUGEINT in DuckDB: the counts stay BIGINT)
        SELECT business, channel, purpose, COLUMNS(* EXCLUDE (business, channel, purpose))::BIGINT
        FROM totals
    )
    WHERE opted_in_contacts > 0
)

SELECT * FROM final ORDER BY business, channel, purpose
