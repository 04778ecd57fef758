-- quarantine_summary: quarantined rows per day of ingestion, business, channel and reason (values in reasons masked).
WITH source AS (
    SELECT
        CAST(ingested_at AS DATE) AS day,
        -- a row no business is named on (a number no business claims, a row read before schema version 13
        -- whose file brought no event) counts under one label, so the key stays not null
        coalesce(business, '(not attributed)') AS business,
        channel,
        -- "unreadable date '01/11/2026'" and "unreadable date 'Nov 1'" are one reason
        regexp_replace(reason, '''[^'']*''', '''…''', 'g') AS reason
    FROM quarantine
)

SELECT day, business, channel, reason, count(*) AS rows
FROM source
GROUP BY ALL
ORDER BY day, business, channel, rows DESC, reason
