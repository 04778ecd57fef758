-- suppress_events: the `suppressed` staged events (suppressed_events.sql) become skipped items
-- without their raw row ($reason), their files' counts follow, and they leave the staged run.
INSERT INTO skipped_items BY NAME
SELECT 'erased-' || event_id AS skipped_id, channel, source_file, source_line, source_pointer, file_hash,
       NULL AS raw_row, $reason AS reason, ingested_at, run_id, business
FROM suppressed
-- one row per id the table does not hold (it has no primary-key index: schema version 9)
WHERE 'erased-' || event_id NOT IN (SELECT skipped_id FROM skipped_items)
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY source_file, source_line, source_pointer) = 1;

UPDATE staging.stg_source_files f SET events = f.events - n.k, skipped = f.skipped + n.k
FROM (SELECT source_file, file_hash, count(*) AS k FROM suppressed GROUP BY ALL) n
WHERE f.source_file = n.source_file AND f.file_hash = n.file_hash;

DELETE FROM staging.stg_consent_events WHERE event_id IN (SELECT event_id FROM suppressed);
