-- register_links: the identifier links this run saw join `identifier_links`. One row per link (the
-- identifiers seen together); its lineage is the earliest sighting, whatever order runs came in.
-- MERGE, not ON CONFLICT: a DuckLake warehouse has no primary keys.
MERGE INTO identifier_links USING (
    SELECT * FROM staging.stg_identifier_links
    QUALIFY row_number() OVER (PARTITION BY link_id ORDER BY linked_at, source_file, source_line, source_pointer) = 1
) AS seen
ON (identifier_links.link_id = seen.link_id)
WHEN MATCHED AND seen.linked_at < identifier_links.linked_at THEN UPDATE SET
    linked_at = seen.linked_at, event_id = seen.event_id, channel = seen.channel,
    source_file = seen.source_file, source_line = seen.source_line,
    source_pointer = seen.source_pointer, ingested_at = seen.ingested_at, run_id = seen.run_id
WHEN NOT MATCHED THEN INSERT BY NAME;
