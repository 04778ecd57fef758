-- consent_coverage: share of opted_in contacts with complete evidence (method, date, notice, lineage), per business, channel and purpose.
WITH opted_in AS (
    SELECT
        business,
        channel,
        purpose,
        consent_method IS NOT NULL AS has_method,
        consent_at IS NOT NULL AS has_date,
        notice_version IS NOT NULL AS has_notice,
        (event_id IS NOT NULL AND source_file IS NOT NULL AND source_line IS NOT NULL) AS has_lineage
    FROM consent_status
    WHERE status = 'opted_in'
),

final AS (
    SELECT
        business,
        channel,
        purpose,
        count(*) AS opted_in_contacts,
        count(*) FILTER (WHERE has_method) AS with_method,
        count(*) FILTER (WHERE has_date) AS with_date,
        count(*) FILTER (WHERE has_notice) AS with_notice,
        count(*) FILTER (WHERE has_lineage) AS with_lineage,
        count(*) FILTER (WHERE has_method AND has_date AND has_notice AND has_lineage) AS complete,
        round(count(*) FILTER (WHERE has_method AND has_date AND has_notice AND has_lineage) / count(*), 4) AS complete_share
    FROM opted_in
    GROUP BY ALL
)

SELECT * FROM final ORDER BY business, channel, purpose
