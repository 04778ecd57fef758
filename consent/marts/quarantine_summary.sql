-- quarantine_summary: quarantined rows per day of ingestion, channel and reason (values in reasons masked).
WITH source AS (
    SELECT
        CAST(ingested_at AS DATE) AS day,
        channel,
        -- "unreadable date '01/11/2026'" and "unreadable date 'Nov 1'" are one reason
        regexp_replace(reason, '''[^'']*''', '''…''', 'g') AS reason
    FROM quarantine
)

SELECT day, channel, reason, count(*) AS rows
FROM source
GROUP BY ALL
ORDER BY day, channel, rows DESC, reason
