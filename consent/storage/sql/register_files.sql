-- register_files: the file registry and the fingerprints learn this run's files; a changed file
-- (same name, new content) records how many events of its earlier versions it no longer holds.
-- A file not read whole (`unread`) is not registered, and a file changed too recently to trust its
-- size and times keeps no fingerprint: the next run reads it again.

-- MERGE, not ON CONFLICT / INSERT OR REPLACE: a DuckLake warehouse has no primary keys.
MERGE INTO source_files USING (
    SELECT
        channel, source_file, file_hash, size_bytes,
        $run_id AS first_seen_run, $run_id AS last_seen_run,
        rows_read, events, quarantined, skipped, notes
    FROM staging.stg_source_files
    WHERE state NOT IN ('unsupported', 'unread')
) AS seen
ON (source_files.channel = seen.channel AND source_files.source_file = seen.source_file
    AND source_files.file_hash = seen.file_hash)
WHEN MATCHED THEN UPDATE SET last_seen_run = seen.last_seen_run
WHEN NOT MATCHED THEN INSERT BY NAME;

MERGE INTO file_fingerprints USING (
    SELECT source_file, size_bytes, mtime_ns, file_hash FROM staging.stg_source_files
    WHERE state NOT IN ('unsupported', 'unread') AND mtime_ns IS NOT NULL AND file_hash <> ''
) AS seen
ON (file_fingerprints.source_file = seen.source_file AND file_fingerprints.size_bytes = seen.size_bytes
    AND file_fingerprints.mtime_ns = seen.mtime_ns)
WHEN MATCHED THEN UPDATE SET file_hash = seen.file_hash
WHEN NOT MATCHED THEN INSERT BY NAME;

UPDATE source_files AS f SET new_events = n.new_events
FROM (
    SELECT source_file, count(*) AS new_events FROM consent_events WHERE run_id = $run_id GROUP BY source_file
) AS n
WHERE f.source_file = n.source_file AND f.first_seen_run = $run_id;

UPDATE source_files AS f
SET events_no_longer_in_file = r.removed,
    notes = list_append(f.notes, 'content changed: ' || r.removed || ' earlier events no longer in the file')
FROM (
    SELECT s.source_file, count(e.event_id) AS removed
    FROM staging.stg_source_files AS s
    JOIN consent_events AS e
        ON e.source_file = s.source_file AND e.channel = s.channel AND e.file_hash <> s.file_hash
    WHERE s.state = 'new'
      AND e.event_id NOT IN (SELECT event_id FROM staging.stg_consent_events WHERE source_file = s.source_file)
    GROUP BY s.source_file
) AS r
WHERE f.source_file = r.source_file AND f.first_seen_run = $run_id;
