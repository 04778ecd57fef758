-- run_channels: what this run read, per channel (the run summary's table).
WITH files AS (
    SELECT
        channel,
        count(*) AS files_seen,
        count(*) FILTER (WHERE state = 'new') AS files_read,
        sum(rows_read) AS rows_read,
        sum(events) AS events,
        sum(quarantined) AS quarantined,
        sum(skipped) AS skipped
    FROM staging.stg_source_files
    GROUP BY channel
),

new_events AS (
    SELECT channel, count(*) AS new_events FROM consent_events WHERE run_id = $run_id GROUP BY channel
)

SELECT
    coalesce(f.channel, n.channel) AS channel,
    f.files_seen, f.files_read, f.rows_read, f.events, f.quarantined, f.skipped, n.new_events
FROM files AS f
FULL JOIN new_events AS n USING (channel)
ORDER BY channel;
